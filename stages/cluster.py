"""cluster@<encoder>: the cluster sizes of a k-means of the training split's features (no labels
needed) and a t-SNE map; with a labeled evaluation set also CHI / DBI with the true labels, k-means
NMI / ARI and paper 001's class geometry per group on the test features of the frozen encoder.

Usage: python stages/cluster.py <encoder>   (pretrain | distill)
Reads params: cluster, runtime, model.  Writes: metrics/cluster/<encoder>.json (the headline: CHI,
DBI), metrics/cluster/<encoder>_details.json, metrics/cluster/<encoder>_tsne.csv.
"""

import sys

from ltcl.headline import details_path
from ltcl.params import load_params
from ltcl.runtime import check_recorded_facts
from ltcl.pipeline import cluster
from ltcl.stage import run_stage

encoder = sys.argv[1] if len(sys.argv) > 1 else "pretrain"
OUTS = [f"metrics/cluster/{encoder}.json", f"metrics/cluster/{encoder}_tsne.csv"]
OUTS.append(str(details_path(OUTS[0])))  # written beside the headline by the library


def main() -> None:
    params = load_params()
    check_recorded_facts(params.runtime)  # data/runtime.json: the facts DVC ran this stage for
    cluster.run(params, f"data/models/{encoder}.pt", "data/lt", *OUTS[:2])


if __name__ == "__main__":
    run_stage(f"cluster@{encoder}", main, outputs=OUTS)

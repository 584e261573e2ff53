"""cluster@<encoder>: the cluster sizes of a k-means of the training split's features (no labels
needed) and a t-SNE map; with a labeled evaluation set also CHI / DBI with the true labels, k-means
NMI / ARI and paper 001's class geometry per group on the test features of the frozen encoder.

Usage: python stages/cluster.py <encoder>   (pretrain | distill)
Reads params: cluster, runtime, model.  Writes: metrics/cluster/<encoder>.json,
metrics/cluster/<encoder>_tsne.csv.
"""

import sys

from ltcl.params import load_params
from ltcl.pipeline import cluster
from ltcl.stage import run_stage

encoder = sys.argv[1] if len(sys.argv) > 1 else "pretrain"
OUTS = [f"metrics/cluster/{encoder}.json", f"metrics/cluster/{encoder}_tsne.csv"]


def main() -> None:
    cluster.run(load_params(), f"data/models/{encoder}.pt", "data/lt", *OUTS)


if __name__ == "__main__":
    run_stage(f"cluster@{encoder}", main, outputs=OUTS)

"""linear-probe@<encoder>: frozen-feature linear probes (full, few-shot, ...) and kNN.

Usage: python stages/linear_probe.py <encoder>   (encoder = pretrain | distill)
Reads params: probe, runtime, data.group_rule.  Writes: metrics/probe/<encoder>.json (the headline),
metrics/probe/<encoder>_details.json, metrics/probe/<encoder>_per_class.csv.
"""

import sys

from ltcl.headline import details_path
from ltcl.params import load_params
from ltcl.runtime import check_recorded_facts
from ltcl.pipeline import linear_probe
from ltcl.stage import run_stage

encoder = sys.argv[1] if len(sys.argv) > 1 else "pretrain"
OUTS = [f"metrics/probe/{encoder}.json", f"metrics/probe/{encoder}_per_class.csv"]
OUTS.append(str(details_path(OUTS[0])))  # written beside the headline by the library


def main() -> None:
    params = load_params()
    check_recorded_facts(params.runtime)  # data/runtime.json: the facts DVC ran this stage for
    linear_probe.run(params, f"data/models/{encoder}.pt", "data/lt", OUTS[0], OUTS[1])


if __name__ == "__main__":
    run_stage(f"linear-probe@{encoder}", main, outputs=OUTS)

"""linear-probe@<encoder>: frozen-feature linear probes (full, few-shot, ...) and kNN.

Usage: python stages/linear_probe.py <encoder>   (encoder = pretrain | distill)
Reads params: probe, runtime, data.group_rule.  Writes: metrics/probe/<encoder>.json,
metrics/probe/<encoder>_per_class.csv.
"""

import sys

from ltcl.params import load_params
from ltcl.pipeline import linear_probe
from ltcl.stage import run_stage

encoder = sys.argv[1] if len(sys.argv) > 1 else "pretrain"
OUTS = [f"metrics/probe/{encoder}.json", f"metrics/probe/{encoder}_per_class.csv"]


def main() -> None:
    linear_probe.run(load_params(), f"data/models/{encoder}.pt", "data/lt", OUTS[0], OUTS[1])


if __name__ == "__main__":
    run_stage(f"linear-probe@{encoder}", main, outputs=OUTS)

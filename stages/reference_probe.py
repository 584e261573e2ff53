"""reference-probe-<reference>: the reference rows of the probe tables (raw pixels, a randomly
initialised encoder of the same architecture), probed exactly as linear-probe@<encoder> probes f and g.

Usage: python stages/reference_probe.py <reference>   (reference = pixels | random)
Reads params: probe, runtime, data.group_rule; random also model and pretrain.seed.
Writes: metrics/probe/ref-<reference>.json (the headline), metrics/probe/ref-<reference>_details.json,
metrics/probe/ref-<reference>_per_class.csv.
"""

import sys

from ltcl.headline import details_path
from ltcl.params import load_params
from ltcl.runtime import check_recorded_facts
from ltcl.pipeline import reference_probe
from ltcl.stage import run_stage

reference = sys.argv[1] if len(sys.argv) > 1 else "pixels"
OUTS = [f"metrics/probe/ref-{reference}.json", f"metrics/probe/ref-{reference}_per_class.csv"]
OUTS.append(str(details_path(OUTS[0])))  # written beside the headline by the library


def main() -> None:
    params = load_params()
    check_recorded_facts(params.runtime)  # data/runtime.json: the facts DVC ran this stage for
    reference_probe.run(params, reference, "data/lt", OUTS[0], OUTS[1])


if __name__ == "__main__":
    run_stage(f"reference-probe-{reference}", main, outputs=OUTS)

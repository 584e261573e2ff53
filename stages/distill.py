"""distill: guided distillation of the final encoder g from the frozen f (paper 003 Sec. 3.2).

Reads params: distill, augment, runtime.  Writes: data/models/distill.pt, metrics/distill.json,
dvclive/distill/.  With distill.enabled: false, g = f (Table 5 "w/o KD").
"""

from ltcl.params import load_params
from ltcl.stage import run_stage
from ltcl.train.distill import run_distill_stage

OUTS = ["data/models/distill.pt", "metrics/distill.json"]
RESUME = "data/checkpoints/distill.pt"  # persistent: a killed run resumes from it


def main() -> None:
    run_distill_stage(load_params(), "data/lt", "data/models/pretrain.pt", *OUTS, live_dir="dvclive/distill",
                      resume_path=RESUME)


if __name__ == "__main__":
    run_stage("distill", main, outputs=OUTS)

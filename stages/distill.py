"""distill: guided distillation of the final encoder g from the frozen f (paper 003 Sec. 3.2).

Reads params: ltcl.params.STAGE_PARAMS["distill"] (augment, model, data.group_rule, distill's common
keys and distill.<method>) and runtime.  Writes: data/models/distill.pt (+ .sha256),
metrics/distill.json, dvclive/distill/.  With distill.enabled: false, g = f (Table 5 "w/o KD").
"""

from ltcl.collectives import is_main, shutdown
from ltcl.launch import maybe_torchrun
from ltcl.params import load_params
from ltcl.runtime import check_recorded_facts
from ltcl.pipeline import distill
from ltcl.stage import run_stage
from ltcl.train.resume import resume_file

OUTS = ["data/models/distill.pt", "metrics/distill.json", "data/models/distill.pt.sha256"]
TEACHER = "data/models/pretrain.pt"
RESUME = resume_file("distill")  # not a DVC output: a killed run resumes from it, a finished one removes it


def main() -> dict:
    params = load_params()
    check_recorded_facts(params.runtime)  # data/runtime.json: the facts DVC ran this stage for
    return distill.run(params, "data/lt", TEACHER, *OUTS[:2], live_dir="dvclive/distill",
                       resume_path=RESUME)  # its timings: the run record's


if __name__ == "__main__":
    # runtime.nproc > 1: rerun this script under torchrun (DDP) and exit with its status
    maybe_torchrun(__file__, OUTS, "distill")
    # under torchrun rank 0 alone writes (and on failure removes) the outputs; a failing rank
    # exits and torchrun stops the others
    run_stage("distill", main, outputs=OUTS if is_main() else [], resume=RESUME if is_main() else None,
              record=is_main())
    shutdown()

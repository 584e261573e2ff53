"""pretrain: contrastive pre-training of the guiding encoder f (paper 003 Sec. 3.1.2).

With an OOD strategy it continues from the ood-sampling warm-up, trains on ID + selected
images and re-samples every ood.interval epochs.
Reads params: ltcl.params.STAGE_PARAMS["pretrain"] (model, augment, data.group_rule, pretrain's common
keys and pretrain.<method>, ood's sampling keys and ood.<strategy>) and runtime.  Writes: data/models/pretrain.pt,
data/models/pretrain.pt.sha256, metrics/pretrain.json, data/ood/pretrain_diagnostics.npz (the
pictures of the OOD updates), dvclive/pretrain/ (curves).
"""

from ltcl.collectives import is_main, shutdown
from ltcl.launch import maybe_torchrun
from ltcl.params import load_params
from ltcl.runtime import check_recorded_facts
from ltcl.pipeline import pretrain
from ltcl.stage import run_stage
from ltcl.train.resume import resume_file

OUTS = ["data/models/pretrain.pt", "metrics/pretrain.json", "data/models/pretrain.pt.sha256",
        "data/ood/pretrain_diagnostics.npz"]
RESUME = resume_file("pretrain")  # not a DVC output: a killed run resumes from it, a finished one removes it


def main() -> dict:
    params = load_params()
    check_recorded_facts(params.runtime)  # data/runtime.json: the facts DVC ran this stage for
    return pretrain.run(params, lt_dir="data/lt", ckpt_path=OUTS[0], metrics_path=OUTS[1],
                        diagnostics_path=OUTS[3], live_dir="dvclive/pretrain", ood_dir="data/ood",
                        resume_path=RESUME)  # its timings: the run record's


if __name__ == "__main__":
    # runtime.nproc > 1: rerun this script under torchrun (DDP) and exit with its status
    maybe_torchrun(__file__, OUTS, "pretrain")
    # under torchrun rank 0 alone writes (and on failure removes) the outputs; a failing rank
    # exits and torchrun stops the others
    run_stage("pretrain", main, outputs=OUTS if is_main() else [], resume=RESUME if is_main() else None,
              record=is_main())
    shutdown()

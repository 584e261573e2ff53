"""pretrain: contrastive pre-training of the guiding encoder f (paper 003 Sec. 3.1.2).

With an OOD strategy it continues from the ood-sampling warm-up, trains on ID + selected
images and re-samples every ood.interval epochs.
Reads params: model, runtime, augment, pretrain, ood.  Writes: data/models/pretrain.pt,
data/models/pretrain.pt.sha256, metrics/pretrain.json, data/ood/pretrain_diagnostics.npz (the
pictures of the OOD updates), dvclive/pretrain/ (curves), data/checkpoints/pretrain.pt.
"""

from ltcl.collectives import is_main, shutdown
from ltcl.launch import maybe_torchrun
from ltcl.params import load_params
from ltcl.pipeline import pretrain
from ltcl.stage import run_stage

OUTS = ["data/models/pretrain.pt", "metrics/pretrain.json", "data/models/pretrain.pt.sha256",
        "data/ood/pretrain_diagnostics.npz"]
RESUME = "data/checkpoints/pretrain.pt"  # persistent: a killed run resumes from it


def main() -> None:
    pretrain.run(load_params(), lt_dir="data/lt", ckpt_path=OUTS[0], metrics_path=OUTS[1],
                 diagnostics_path=OUTS[3], live_dir="dvclive/pretrain", ood_dir="data/ood", resume_path=RESUME)


if __name__ == "__main__":
    # runtime.nproc > 1: rerun this script under torchrun (DDP) and exit with its status
    maybe_torchrun(__file__, OUTS, "pretrain")
    # under torchrun rank 0 alone writes (and on failure removes) the outputs; a failing rank
    # exits and torchrun stops the others
    run_stage("pretrain", main, outputs=OUTS if is_main() else [])
    shutdown()

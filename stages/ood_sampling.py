"""ood-sampling: warm-up on ID data, then the first OOD sampling update (paper 003 Sec. 3.1.1).

Reads params: ood, model, runtime, augment, pretrain.  Writes: data/ood/warmup.pt,
data/ood/selection.npz, metrics/ood.json, data/ood/diagnostics.npz (the update's pictures),
dvclive/ood-warmup/, data/checkpoints/ood-warmup.pt.
"""

from ltcl.params import load_params
from ltcl.pipeline import ood_sampling
from ltcl.stage import run_stage

OUTS = ["data/ood/warmup.pt", "data/ood/selection.npz", "metrics/ood.json", "data/ood/diagnostics.npz"]
RESUME = "data/checkpoints/ood-warmup.pt"  # persistent: a killed warm-up resumes from it


def main() -> None:
    ood_sampling.run(load_params(), "data/lt", "data/ood/pool.npy", *OUTS, live_dir="dvclive/ood-warmup",
                     resume_path=RESUME)


if __name__ == "__main__":
    run_stage("ood-sampling", main, outputs=OUTS)

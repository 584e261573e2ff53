"""ood-sampling: warm-up on ID data, then the first OOD sampling update (paper 003 Sec. 3.1.1).

Reads params: ltcl.params.STAGE_PARAMS["ood-sampling"] (model, augment, ood's sampling keys and
ood.<strategy>, the warm-up's pretrain keys) and runtime.  Writes: data/ood/warmup.pt,
data/ood/selection.npz, metrics/ood.json (the headline: the budget), metrics/ood_details.json,
data/ood/diagnostics.npz (the update's pictures), dvclive/ood-warmup/.
"""

from ltcl.headline import details_path
from ltcl.params import load_params
from ltcl.runtime import check_recorded_facts
from ltcl.pipeline import ood_sampling
from ltcl.stage import run_stage
from ltcl.train.resume import resume_file

OUTS = ["data/ood/warmup.pt", "data/ood/selection.npz", "metrics/ood.json", "data/ood/diagnostics.npz"]
OUTS.append(str(details_path(OUTS[2])))  # written beside the headline by the library
RESUME = resume_file("ood-warmup")  # not a DVC output: a killed run resumes from it, a finished one removes it


def main() -> dict:
    params = load_params()
    check_recorded_facts(params.runtime)  # data/runtime.json: the facts DVC ran this stage for
    return ood_sampling.run(params, "data/lt", "data/ood/pool.npy", *OUTS[:4], live_dir="dvclive/ood-warmup",
                            resume_path=RESUME)  # its timings: the run record's


if __name__ == "__main__":
    run_stage("ood-sampling", main, outputs=OUTS, resume=RESUME)

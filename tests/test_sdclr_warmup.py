"""SDCLR with OOD images (issue 23): the pruned branch's BatchNorms trained in the warm-up travel
in data/ood/warmup.pt and pretrain continues with them, as the released code's one run does
(VITA-Group/SDCLR train_simCLR.py trains one model throughout), instead of fresh copies of the
dense BatchNorms."""

from __future__ import annotations

import torch

from conftest import copy_project
from ltcl.io import load_checkpoint


def test_pretrain_continues_with_the_warmups_pruned_branch_norms(lt_project, tmp_path, monkeypatch):
    import ltcl.pipeline.pretrain as pretrain_mod

    p = copy_project(lt_project, tmp_path / "p", {"ood": {"strategy": "kdup"},
                                                   "pretrain": {"method": "simclr", "pruned_branch": True,
                                                                "epochs": 3}})
    p.stage("ood_sampling.py")
    warm = load_checkpoint(p.path("data/ood/warmup.pt"))
    saved = warm["pruned_norms"]
    assert saved and any(k.endswith("running_mean") for k in saved)
    # the pruned branch trained apart: its norms are not the dense ones (which a fresh copy would be)
    dense = {k: v for k, v in warm["model"].items()}
    seen = {}
    real = pretrain_mod.run_session

    def spy(method, *args, **kwargs):
        norms = method.pruned_norms
        seen["norms"] = {k: v.detach().clone() for k, v in norms.state_dict().items()}
        seen["dense"] = {f"{name}.{k}": dense[f"{name}.{k}"] for name in norms.bn_names
                         for k in ("weight", "bias", "running_mean", "running_var")}
        seen["names"] = list(norms.bn_names)
        return real(method, *args, **kwargs)

    monkeypatch.setattr(pretrain_mod, "run_session", spy)
    p.stage("pretrain.py")
    assert seen["norms"].keys() == saved.keys()
    for k, v in saved.items():
        assert torch.equal(seen["norms"][k], v), k
    # ... and they differ from the dense BatchNorms a rebuild would have copied
    diff = max(float((saved[f"norms.{i}.{k}"] - seen["dense"][f"{name}.{k}"]).abs().max())
               for i, name in enumerate(seen["names"]) for k in ("running_mean", "running_var"))
    assert diff > 1e-3

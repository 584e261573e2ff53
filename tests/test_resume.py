"""Resumable training (issue 7): a pre-training run killed with SIGKILL and rerun ends with the
same weights, bit for bit, as an uninterrupted run; a checkpoint made with other params is
ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import copy_project, stage_env


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _ckpt_epoch(path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # not written yet, or being replaced
        return -1


@pytest.mark.parametrize("variant", [
    {"ood": {"strategy": "kdup", "interval": 2}, "pretrain": {"method": "psd"}},
    {"ood": {"strategy": "none"}, "pretrain": {"method": "gloco-proco"}},
    # MAK's protocol (a fresh encoder on ID + its one selection, rebuilt from selection.npz on resume) under
    # BCL's memory and generator, with GH's moving average and prior (L_GH from epoch 4) and its two-stage lr
    {"ood": {"strategy": "mak", "mak": {"views": 2, "rebatch": 1, "batch": 64, "clusters": 4}},
     "pretrain": {"method": "bcl", "lr_schedule": "two-stage",
                  "gh": {"enabled": True, "target_dim": 8, "ramp_epochs": 2, "prior_every": 2}}},
])
def test_sigkill_then_resume_matches_uninterrupted(lt_project, tmp_path, variant):
    """The reference run and the resumed run in this process, the killed run in its own."""
    proj = copy_project(lt_project, tmp_path / "p", {
        **variant, "pretrain": {**variant["pretrain"], "epochs": 9, "checkpoint_every": 1}, "runtime": {"threads": 1}})
    proj.stage("ood_sampling.py")  # make-lt-dataset and ood-pool: done in lt_project
    proj.stage("pretrain.py")
    reference = _weights(proj.path("data/models/pretrain.pt"))
    ck = proj.path("data/checkpoints/pretrain.pt")
    assert not ck.exists()  # spent once the outputs are written: the stage removed it
    proj.path("data/models/pretrain.pt").unlink()

    proc = subprocess.Popen([sys.executable, "stages/pretrain.py"], cwd=proj.root, env=stage_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _ckpt_epoch(ck) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _ckpt_epoch(ck)
    assert 4 <= killed_at < 9 and not proj.path("data/models/pretrain.pt").exists()

    out = proj.stage("pretrain.py")
    assert f"resuming from data/checkpoints/pretrain.pt after epoch {killed_at}" in out.stderr
    resumed = _weights(proj.path("data/models/pretrain.pt"))
    assert reference.keys() == resumed.keys()
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k
    assert not ck.exists()


def _kept_checkpoint(built_project, tmp_path, monkeypatch):
    """A copy of built_project whose pretrain ran again keeping its resume state (as a run killed
    after its last checkpoint would leave it)."""
    proj = copy_project(built_project, tmp_path / "p")
    assert proj.params()["pretrain"]["epochs"] == 2 and proj.params()["pretrain"]["checkpoint_every"] == 1
    assert not proj.path("data/checkpoints/pretrain.pt").exists()
    monkeypatch.setenv("LTCL_KEEP_CHECKPOINTS", "1")
    proj.stage("pretrain.py")
    monkeypatch.delenv("LTCL_KEEP_CHECKPOINTS")
    assert _ckpt_epoch(proj.path("data/checkpoints/pretrain.pt")) == 2
    return proj


def test_checkpoint_of_other_params_is_ignored(built_project, tmp_path, monkeypatch):
    # built_project: make-lt-dataset, ood-sampling, pretrain with epochs 2, checkpoint_every 1
    proj = _kept_checkpoint(built_project, tmp_path, monkeypatch)
    proj.set_params({"pretrain": {"lr": 0.1}})
    out = proj.stage("pretrain.py")
    assert "made with other params or inputs; starting from scratch" in out.stderr
    assert not proj.path("data/checkpoints/pretrain.pt").exists()
    # a stage that trains nothing writes no resume state (it is no DVC output any more)
    proj.set_params({"distill": {"enabled": False}})
    proj.stage("distill.py")
    assert not proj.path("data/checkpoints/distill.pt").exists()


def test_rerun_after_the_last_checkpoint_rewrites_outputs_and_curves(built_project, tmp_path, monkeypatch):
    """DVC removes a stage's outputs (model, curves) before rerunning it; a checkpoint that is
    already at the last epoch resumes without training and still writes the same weights and
    every epoch's curve."""
    import shutil

    proj = _kept_checkpoint(built_project, tmp_path, monkeypatch)
    reference = _weights(proj.path("data/models/pretrain.pt"))
    shutil.rmtree(proj.path("dvclive/pretrain"))
    proj.path("data/models/pretrain.pt").unlink()
    out = proj.stage("pretrain.py")
    assert "resuming from data/checkpoints/pretrain.pt after epoch 2" in out.stderr
    loss = proj.path("dvclive/pretrain/plots/metrics/loss.tsv").read_text().splitlines()
    assert len(loss) == 1 + 2  # header + both epochs
    resumed = _weights(proj.path("data/models/pretrain.pt"))
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)

"""Issue 7, "Upstream data integrity": every stage checks its inputs against the hashes the
stage that made them recorded (data/lt/manifest.json, data/ood/pool.json, <model>.pt.sha256)
and refuses a changed file with a message naming it, exit code 2, and none of its outputs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from conftest import Project, copy_project, fake_encoder, refused, stage_inproc


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def proj(lt_project, tmp_path) -> Project:
    """A private copy of conftest's ``lt_project``: make-lt-dataset and ood-pool done on the tiny
    params with ood.strategy kdup."""
    return copy_project(lt_project, tmp_path / "p")


def test_stages_record_hashes(kdup_project):
    """ood-pool writes pool.json, pretrain and distill a sha256sum-style sidecar per model."""
    p = kdup_project
    man = json.loads(p.path("data/ood/pool.json").read_text())
    assert man["kind"] == "ltcl-ood-pool" and man["file"] == "pool.npy"
    assert man["sha256"] == sha256(p.path("data/ood/pool.npy"))
    assert man["shape"] == [300, 8, 8, 1] and man["dtype"] == "uint8"
    assert man["params"]["source"] == "bundled" and man["params"]["pool_size"] == 300
    for name in ("pretrain.pt", "distill.pt"):
        side = p.path(f"data/models/{name}.sha256").read_text()
        assert side == f"{sha256(p.path('data/models/' + name))}  {name}\n"
    if shutil.which("sha256sum"):  # checkable by hand
        subprocess.run(["sha256sum", "-c", "--quiet", "pretrain.pt.sha256", "distill.pt.sha256"],
                       cwd=p.path("data/models"), check=True)


def test_tampered_split_refused(proj):
    path = proj.path("data/lt/train_y.npy")
    y = np.load(path)
    y[0] = (y[0] + 1) % 10  # one label changed
    np.save(path, y)
    proc = stage_inproc(proj, "pretrain.py")
    refused(proc, "hash mismatch for data/lt/train_y.npy", "dvc repro -f make-lt-dataset",
            absent=("data/models/pretrain.pt", "data/models/pretrain.pt.sha256", "metrics/pretrain.json"), proj=proj)


@pytest.mark.parametrize("change", ["one byte", "another pool"])
def test_tampered_pool_refused(proj, change):
    path = proj.path("data/ood/pool.npy")
    if change == "one byte":
        blob = bytearray(path.read_bytes())
        blob[-1] ^= 0xFF
        path.write_bytes(bytes(blob))
        needle = "hash mismatch for pool file data/ood/pool.npy: its manifest data/ood/pool.json has sha256"
    else:
        np.save(path, np.zeros((400, 8, 8, 1), np.uint8))
        needle = "pool file data/ood/pool.npy holds uint8 [400, 8, 8, 1] but its manifest data/ood/pool.json says uint8 [300, 8, 8, 1]"
    proc = stage_inproc(proj, "ood_sampling.py")
    refused(proc, needle, "dvc repro -f ood-pool",
            absent=("data/ood/warmup.pt", "data/ood/selection.npz", "metrics/ood.json"), proj=proj)


@pytest.mark.parametrize("script", ["distill.py", "linear_probe.py"])
def test_tampered_checkpoint_refused(proj, script):
    fake_encoder(proj)
    path = proj.path("data/models/pretrain.pt")
    ck = torch.load(path, weights_only=True)
    first = next(iter(ck["model"]))
    ck["model"][first] = ck["model"][first] + 1.0  # replaced weights, still a valid checkpoint
    torch.save(ck, path)
    proc = stage_inproc(proj, script, *(["pretrain"] if script == "linear_probe.py" else []))
    outs = (("data/models/distill.pt", "data/models/distill.pt.sha256", "metrics/distill.json")
            if script == "distill.py" else ("metrics/probe/pretrain.json", "metrics/probe/pretrain_per_class.csv"))
    refused(proc, "hash mismatch for data/models/pretrain.pt: data/models/pretrain.pt.sha256 has sha256",
            "dvc repro -f pretrain", absent=outs, proj=proj)


def test_checkpoint_without_sidecar_still_loads(tmp_path):
    """The sidecar is checked when present: a checkpoint from elsewhere (no sidecar) loads."""
    from ltcl.io import sha256_sidecar
    from ltcl.models.checkpoint import build_from_spec, encoder_spec, load_encoder, save_encoder
    from ltcl.params import ModelParams

    spec = encoder_spec(ModelParams(backbone="resnet8", proj_hidden=16, proj_dim=8), 1, 8, [0.5], [0.25])
    save_encoder(tmp_path / "f.pt", build_from_spec(spec), spec)
    assert sha256_sidecar(tmp_path / "f.pt").is_file()
    sha256_sidecar(tmp_path / "f.pt").unlink()
    _, got, _ = load_encoder(tmp_path / "f.pt")
    assert got == spec

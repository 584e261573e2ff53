"""The DVC contract: a full `dvc repro` on tiny params, a no-op second repro, and a probe
parameter experiment that reruns only linear-probe and report."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO, make_project


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("dvc"), git=True)
    shutil.copytree(REPO / "src", proj.root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-qm", "init")
    return proj


def test_repro_then_noop_then_probe_experiment(dvc_project):
    p = dvc_project
    first = p.dvc("repro")
    for stage in ("make-lt-dataset", "ood-pool", "ood-sampling", "pretrain", "distill", "linear-probe@pretrain",
                  "linear-probe@distill", "cluster@pretrain", "cluster@distill", "report"):
        assert f"Running stage '{stage}'" in first.stdout
    assert p.path("report/index.html").exists()
    p.run("git", "add", "-A")
    p.run("git", "commit", "-qm", "baseline run")

    again = p.dvc("repro")
    assert "Running stage" not in again.stdout and "up to date" in again.stdout

    before = json.loads(p.path("metrics/probe/pretrain.json").read_text())
    exp = p.dvc("exp", "run", "-S", "probe.lr=0.05", "-S", "probe.feature_norm=l2")
    assert ran_stages(exp) == {"linear-probe@pretrain", "linear-probe@distill", "report"}
    after = json.loads(p.path("metrics/probe/pretrain.json").read_text())
    assert after != before
    diff = p.dvc("metrics", "diff", "--json")
    changed = json.loads(diff.stdout)
    assert "metrics/probe/pretrain.json" in changed
    assert any(k.startswith("full.") for k in changed["metrics/probe/pretrain.json"])

    # a distillation ablation (Table 6) reruns distill and what evaluates g, never f's stages
    exp = p.dvc("exp", "run", "-S", "distill.guided_weighting=false")
    assert ran_stages(exp) == {"distill", "linear-probe@distill", "cluster@distill", "report"}


def ran_stages(proc) -> set[str]:
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}

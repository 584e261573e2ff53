"""The DVC contract: a full `dvc repro` of the KDUP chain on tiny params, a no-op second repro,
code edits that invalidate exactly the stages that run the code, and a probe parameter experiment
that reruns only linear-probe and report."""

from __future__ import annotations

import json

import pytest

from conftest import make_project

# Test-local: every stage runs in its own process here (the point of the test), so each one is
# kept as cheap as the assertions allow; none of them depends on the t-SNE sample count (the
# cluster stage's cost: 1000 Barnes-Hut iterations).
SMALLER = {"cluster": {"tsne_samples": 10}}


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("dvc"), {
        **SMALLER, "ood": {"strategy": "kdup"}, "pretrain": {"method": "psd", "epochs": 3},
        "distill": {"method": "kdup"}}, git=True)
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

    # code deps are exact (issue 12): a loss only GML uses changes nothing of the KDUP chain; KDUP's
    # own loss module invalidates the stages that run it (and so everything after them)
    kdup_chain = {"ood-sampling", "pretrain", "distill"}
    for rel, invalid in (("src/ltcl/losses/gml.py", set()), ("src/ltcl/losses/kdup.py", kdup_chain)):
        path = p.path(rel)
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        status = json.loads(p.dvc("status", "--json").stdout)
        path.write_text(text)
        assert {s for s in status if "changed deps" in str(status[s])} & (kdup_chain | {"make-lt-dataset"}) == invalid
    assert "Running stage" not in p.dvc("repro").stdout

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

    # a PSD-only key (paper 003 Table 8's alpha) reruns pre-training, never the SimCLR warm-up
    exp = p.dvc("exp", "run", "-S", "pretrain.alpha=0.5")
    assert ran_stages(exp) == {"pretrain", "distill", "linear-probe@pretrain", "linear-probe@distill",
                               "cluster@pretrain", "cluster@distill", "report"}


def ran_stages(proc) -> set[str]:
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}

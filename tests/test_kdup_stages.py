"""The KDUP stages (paper 003 Sec. 3) against their documented outputs, on tiny params."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import copy_project
from ltcl.data.pool import open_pool
from ltcl.data.splits import load_manifest
from ltcl.io import load_checkpoint
from ltcl.models.checkpoint import load_encoder


def test_pool_matches_id_images(kdup_project):
    pool = open_pool(kdup_project.path("data/ood/pool.npy"))
    assert pool.shape == (300, 8, 8, 1) and pool.dtype == np.uint8
    assert isinstance(pool, np.memmap)


def test_ood_sampling_outputs(kdup_project):
    p = kdup_project
    sel = np.load(p.path("data/ood/selection.npz"))
    idx = sel["pool_indices"]
    assert len(idx) == 60 and len(np.unique(idx)) == 60 and idx.max() < 300  # no image twice
    assert sel["budgets"].sum() == 60 and (sel["budgets"] >= 0).all()
    assert np.array_equal(np.bincount(sel["cluster_of_each"], minlength=4), sel["budgets"])
    m = json.loads(p.path("metrics/ood.json").read_text())
    assert m["strategy"] == "kdup" and sum(m["budgets"]) == 60 and len(m["cluster_sizes"]) == 4
    assert {"clustering", "tailness", "budget", "sampling", "embedding"} <= set(m["seconds"])
    d = m["diagnostics"]
    assert -1.0 <= d["spearman_rarity"] <= 1.0 and 0.0 <= d["few_budget_share"] <= 1.0
    warm = load_checkpoint(p.path("data/ood/warmup.pt"))
    assert warm["epoch"] == 1 and warm["sampler"]["rounds"] == 1 and warm["sampler"]["tailness"].shape == (sum(
        load_manifest(p.path("data/lt"))["lt_counts"]),)


def test_pretrain_resamples(kdup_project):
    m = json.loads(kdup_project.path("metrics/pretrain.json").read_text())
    assert m["method"] == "psd" and m["ood_strategy"] == "kdup"
    assert m["start_epoch"] == 1 and m["epochs"] == 2  # continues from the warm-up
    assert m["ood_images"] == 60 and m["ood_updates"] == 1  # interval 1: one re-sampling at epoch 2
    assert m["ood_update_history"][0]["epoch"] == 2


def test_distill_outputs_and_frozen_teacher(kdup_project):
    p = kdup_project
    f, _, _ = load_encoder(p.path("data/models/pretrain.pt"))
    g, _, ck = load_encoder(p.path("data/models/distill.pt"))
    assert ck["distilled"] is True
    changed = [not torch.equal(a, b) for a, b in zip(f.state_dict().values(), g.state_dict().values())]
    assert any(changed)
    m = json.loads(p.path("metrics/distill.json").read_text())
    assert m["enabled"] and m["epochs"] == 1 and 0.0 <= m["neighbour_precision"] <= 1.0


def test_cluster_probe_and_report(kdup_project):
    p = kdup_project  # linear-probe of f and g: run (and checked to succeed) by the fixture
    for enc in ("pretrain", "distill"):
        p.stage("cluster.py", enc)
        c = json.loads(p.path(f"metrics/cluster/{enc}.json").read_text())
        assert c["chi"] > 0 and c["dbi"] > 0 and -1 <= c["ari"] <= 1 and 0 <= c["nmi"] <= 1
        assert "intra_alignment.few" in c["geometry"]
        tsne = p.path(f"metrics/cluster/{enc}_tsne.csv").read_text().splitlines()
        assert tsne[0] == "x,y,label,group" and len(tsne) == 101
    p.stage("report.py")
    page = p.path("report/index.html").read_text()
    for needle in ("f (pre-trained)", "g (distilled)", "OOD sampling", "OOD budget", "Cluster quality",
                   "CHI", "DBI", "Spearman"):
        assert needle in page, needle


@pytest.mark.parametrize("strategy", ["colt", "random", "augment", "none"])
def test_other_strategies(lt_project, built_project, tmp_path, strategy):
    if strategy == "none":  # the tiny params' own strategy: built_project ran exactly these stages
        project = built_project
    else:  # make-lt-dataset and ood-pool (which ignore ood.strategy) from the shared project
        project = copy_project(lt_project, tmp_path / "p", {"ood": {"strategy": strategy}, "pretrain": {"epochs": 2}})
        for script in ("ood_sampling.py", "pretrain.py"):
            project.stage(script)
    assert project.params()["ood"]["strategy"] == strategy and project.params()["pretrain"]["epochs"] == 2
    m = json.loads(project.path("metrics/ood.json").read_text())
    assert m["strategy"] == strategy
    pre = json.loads(project.path("metrics/pretrain.json").read_text())
    assert pre["ood_images"] == (0 if strategy == "none" else 60)
    assert pre["start_epoch"] == (0 if strategy == "none" else 1)
    if strategy in ("colt", "augment"):
        assert sum(m["budgets"]) == 60


def test_distill_disabled_is_f(built_project, tmp_path):
    project = copy_project(built_project, tmp_path / "p")  # make-lt-dataset, ood-sampling, pretrain done
    project.set_params({"distill": {"enabled": False}})
    project.stage("distill.py")
    f, _, _ = load_encoder(project.path("data/models/pretrain.pt"))
    g, _, ck = load_encoder(project.path("data/models/distill.pt"))
    assert ck["distilled"] is False
    assert all(torch.equal(a, b) for a, b in zip(f.state_dict().values(), g.state_dict().values()))


# A pool smaller than the OOD budget: tests/test_bad_input.py (refused in params.yaml for
# bundled / folder / source pools, when ood-sampling opens an .npy pool).

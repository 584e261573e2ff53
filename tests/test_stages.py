"""Each stage script against its documented outputs (tiny params, real scripts)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ltcl.data.splits import load_manifest, load_split
from ltcl.models.checkpoint import load_encoder


def test_make_lt_dataset_outputs(built_project):
    p = built_project
    man = load_manifest(p.path("data/lt"))
    assert len(man["class_names"]) == 10
    counts = np.asarray(man["lt_counts"])
    assert counts.max() == 60 and counts.min() == 6  # n_max 60, ratio 10
    # permuted class order: the counts are not in label order
    assert man["class_order"] != list(range(10))
    assert sorted(man["groups"]).count("few") == 3 and man["groups"].count("many") == 4
    for split in ("train", "probe_full", "few_shot", "val", "test"):
        x, y = load_split(p.path("data/lt"), split)
        assert x.dtype == np.uint8 and x.shape[1:] == (8, 8, 1) and len(x) == len(y)
    x, y = load_split(p.path("data/lt"), "train")
    assert np.array_equal(np.bincount(y, minlength=10), counts)
    metrics = json.loads(p.path("metrics/dataset.json").read_text())
    assert metrics["size_train"] == counts.sum() and metrics["imbalance_ratio"] == 10.0
    csv = pd.read_csv(p.path("metrics/class_counts.csv"))
    assert list(csv["lt_count"]) == sorted(counts, reverse=True)


def test_pretrain_outputs(built_project):
    p = built_project
    model, spec, ckpt = load_encoder(p.path("data/models/pretrain.pt"))
    assert spec["backbone"] == "resnet8" and spec["channels"] == 1 and spec["image_size"] == 8
    assert ckpt["params"]["pretrain"]["method"] == "simclr"
    assert len(ckpt["history"]) == 2
    h, z = model(torch.zeros(3, 1, 8, 8))
    assert h.shape == (3, model.feature_dim) and z.shape == (3, 32)
    m = json.loads(p.path("metrics/pretrain.json").read_text())
    assert m["epochs"] == 2 and np.isfinite(m["final_loss"]) and m["images_per_s"] > 0
    tsv = p.path("dvclive/pretrain/plots/metrics/loss.tsv")
    assert len(tsv.read_text().strip().splitlines()) == 3  # header + 2 epochs


def test_linear_probe_and_report(built_project):
    p = built_project
    p.stage("linear_probe.py", "pretrain")
    m = json.loads(p.path("metrics/probe/pretrain.json").read_text())
    for proto in ("full", "few_shot"):
        for key in ("many", "medium", "few", "std", "all"):
            assert 0.0 <= m[proto][key] <= 100.0
        g = [m[proto][k] for k in ("many", "medium", "few")]
        assert m[proto]["std"] == pytest.approx(np.std(g), abs=1e-6)
    assert set(m["knn"]) >= {"k1", "k10"}
    per_class = pd.read_csv(p.path("metrics/probe/pretrain_per_class.csv"))
    assert len(per_class) == 10 and {"full", "few_shot", "knn1", "knn10", "group"} <= set(per_class)
    # the per-class table and the group summary agree
    many = per_class.loc[per_class.group == "many", "full"].mean()
    assert many == pytest.approx(m["full"]["many"], abs=1e-3)

    p.stage("report.py")
    page = p.path("report/index.html").read_text()
    assert "<img src=\"data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")
    assert "Linear probe (full)" in page and "Many" in page
    md = p.path("report/report.md").read_text()
    assert "| f (pre-trained): simclr |" in md and "figures/fig01.png" in md
    assert "Run card" in md and "peak memory (MB)" in md and "Tables 13-15" in md
    assert p.path("report/figures/fig01.png").stat().st_size > 1000


def test_paper000_protocols(built_project):
    p = built_project
    params = p.params()
    p.set_params({"probe": {"protocols": ["full", "ms", "lt", "one_percent"]}})
    try:
        p.stage("linear_probe.py", "pretrain")
    finally:
        p.set_params({"probe": params["probe"]})
    m = json.loads(p.path("metrics/probe/pretrain.json").read_text())
    for proto in ("ms", "lt", "one_percent"):
        assert 0.0 <= m[proto]["all"] <= 100.0 and m[proto]["best_epoch"] >= 1

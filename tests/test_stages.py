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
    # the summary is the curves' and the checkpoint history's: the last epoch's loss and 240 images
    # // batch 64 = 3 steps (last incomplete batch dropped) per epoch
    curves = p.path("dvclive/pretrain/plots/metrics")
    loss = pd.read_csv(curves / "loss.tsv", sep="\t")
    assert loss.step.tolist() == [0, 1]  # 2 epochs
    assert m["epochs"] == 2 and m["steps"] == 6 and [h["steps"] for h in ckpt["history"]] == [3, 3]
    assert m["final_loss"] == pytest.approx(loss.loss.iloc[-1], rel=1e-9) == ckpt["history"][-1]["loss"]
    # timings go to the run record only: not the metrics, the curves or the model file's history
    assert not {"seconds", "seconds_per_epoch", "images_per_s", "run"} & set(m)
    assert sorted(q.name for q in curves.iterdir()) == ["loss.tsv", "loss_contrastive.tsv", "lr.tsv"]
    assert all(set(h) == {"epoch", "loss", "lr", "steps", "parts"} for h in ckpt["history"])
    t = json.loads(p.path("runs/pretrain.json").read_text())["timings"]
    assert [e["epoch"] for e in t["per_epoch"]] == [1, 2]
    assert t["images_per_s"] == pytest.approx(np.mean([e["images_per_s"] for e in t["per_epoch"]]), rel=1e-12)


def test_linear_probe_and_report(built_project):
    p = built_project
    p.stage("linear_probe.py", "pretrain")
    m = json.loads(p.path("metrics/probe/pretrain.json").read_text())
    assert set(m["knn"]) >= {"k1", "k10"}
    per_class = pd.read_csv(p.path("metrics/probe/pretrain_per_class.csv"))
    assert len(per_class) == 10 and {"full", "few_shot", "knn1", "knn10", "group"} <= set(per_class)
    assert per_class.group.tolist() == load_manifest(p.path("data/lt"))["groups"]
    _, y_test = load_split(p.path("data/lt"), "test")
    n_test = np.bincount(y_test, minlength=10)
    # the per-class table and the group summary agree: each group the mean of its classes' accuracies,
    # STD over the three groups, All the test-sample-weighted mean of the per-class accuracies
    for proto in ("full", "few_shot"):
        for g in ("many", "medium", "few"):
            assert m[proto][g] == pytest.approx(per_class.loc[per_class.group == g, proto].mean(), abs=1e-3)
        g = [m[proto][k] for k in ("many", "medium", "few")]
        assert m[proto]["std"] == pytest.approx(np.std(g), abs=1e-6)
        assert m[proto]["all"] == pytest.approx(np.sum(per_class[proto] * n_test) / n_test.sum(), abs=1e-3)

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
    m = json.loads(p.path("metrics/probe/pretrain_details.json").read_text())  # the whole record (best epoch)
    assert list(json.loads(p.path("metrics/probe/pretrain.json").read_text())) == ["full", "ms", "lt", "one_percent",
                                                                                    "knn"]  # the headline's order
    per_class = pd.read_csv(p.path("metrics/probe/pretrain_per_class.csv"))
    n_test = np.bincount(load_split(p.path("data/lt"), "test")[1], minlength=10)
    for proto in ("ms", "lt", "one_percent"):  # All: the test-sample-weighted mean of its per-class accuracies
        assert m[proto]["all"] == pytest.approx(np.sum(per_class[proto] * n_test) / n_test.sum(), abs=1e-3)
        assert 1 <= m[proto]["best_epoch"] <= params["probe"]["few_shot_epochs"]  # the few-shot schedule

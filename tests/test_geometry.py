"""Geometry metrics of paper 001 Sec. 4, checked against loops written from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ltcl.eval.geometry import GEOMETRY_METRICS, class_geometry


def _reference(features, labels, groups):
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    num_classes = len(groups)
    present = [c for c in range(num_classes) if (labels == c).any()]
    centers, var, intra = {}, {}, {}
    for c in present:
        fc = f[labels == c]
        n = len(fc)
        centers[c] = fc.mean(axis=0)
        var[c] = sum(float(((v - centers[c]) ** 2).sum()) for v in fc) / n
        intra[c] = sum(float(((a - b) ** 2).sum()) for a in fc for b in fc) / n ** 2
    out = {}
    for g in ["many", "medium", "few", "all"]:
        cls = [c for c in present if g == "all" or groups[c] == g]
        out[f"variance.{g}"] = float(np.mean([var[c] for c in cls])) if cls else math.nan
        out[f"intra_alignment.{g}"] = float(np.mean([intra[c] for c in cls])) if cls else math.nan
        d2, ratio = [], []
        for i in cls:
            for j in present:
                if j == i:
                    continue
                dist = float(((centers[i] - centers[j]) ** 2).sum())
                d2.append(dist)
                if var[i] + var[j] > 0:
                    ratio.append(dist / abs(var[i] + var[j]))
        out[f"inter_uniformity.{g}"] = float(np.mean(d2)) if d2 else math.nan
        out[f"inter_uniformity_improved.{g}"] = 2 * float(np.mean(ratio)) if ratio else math.nan
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_geometry_matches_definitions(seed):
    rng = np.random.default_rng(seed)
    num_classes = 7
    counts = [12, 9, 7, 5, 3, 2, 1]
    labels = np.repeat(np.arange(num_classes), counts)
    features = rng.normal(size=(labels.size, 4)) + 2.0 * rng.normal(size=(num_classes, 4))[labels]
    groups = np.array(["many", "many", "many", "medium", "medium", "few", "few"])
    got = class_geometry(features, labels, groups)
    ref = _reference(features, labels, groups)
    assert set(got) == {f"{m}.{g}" for m in GEOMETRY_METRICS for g in ["many", "medium", "few", "all"]}
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    # paper formula for the whole set: 1/(C(C-1)) and 2/(C(C-1)) over all ordered pairs
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    c = np.stack([f[labels == k].mean(0) for k in range(num_classes)])
    inter = sum(((c[i] - c[j]) ** 2).sum() for i in range(7) for j in range(7) if i != j) / (7 * 6)
    assert got["inter_uniformity.all"] == pytest.approx(inter, rel=1e-9)
    # torch input gives the same result
    got_t = class_geometry(torch.tensor(features, dtype=torch.float32), torch.tensor(labels), list(groups))
    assert got_t["intra_alignment.all"] == pytest.approx(got["intra_alignment.all"], rel=1e-5)


def test_class_geometry_intra_is_twice_variance_and_separation():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 50)
    tight = np.array([[1.0, 0.0], [0.0, 1.0]])[labels] + 0.01 * rng.normal(size=(100, 2))
    loose = np.array([[1.0, 0.0], [0.0, 1.0]])[labels] + 0.3 * rng.normal(size=(100, 2))
    groups = np.array(["many", "few"])
    gt, gl = class_geometry(tight, labels, groups), class_geometry(loose, labels, groups)
    assert gt["intra_alignment.all"] == pytest.approx(2 * gt["variance.all"], rel=1e-9)
    assert gt["variance.all"] < gl["variance.all"]
    assert gt["inter_uniformity_improved.all"] > gl["inter_uniformity_improved.all"]
    assert math.isnan(gt["variance.medium"]) and math.isnan(gt["inter_uniformity.medium"])


def test_class_geometry_errors():
    x = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(ValueError, match="labels"):
        class_geometry(x, np.array([0, 1, 2, 0, 1, 3]), np.array(["many", "medium", "few"]))
    with pytest.raises(ValueError, match="class_groups"):
        class_geometry(x, np.array([0, 1, 2, 0, 1, 2]), np.array(["many", "mid", "few"]))

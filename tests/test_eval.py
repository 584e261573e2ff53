"""Tests for ltcl.eval (groups, features, linear probe, KNN, cluster metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ltcl.data.groups import accuracy_report, class_groups, group_summary, per_class_accuracy
from ltcl.eval.cluster_metrics import cluster_metrics, stratified_subsample, tsne_embedding
from ltcl.models.features import extract_features
from ltcl.eval.knn import knn_accuracy, knn_predict
from ltcl.eval.probe import train_linear_probe
from ltcl.params import ProbeParams


def _blobs(n_per_class: int, num_classes: int, dim: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim)) * sep
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = centers[y] + rng.normal(size=(y.size, dim))
    perm = rng.permutation(y.size)
    return x[perm].astype(np.float32), y[perm]


# --------------------------------------------------------------------------- groups


def _lt_counts(num_classes: int, n_max: int = 4500, ratio: float = 100.0) -> np.ndarray:
    """Exponential long-tailed profile (CIFAR-LT)."""
    return np.array([int(n_max * ratio ** (-i / (num_classes - 1))) for i in range(num_classes)])


def test_thirds_rule_10_classes_shuffled() -> None:
    counts = _lt_counts(10)
    perm = np.random.default_rng(0).permutation(10)
    shuffled = counts[perm]
    groups = class_groups(shuffled, "thirds")
    assert [int((groups == g).sum()) for g in ("many", "medium", "few")] == [4, 3, 3]
    # original class i has rank i by decreasing count: 0-3 many, 4-6 medium, 7-9 few
    expected_by_orig = np.array(["many"] * 4 + ["medium"] * 3 + ["few"] * 3)
    np.testing.assert_array_equal(groups, expected_by_orig[perm])


def test_thirds_rule_100_classes_and_ties() -> None:
    groups = class_groups(_lt_counts(100), "thirds")
    assert [int((groups == g).sum()) for g in ("many", "medium", "few")] == [34, 33, 33]
    assert (groups[:34] == "many").all() and (groups[67:] == "few").all()
    # ties: stable sort by class index -> lowest indices are "few"
    tied = class_groups(np.full(10, 7), "thirds")
    np.testing.assert_array_equal(tied, ["few"] * 3 + ["medium"] * 3 + ["many"] * 4)


def test_thresholds_rule_and_empty_group() -> None:
    groups = class_groups([150, 101, 100, 20, 19, 0], "thresholds")
    np.testing.assert_array_equal(groups, ["many", "many", "medium", "medium", "few", "few"])
    summary = group_summary([50.0, 70.0, 10.0], [500, 300, 200], "thresholds")
    assert summary["many"] == pytest.approx(130.0 / 3)
    assert math.isnan(summary["medium"]) and math.isnan(summary["few"])
    assert summary["std"] == 0.0  # std over the single non-empty group
    with pytest.raises(ValueError, match="rule"):
        class_groups([1, 2, 3], "quartiles")


def test_group_summary_std_example() -> None:
    counts = _lt_counts(10)  # classes 0-3 many, 4-6 medium, 7-9 few
    acc = np.array([82.40] * 4 + [73.91] * 3 + [70.19] * 3)
    acc[:4] += np.array([1.0, -1.0, 2.5, -2.5])  # group means unchanged
    summary = group_summary(acc, counts)
    assert summary["many"] == pytest.approx(82.40)
    assert summary["medium"] == pytest.approx(73.91)
    assert summary["few"] == pytest.approx(70.19)
    assert round(summary["std"], 2) == 5.11
    ref = math.sqrt(sum((g - 75.5) ** 2 for g in (82.40, 73.91, 70.19)) / 3)
    assert summary["std"] == pytest.approx(ref)


def test_per_class_accuracy_vs_loop() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 6, size=200)  # class 6 absent
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 7, size=200))
    acc = per_class_accuracy(y_true, y_pred, 7)
    for c in range(6):
        mask = y_true == c
        assert acc[c] == pytest.approx(100.0 * np.mean(y_pred[mask] == c))
    assert math.isnan(acc[6])


def test_accuracy_report() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 0, 2])
    report = accuracy_report(y_true, y_pred, [100, 10, 1], 3, "thirds")
    assert report["per_class"] == pytest.approx([50.0, 100.0, 50.0])
    assert (report["many"], report["medium"], report["few"]) == pytest.approx((50.0, 100.0, 50.0))
    assert report["all"] == pytest.approx(100.0 * 5 / 8)
    assert report["std"] == pytest.approx(np.std([50.0, 100.0, 50.0]))


# --------------------------------------------------------------------------- features


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)


def test_extract_features_matches_direct_forward() -> None:
    torch.manual_seed(0)
    net = _TinyNet()
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 2.0)
    net.train()
    x = np.random.default_rng(0).integers(0, 256, size=(37, 8, 8, 3), dtype=np.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    feats = extract_features(net, x, batch_size=10, device="cpu", mean=mean, std=std)
    assert feats.shape == (37, 8) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert net.training  # mode restored
    net.eval()
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    ref_in = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0 - mean_t) / std_t
    with torch.no_grad():
        ref = net(ref_in)
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)
    # plain callable + bf16 autocast still returns float32 close to the fp32 result
    feats_amp = extract_features(lambda t: net(t), torch.from_numpy(x), batch_size=64, mean=mean, std=std, amp=True)
    assert feats_amp.dtype == torch.float32
    torch.testing.assert_close(feats_amp, ref, rtol=5e-2, atol=5e-2)
    # a bound method of a module in train mode: eval() during extraction, mode restored
    net.train()
    feats_method = extract_features(net.forward, x, batch_size=16, mean=mean, std=std)
    assert net.training
    torch.testing.assert_close(feats_method, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="mean"):
        extract_features(net, x, mean=(0.5, 0.5), std=std)


# --------------------------------------------------------------------------- linear probe


def probe_args(**over) -> dict:
    """train_linear_probe's settings: the probe section's defaults (ltcl.params), then ``over``."""
    p = ProbeParams()
    return {"epochs": p.epochs, "lr": p.lr, "momentum": p.momentum, "weight_decay": p.weight_decay,
            "batch_size": p.batch_size, "milestones": tuple(p.milestones), "seed": p.seed,
            "feature_norm": p.feature_norm, **over}


def test_linear_probe_separable_blobs() -> None:
    x, y = _blobs(120, 5, 16, sep=4.0, seed=0)
    tr, va, te = slice(0, 400), slice(400, 500), slice(500, 600)
    threads = torch.get_num_threads()
    res = train_linear_probe(x[tr], y[tr], x[va], y[va], x[te], y[te], num_classes=5, **probe_args(epochs=12, milestones=(4, 8)))
    assert torch.get_num_threads() == threads  # cpu_threads=1 only during training
    assert res.test_acc > 95.0
    assert res.test_pred.shape == (100,)
    assert res.test_acc == pytest.approx(100.0 * np.mean(res.test_pred == y[te]))
    assert len(res.history) == 12 and [h["epoch"] for h in res.history] == list(range(1, 13))
    assert [h["lr"] for h in res.history[3:5]] == pytest.approx([30.0, 3.0])


@pytest.mark.parametrize("feature_norm", ["none", "standardize"])
def test_linear_probe_keeps_best_val_epoch(feature_norm: str) -> None:
    # Noisy, overlapping classes + lr 30 without decay: val accuracy fluctuates across epochs.
    x, y = _blobs(100, 4, 8, sep=0.8, seed=3)
    tr, va = slice(0, 300), slice(300, 400)
    kwargs = dict(num_classes=4, **probe_args(epochs=15, milestones=(), seed=7, feature_norm=feature_norm))
    # test = val, so the reported test accuracy must equal the val accuracy of the kept epoch
    res = train_linear_probe(x[tr], y[tr], x[va], y[va], x[va], y[va], **kwargs)
    val_curve = [h["val_acc"] for h in res.history]
    assert len(set(val_curve)) > 1
    assert res.best_epoch == int(np.argmax(val_curve)) + 1
    assert res.best_val_acc == max(val_curve)
    assert res.test_acc == pytest.approx(res.best_val_acc)
    # deterministic given the seed
    again = train_linear_probe(x[tr], y[tr], x[va], y[va], x[va], y[va], **kwargs)
    np.testing.assert_array_equal(again.test_pred, res.test_pred)
    assert again.history == res.history


def test_linear_probe_empty_val_uses_last_epoch() -> None:
    x, y = _blobs(40, 3, 6, sep=3.0, seed=1)
    res = train_linear_probe(
        x[:100], y[:100], x[:0], y[:0], x[100:], y[100:], num_classes=3, **probe_args(epochs=4, feature_norm="l2", lr=1.0)
    )
    assert res.best_epoch == 4 and math.isnan(res.best_val_acc)
    assert all(math.isnan(h["val_acc"]) for h in res.history)
    with pytest.raises(ValueError, match="feature_norm"):
        train_linear_probe(x, y, x, y, x, y, num_classes=3, **probe_args(epochs=1, feature_norm="pca"))


# --------------------------------------------------------------------------- knn


def _knn_reference(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, c: int) -> np.ndarray:
    """Loop implementation: cosine similarity, majority vote, ties by summed similarity."""
    tr = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    preds = []
    for q in test_x.astype(np.float64):
        sims = tr.astype(np.float64) @ (q / np.linalg.norm(q))
        nn_idx = np.argsort(-sims, kind="stable")[:k]
        best, best_key = -1, None
        for cls in range(c):
            members = [i for i in nn_idx if train_y[i] == cls]
            key = (len(members), sum(sims[i] for i in members))
            if best_key is None or key > best_key:
                best, best_key = cls, key
        preds.append(best)
    return np.array(preds)


def test_knn_matches_bruteforce_loop() -> None:
    rng = np.random.default_rng(5)
    train_x = rng.normal(size=(150, 12)).astype(np.float32)
    train_y = rng.integers(0, 7, size=150)
    test_x = rng.normal(size=(60, 12)).astype(np.float32)
    test_y = rng.integers(0, 7, size=60)
    for k in (1, 10):
        ref = _knn_reference(train_x, train_y, test_x, k, 7)
        np.testing.assert_array_equal(knn_predict(train_x, train_y, test_x, k, 7), ref)
    # with 7 classes and k = 10 vote ties occur; make sure the tie-break was exercised
    cos = (train_x / np.linalg.norm(train_x, axis=1, keepdims=True)) @ test_x.T
    nn_counts = [np.bincount(train_y[np.argsort(-cos[:, j])[:10]], minlength=7) for j in range(len(test_x))]
    assert any((cnt == cnt.max()).sum() > 1 for cnt in nn_counts)
    accs = knn_accuracy(torch.from_numpy(train_x), torch.from_numpy(train_y), test_x, test_y, ks=(1, 10))
    assert set(accs) == {"k1", "k10"}
    for k in (1, 10):
        ref = _knn_reference(train_x, train_y, test_x, k, 7)
        assert accs[f"k{k}"] == pytest.approx(100.0 * np.mean(ref == test_y))
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(train_x[:5], train_y[:5], test_x, 6, 7)
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(train_x[:5], train_y[:5], test_x, test_y, ks=(1, 10))


# --------------------------------------------------------------------------- cluster metrics


def _chi_dbi_reference(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    classes = np.unique(y)
    mu = x.mean(0)
    cents = {c: x[y == c].mean(0) for c in classes}
    between = sum((y == c).sum() * np.sum((cents[c] - mu) ** 2) for c in classes)
    within = sum(np.sum((x[i] - cents[y[i]]) ** 2) for i in range(len(x)))
    k, n = len(classes), len(x)
    chi = (between / (k - 1)) / (within / (n - k))
    scatter = {c: np.mean([np.linalg.norm(p - cents[c]) for p in x[y == c]]) for c in classes}
    ratios = [
        max((scatter[i] + scatter[j]) / np.linalg.norm(cents[i] - cents[j]) for j in classes if j != i)
        for i in classes
    ]
    dbi = np.mean(ratios)
    return float(chi), float(dbi)


def test_cluster_metrics_on_separated_blobs() -> None:
    x, y = _blobs(40, 4, 5, sep=10.0, seed=2)
    m = cluster_metrics(x, y, num_classes=4, seed=0, l2_normalize=False)
    assert m["nmi"] > 0.99 and m["ari"] > 0.99
    chi, dbi = _chi_dbi_reference(x.astype(np.float64), y)
    assert m["chi"] == pytest.approx(chi, rel=1e-6)
    assert m["dbi"] == pytest.approx(dbi, rel=1e-6)
    # mixing the labels destroys the structure
    shuffled = np.random.default_rng(0).permutation(y)
    m2 = cluster_metrics(torch.from_numpy(x), shuffled, num_classes=4, seed=0, l2_normalize=False)
    assert m2["nmi"] < 0.2 and m2["chi"] < m["chi"] and m2["dbi"] > m["dbi"]


def test_stratified_subsample_and_tsne() -> None:
    labels = np.repeat(np.arange(3), [300, 90, 10])
    idx = stratified_subsample(400, 100, labels, seed=0)
    assert idx.size == 100 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=3)
    assert abs(counts[0] - 75) <= 1 and abs(counts[1] - 22.5) <= 1 and abs(counts[2] - 2.5) <= 1
    x, y = _blobs(30, 3, 6, sep=8.0, seed=4)
    sel, coords = tsne_embedding(x, n_max=60, seed=0, labels=y)
    assert sel.shape == (60,) and coords.shape == (60, 2) and coords.dtype == np.float32
    assert np.bincount(y[sel], minlength=3).tolist() == [20, 20, 20]
    sel2, coords2 = tsne_embedding(x, n_max=60, seed=0, labels=y)
    np.testing.assert_array_equal(sel, sel2)
    np.testing.assert_allclose(coords, coords2)

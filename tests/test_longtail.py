"""Tests for ltcl.data.longtail (per-class counts) and ltcl.data.splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ltcl.data.longtail import longtail_counts
from ltcl.data.sources import RawDataset
from ltcl.data.splits import (
    SPLIT_NAMES,
    load_indices,
    load_manifest,
    load_split,
    make_splits,
    save_splits,
)
from ltcl.params import DataParams


def split_args(**over) -> dict:
    """make_splits' settings: the data section's defaults (ltcl.params), then ``over``."""
    d = DataParams()
    return {"imbalance_ratio": d.imbalance_ratio, "val_per_class": d.val_per_class, "max_per_class": d.max_per_class,
            "profile": d.profile, "pareto_min": d.pareto_min, "class_order": d.class_order, "split_seed": d.split_seed,
            "few_shot_fraction": d.few_shot_fraction, "subset": d.subset, "max_test_per_class": d.max_test_per_class,
            **over}

# --------------------------------------------------------------------------- longtail_counts


def exp_reference(n_max: int, c: int, ratio: float) -> list[int]:
    """Cui et al. 2019 as in the SDCLR split code: n_i = int(n_max * (1/ratio)^(i/(C-1)))."""
    out = []
    for i in range(c):
        out.append(int(n_max * (1.0 / ratio) ** (i / (c - 1))))
    return out


def pareto_reference(n_max: int, c: int, n_min: int, alpha: float = 6.0) -> list[int]:
    """Expected order statistics of Pareto(alpha, x_m=1): quantiles (1-q)^(-1/alpha) at q=(i+0.5)/C,
    largest first, mapped linearly onto [n_min, n_max]."""
    v = sorted(((1 - (i + 0.5) / c) ** (-1 / alpha) for i in range(c)), reverse=True)
    return [round(n_min + (vi - v[-1]) / (v[0] - v[-1]) * (n_max - n_min)) for vi in v]


def test_published_cifar_lt_sizes():
    c10 = longtail_counts(4500, 10, 100, "exp")
    assert sum(c10) == 11165 and c10[0] == 4500 and c10[-1] == 45
    c100 = longtail_counts(450, 100, 100, "exp")
    assert sum(c100) == 9754 and c100[0] == 450 and c100[-1] == 4  # TASE Sec. 4.1: "450 to 4"


@pytest.mark.parametrize("n_max,c,ratio", [(4500, 10, 100), (450, 100, 100), (500, 10, 10), (100, 7, 3.5)])
def test_exp_matches_reference_and_is_monotone(n_max, c, ratio):
    counts = longtail_counts(n_max, c, ratio, "exp")
    assert counts == exp_reference(n_max, c, ratio)
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_balanced_and_single_class():
    assert longtail_counts(30, 4, 10, profile="balanced") == [30] * 4
    assert longtail_counts(30, 1, 10, "exp") == [30]
    assert longtail_counts(30, 4, 1, "exp") == [30] * 4  # ratio 1 = balanced


def test_pareto_profile():
    counts = longtail_counts(1280, 100, 256, profile="pareto", min_count=5)
    assert counts[0] == 1280 and counts[-1] == 5
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert sum(counts) == 18247  # documented total
    assert counts == pareto_reference(1280, 100, 5)
    assert longtail_counts(1280, 100, 256, profile="pareto") == longtail_counts(1280, 100, 256, "pareto", 5)


def test_zero_count_error_names_nmax_and_ratio():
    with pytest.raises(ValueError, match=r"n_max=50.*ratio=100"):
        longtail_counts(50, 10, 100, "exp")


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_max=10, num_classes=3, ratio=0.5, profile="exp"), "ratio"),
    (dict(n_max=0, num_classes=3, ratio=2, profile="exp"), "n_max"),
    (dict(n_max=10, num_classes=0, ratio=2, profile="exp"), "num_classes"),
    (dict(n_max=10, num_classes=3, ratio=2, profile="zipf"), "profile"),
    (dict(n_max=10, num_classes=3, ratio=2, profile="pareto", min_count=11), "min_count"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        longtail_counts(**kwargs)


# --------------------------------------------------------------------------- make_splits


def toy_raw(num_classes=10, per_class=120, n_test=15, seed=0) -> RawDataset:
    """Images whose pixels encode their train index, so identity can be traced through splits."""
    n = num_classes * per_class
    idx = np.arange(n)
    x = np.zeros((n, 4, 4, 1), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = idx // 256, idx % 256
    y = np.random.default_rng(seed).permutation(idx % num_classes).astype(np.int64)
    x_te = np.zeros((num_classes * n_test, 4, 4, 1), np.uint8)
    y_te = np.arange(num_classes * n_test) % num_classes
    return RawDataset("toy", x, y, x_te, y_te, [f"c{i}" for i in range(num_classes)])


def ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(np.int64) * 256 + x[:, 0, 1, 0]


@pytest.fixture(scope="module")
def raw():
    return toy_raw()


@pytest.fixture(scope="module")
def splits(raw):
    return make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, split_seed=3))


def test_val_held_out_first_and_disjoint(raw, splits):
    val, probe, train = (set(ids(splits.get(n)[0])) for n in ("val", "probe_full", "train"))
    assert not val & probe and not val & train
    assert val | probe == set(range(len(raw.y_train)))
    assert np.all(np.bincount(splits.val[1]) == 20)
    for name in SPLIT_NAMES:
        x, y = splits.get(name)
        src_y = raw.y_test if name == "test" else raw.y_train
        if name != "test":
            np.testing.assert_array_equal(src_y[ids(x)], y)  # labels follow images
        np.testing.assert_array_equal(ids(x), ids((raw.x_test if name == "test" else raw.x_train)[splits.indices[name]]))


def test_counts_follow_profile_under_permutation(splits):
    expected = longtail_counts(100, 10, 10, "exp")  # n_max = 120 - 20
    assert splits.params["n_max"] == 100
    np.testing.assert_array_equal(splits.lt_counts[splits.class_order], expected)
    np.testing.assert_array_equal(np.bincount(splits.train[1], minlength=10), splits.counts)
    np.testing.assert_array_equal(splits.counts, splits.lt_counts)
    assert sorted(splits.class_order.tolist()) == list(range(10))
    assert splits.class_order.tolist() != list(range(10))  # permuted (seed 3)


def test_class_order_given_and_explicit(raw):
    s = make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, class_order="given"))
    np.testing.assert_array_equal(s.lt_counts, longtail_counts(100, 10, 10, "exp"))
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    s = make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, class_order=order))
    np.testing.assert_array_equal(s.lt_counts, longtail_counts(100, 10, 10, "exp")[::-1])
    with pytest.raises(ValueError, match="permutation"):
        make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, class_order=[0, 0, 1, 2, 3, 4, 5, 6, 7, 8]))


def test_nested_protocol_splits(splits):
    lt, probe, ms = (set(ids(splits.get(n)[0])) for n in ("lt", "probe_full", "ms"))
    assert ms <= lt <= probe
    assert set(ids(splits.few_shot[0])) <= probe and set(ids(splits.one_percent[0])) <= probe
    # MS LP: balanced minimum sampling = the tail count from every class
    assert np.all(np.bincount(splits.ms[1]) == splits.lt_counts.min())
    # few-shot: class-balanced 1% of probe_full (1000 images -> 1 per class); 1%S LP is the same draw
    assert np.all(np.bincount(splits.few_shot[1], minlength=10) == 1)
    np.testing.assert_array_equal(ids(splits.few_shot[0]), ids(splits.one_percent[0]))
    assert len(splits.test[1]) == 150


def test_few_shot_fraction_balanced_and_independent(raw, splits):
    s = make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, split_seed=3, few_shot_fraction=0.2))
    assert np.all(np.bincount(s.few_shot[1]) == 20)  # 0.2 * 1000 / 10
    assert np.all(np.bincount(s.one_percent[1]) == 1)
    np.testing.assert_array_equal(ids(s.lt[0]), ids(splits.lt[0]))  # own random streams


def test_balanced_subset_same_total(raw, splits):
    s = make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, split_seed=3, subset="balanced-subset"))
    total = int(splits.lt_counts.sum())
    assert len(s.train[1]) == total
    counts = np.bincount(s.train[1])
    assert counts.max() - counts.min() <= 1 and counts.sum() == total
    np.testing.assert_array_equal(s.counts, counts)
    np.testing.assert_array_equal(ids(s.lt[0]), ids(splits.lt[0]))


def test_determinism_and_seed_change(raw, splits):
    again = make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, split_seed=3))
    for name in SPLIT_NAMES:
        np.testing.assert_array_equal(splits.get(name)[0], again.get(name)[0])
    other = make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, split_seed=4))
    assert not np.array_equal(ids(other.lt[0]), ids(splits.lt[0]))


def test_max_test_per_class_and_max_per_class(raw):
    s = make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, max_test_per_class=4, max_per_class=50, profile="pareto", pareto_min=3))
    assert np.all(np.bincount(s.test[1]) == 4)
    assert s.lt_counts.max() == 50 and s.lt_counts.min() == 3


def test_split_errors(raw):
    with pytest.raises(ValueError, match="val_per_class=120"):
        make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=120))
    with pytest.raises(ValueError, match="n_max=101"):
        make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, max_per_class=101))
    with pytest.raises(ValueError, match="subset"):
        make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, subset="both"))
    with pytest.raises(ValueError, match="few_shot_fraction"):
        make_splits(raw, **split_args(imbalance_ratio=10, val_per_class=20, few_shot_fraction=0))
    with pytest.raises(ValueError, match="ratio"):
        make_splits(raw, **split_args(imbalance_ratio=0.5, val_per_class=20))


def test_uneven_classes_default_nmax():
    raw = toy_raw(num_classes=3, per_class=40)
    keep = np.flatnonzero(~((raw.y_train == 1) & (np.arange(len(raw.y_train)) % 2 == 0)))
    raw = RawDataset("toy", raw.x_train[keep], raw.y_train[keep], raw.x_test, raw.y_test, raw.class_names)
    s = make_splits(raw, **split_args(imbalance_ratio=2, val_per_class=5, class_order="given"))
    assert s.params["n_max"] == np.bincount(raw.y_train).min() - 5


# --------------------------------------------------------------------------- save / load


def test_save_load_roundtrip_and_manifest(tmp_path, splits):
    manifest = save_splits(splits, tmp_path, extra_manifest={"groups": {"many": [0]}})
    on_disk = load_manifest(tmp_path)
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["groups"] == {"many": [0]}
    assert on_disk["counts"]["train"] == splits.counts.tolist()
    assert on_disk["class_order"] == splits.class_order.tolist()
    assert on_disk["seeds"]["split_seed"] == 3
    # train = lt here (subset longtail): written once, read by both
    assert on_disk["arrays"]["lt"] == on_disk["arrays"]["train"] == {"x": "train_x.npy", "y": "train_y.npy"}
    assert not (tmp_path / "lt_x.npy").exists()
    assert set(on_disk["files"]) == {f for a in on_disk["arrays"].values() for f in a.values()} | {"indices.npz"}
    for name in SPLIT_NAMES:
        x, y = load_split(tmp_path, name)
        np.testing.assert_array_equal(x, splits.get(name)[0])
        np.testing.assert_array_equal(y, splits.get(name)[1])
        assert y.dtype == np.int64
    np.testing.assert_array_equal(load_indices(tmp_path)["lt"], splits.indices["lt"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tampered_file_detected(tmp_path, splits):
    save_splits(splits, tmp_path)
    path = tmp_path / "few_shot_y.npy"
    x, y = splits.few_shot
    np.save(path, (y + 1) % 10)  # same shape, different labels
    with pytest.raises(ValueError, match="few_shot_y.npy"):
        load_split(tmp_path, "few_shot")
    x2, _ = load_split(tmp_path, "few_shot", verify=False)
    assert x2.shape == x.shape
    load_split(tmp_path, "train")  # others still verify


def test_save_errors(tmp_path, splits):
    with pytest.raises(ValueError, match="counts"):
        save_splits(splits, tmp_path, extra_manifest={"counts": 1})
    save_splits(splits, tmp_path)
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        load_split(tmp_path, "nope")
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_manifest(tmp_path / "absent")

"""The two reference rows of every probe table (issue 21, part 5): raw pixels and a randomly
initialised encoder of f's architecture, probed on the same splits with the same protocols as f and
g. Each row is checked against a computation written here (numpy standardisation, a numpy kNN, the
encoder built with ``torch.manual_seed`` and run by a plain forward pass, groups by the thirds rule)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import copy_project
from ltcl.data.splits import load_manifest, load_split
from ltcl.eval.probe import train_linear_probe
from ltcl.params import ModelParams, ProbeParams, RuntimeParams

SPLITS = ("probe_full", "few_shot", "val", "test")
PROTO_SPLIT = {"full": "probe_full", "few_shot": "few_shot"}


@pytest.fixture(scope="module")
def ref_project(lt_project, tmp_path_factory):
    """The tiny digits splits, both reference stages run once (full + few-shot, kNN@1 / @10)."""
    proj = copy_project(lt_project, tmp_path_factory.mktemp("ref") / "p", {})
    for ref in ("pixels", "random"):
        proj.stage("reference_probe.py", ref)
    return proj


def _splits(proj) -> dict:
    return {s: load_split(proj.path("data/lt"), s) for s in SPLITS}


def _thirds(counts) -> np.ndarray:
    """Many / medium / few by the thirds rule, written out: sort by count (ties by class index)."""
    counts = np.asarray(counts)
    c = len(counts)
    order = sorted(range(c), key=lambda i: (counts[i], i))
    groups = np.array(["many"] * c, dtype=object)
    groups[order[: c // 3]] = "few"
    groups[order[c // 3: 2 * (c // 3)]] = "medium"
    return groups


def _report(y, pred, groups, num_classes) -> dict:
    per_class = np.array([100.0 * np.mean(pred[y == c] == c) for c in range(num_classes)])
    out = {g: float(per_class[groups == g].mean()) for g in ("many", "medium", "few")}
    out["std"] = float(np.std([out["many"], out["medium"], out["few"]]))
    out["all"] = float(100.0 * np.mean(pred == y))
    return out


def _knn(train, train_y, test, k, num_classes) -> np.ndarray:
    """Cosine kNN: majority of the k most similar, ties by summed similarity, then class index."""
    a = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    b = test / np.maximum(np.linalg.norm(test, axis=1, keepdims=True), 1e-12)
    sims = b.astype(np.float64) @ a.astype(np.float64).T
    pred = []
    for row in sims:
        top = np.argsort(-row, kind="stable")[:k]
        votes = np.bincount(train_y[top], minlength=num_classes)
        sim_sum = np.bincount(train_y[top], weights=row[top], minlength=num_classes)
        best = np.flatnonzero(votes == votes.max())
        pred.append(best[np.argmax(sim_sum[best])])
    return np.asarray(pred)


def _check_rows(proj, metrics: dict, feats: dict) -> None:
    """``metrics`` (a reference stage's) equal the probe and kNN written out here on ``feats``."""
    cfg = ProbeParams(**proj.params()["probe"])
    data = _splits(proj)
    manifest = load_manifest(proj.path("data/lt"))
    num_classes = len(manifest["class_names"])
    groups = _thirds(manifest["lt_counts"])
    y = {s: data[s][1] for s in SPLITS}
    for proto, split in PROTO_SPLIT.items():
        few = proto != "full"
        res = train_linear_probe(
            feats[split], y[split], feats["val"], y["val"], feats["test"], y["test"], num_classes,
            epochs=cfg.few_shot_epochs if few else cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
            weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
            milestones=tuple(cfg.few_shot_milestones if few else cfg.milestones), seed=cfg.seed,
            feature_norm=cfg.feature_norm)
        want = _report(y["test"], res.test_pred, groups, num_classes)
        got = {k: metrics[proto][k] for k in want}
        assert got == pytest.approx(want, abs=1e-9), proto
        assert metrics[proto]["best_epoch"] == res.best_epoch
    for k in cfg.knn_k:
        pred = _knn(feats["probe_full"], y["probe_full"], feats["test"], k, num_classes)
        assert metrics["knn"][f"k{k}"] == pytest.approx(100.0 * np.mean(pred == y["test"]), abs=1e-9), k
        assert metrics["knn"][f"k{k}_few"] == pytest.approx(_report(y["test"], pred, groups, num_classes)["few"],
                                                             abs=1e-9)
    per_class = pd.read_csv(proj.path(f"metrics/probe/ref-{metrics['reference']}_per_class.csv"))
    assert per_class["group"].tolist() == groups.tolist()
    assert metrics["group_source"] == "long-tailed training split"
    # the headline (the DVC metric): the groups and All of each protocol, kNN All, nothing else
    head = json.loads(proj.path(f"metrics/probe/ref-{metrics['reference']}.json").read_text())
    assert head == {**{p: {k: metrics[p][k] for k in ("many", "medium", "few", "std", "all")} for p in cfg.protocols},
                    "knn": {f"k{k}": metrics["knn"][f"k{k}"] for k in cfg.knn_k}}


def test_raw_pixel_row_is_the_probe_on_standardised_pixels(ref_project):
    p = ref_project
    m = json.loads(p.path("metrics/probe/ref-pixels_details.json").read_text())  # the whole record
    data = _splits(p)
    pf = data["probe_full"][0].reshape(len(data["probe_full"][0]), -1).astype(np.float64) / 255.0
    mean, std = pf.mean(axis=0), pf.std(axis=0)
    std[std == 0] = 1.0
    assert (pf.std(axis=0) == 0).any()  # the digits' border pixels: the std-1 rule is exercised
    feats = {s: ((x.reshape(len(x), -1) / 255.0 - mean) / std).astype(np.float32) for s, (x, _) in data.items()}
    assert m["reference"] == "pixels" and m["feature_dim"] == 8 * 8 * 1
    _check_rows(p, m, feats)


def test_random_init_row_is_f_before_training(ref_project):
    p = ref_project
    params = p.params()
    m = json.loads(p.path("metrics/probe/ref-random_details.json").read_text())  # the whole record
    from ltcl.models.checkpoint import build_from_spec, encoder_spec

    x_train = np.asarray(load_split(p.path("data/lt"), "train")[0])
    px = x_train.astype(np.float64) / 255.0
    mean = px.mean(axis=(0, 1, 2))
    std = px.std(axis=(0, 1, 2))
    spec = encoder_spec(ModelParams(**params["model"]), x_train.shape[-1], x_train.shape[1], mean, std)
    torch.manual_seed(params["pretrain"]["seed"])
    model = build_from_spec(spec).eval()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    feats = {}
    with torch.no_grad():
        for s, (x, _) in _splits(p).items():
            imgs = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float() / 255.0
            feats[s] = model.features((imgs - mean_t) / std_t).numpy()
    assert m["reference"] == "random" and m["feature_dim"] == feats["test"].shape[1]
    _check_rows(p, m, feats)


def test_random_init_equals_the_pretrain_stages_starting_point(ref_project):
    """The random encoder is f's first state as the pretrain stage builds it (setup_runtime with
    pretrain.seed, then new_encoder), weight for weight."""
    from ltcl.eval.reference import random_encoder
    from ltcl.train.session import new_encoder
    from ltcl.runtime import setup_runtime

    params = ref_project.params()
    x_train = load_split(ref_project.path("data/lt"), "train")[0]
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.get_num_threads(), torch.get_rng_state())
    try:
        runtime = setup_runtime(RuntimeParams(**{**params["runtime"], "device": "cpu"}), params["pretrain"]["seed"])
        f0, f_spec = new_encoder(ModelParams(**params["model"]), x_train, runtime)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_num_threads(saved[2])
        torch.set_rng_state(saved[3])
    model, spec = random_encoder(ModelParams(**params["model"]), x_train, params["pretrain"]["seed"])
    assert spec == f_spec
    a, b = f0.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].device)) for k in a)

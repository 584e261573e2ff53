"""The headline metrics files and their details (issue 22, ``ltcl.headline``): each declared DVC
metrics file is a view of its stage's record holding exactly the documented keys, the whole record
is in the ``<name>_details.json`` beside it, dvc.yaml declares the headlines alone as metrics, and
the default pipeline's ``dvc exp show`` has fewer than 60 metric columns, the probes' first."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO
from ltcl.eval.cluster_metrics import cluster_metrics
from ltcl.eval.protocols import evaluate_features, probe_headline, write_probe_outputs
from ltcl.headline import details_path, write_metrics
from ltcl.params import load_params
from ltcl.pipeline.cluster import cluster_headline
from ltcl.sampling.select import OODSelection
from ltcl.sampling.selection_io import ood_headline, selection_metrics

spec = importlib.util.spec_from_file_location("exp_columns", REPO / "scripts" / "exp_columns.py")
exp_columns = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exp_columns)

GROUP_KEYS = ["many", "medium", "few", "std", "all"]
COUNTS = [100, 60, 40, 12, 6, 3]  # train counts of 6 classes: thirds give 2 Many, 2 Medium, 2 Few
PROTOCOL_ORDER = ["full", "few_shot", "ms", "lt", "one_percent"]


def probe_record(protocols, knn_k=(1, 10), group_counts=COUNTS) -> dict:
    """A probe record as the probe stage computes it (``evaluate_features`` on random features of
    6 classes, 2-epoch probes), with the keys the stage adds."""
    g = torch.Generator().manual_seed(0)
    sizes = {"probe_full": 60, "few_shot": 12, "ms": 30, "lt": 40, "one_percent": 6, "val": 18, "test": 30}
    feats = {s: torch.randn(n, 8, generator=g) for s, n in sizes.items()}
    labels = {s: np.arange(n) % 6 for s, n in sizes.items()}
    cfg = load_params(REPO / "params.yaml").probe.model_copy(update=dict(
        epochs=2, milestones=[1], few_shot_epochs=2, few_shot_milestones=[1], knn_k=list(knn_k)))
    rec, _ = evaluate_features(feats, labels, group_counts, 6, cfg, "thirds", protocols, train_counts=COUNTS)
    return {**rec, "group_source": "long-tailed training split" if group_counts else None}


def ood_record(labels_real: bool = True) -> dict:
    """An OOD selection record (``selection_metrics``) of 3 clusters over 12 ID images of 6
    classes, with real labels and groups or without labels, and the warm-up summary beside it."""
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5, 5])
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    budgets = np.array([2, 3, 5])
    sel = OODSelection("kdup", np.arange(10), np.repeat([0, 1, 2], budgets), budgets, clusters, None,
                       torch.linspace(0, 1, 12), torch.tensor([0.1, 0.5, 0.9]), {"total": 0.1})
    manifest = {"groups": ["many", "many", "medium", "medium", "few", "few"], "lt_counts": COUNTS}
    if not labels_real:
        manifest = {**manifest, "labels": {"train": False, "eval": False, "note": ""}, "groups": None}
    return {**selection_metrics(sel, manifest, y), "warmup": {"epochs": 1, "steps": 2, "final_loss": 3.0}}


def cluster_record(labeled: bool = True) -> dict:
    sizes = {"k": 3, "sizes": [5, 4, 3], "largest_smallest_ratio": 5 / 3, "images": 12, "of": 12}
    if not labeled:
        return {"labels": "absent", "reason": "no labels", "cluster_sizes": sizes, "group_source": None}
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    rec = cluster_metrics(rng.standard_normal((30, 4)) + y[:, None], y, 3, seed=0, l2_normalize=False)
    return {**rec, "cluster_sizes": sizes, "geometry": {"variance.all": 0.1}, "group_source": "x"}


def test_probe_headline_is_the_groups_all_and_knn_of_each_protocol_in_the_papers_order(tmp_path):
    rec = probe_record(["few_shot", "ms", "full"])
    head = probe_headline(rec)
    assert list(head) == ["full", "few_shot", "ms", "knn"]
    for proto in ("full", "few_shot", "ms"):
        assert list(head[proto]) == GROUP_KEYS
        assert head[proto] == {k: rec[proto][k] for k in GROUP_KEYS}  # the details' values
    assert head["knn"] == {"k1": rec["knn"]["k1"], "k10": rec["knn"]["k10"]}
    assert {"best_epoch", "val"} <= set(rec["full"]) and "k1_few" in rec["knn"]  # what the headline leaves out
    # the files: the headline in that order, the whole record beside it
    write_probe_outputs(rec, pd.DataFrame({"class": [0]}), tmp_path / "p.json", tmp_path / "c.csv")
    text = (tmp_path / "p.json").read_text()
    assert list(json.loads(text)) == ["full", "few_shot", "ms", "knn"]
    assert list(json.loads(text)["full"]) == GROUP_KEYS
    assert json.loads(text) == head
    assert json.loads(details_path(tmp_path / "p.json").read_text()) == json.loads(json.dumps(rec))
    assert details_path(tmp_path / "p.json").name == "p_details.json"
    # every k of probe.knn_k, by k; no groups: All alone; no evaluation labels: no headline
    assert list(probe_headline(probe_record(["full"], knn_k=(20, 5)))["knn"]) == ["k5", "k20"]
    ungrouped = probe_record(["full"], group_counts=None)
    assert probe_headline(ungrouped) == {"full": {"all": ungrouped["full"]["all"]},
                                         "knn": {"k1": ungrouped["knn"]["k1"], "k10": ungrouped["knn"]["k10"]}}
    assert probe_headline({"labels": "absent", "reason": "r", "group_source": None}) == {}


def test_cluster_headline_is_chi_and_dbi():
    rec = cluster_record()
    assert {"nmi", "ari", "geometry", "cluster_sizes"} <= set(rec)
    assert cluster_headline(rec) == {"chi": rec["chi"], "dbi": rec["dbi"]}
    assert cluster_headline(cluster_record(labeled=False)) == {}


def test_ood_headline_is_the_budget_and_nothing_computed_from_labels_that_are_not_real(tmp_path):
    rec = ood_record()
    diag = rec["diagnostics"]
    head = ood_headline(rec)
    assert head == {"selected": 10, "budget_per_image": {g: diag["budget_per_image"][g] for g in
                                                         ("many", "medium", "few")},
                    "few_budget_share": diag["few_budget_share"]}
    # the budget per image of a group, directly: mean over its images of budget / cluster size,
    # relative to the mean budget per image (10 / 12); the Few share: the budget of Few-majority clusters
    per_image = np.array([2, 2, 2, 2, 3, 3, 3, 3, 5, 5, 5, 5]) / 4 / (10 / 12)
    assert head["budget_per_image"]["few"] == pytest.approx(per_image[[9, 10, 11]].mean())
    assert head["budget_per_image"]["many"] == pytest.approx(per_image[:6].mean())
    assert head["few_budget_share"] == pytest.approx(5 / 10)  # cluster 2: classes 3, 4, 5, 5 -> 5 (Few)
    write_metrics(tmp_path / "ood.json", rec, head)
    assert list(json.loads((tmp_path / "ood.json").read_text())) == ["selected", "budget_per_image",
                                                                     "few_budget_share"]
    assert list(json.loads((tmp_path / "ood.json").read_text())["budget_per_image"]) == ["many", "medium", "few"]
    assert json.loads((tmp_path / "ood_details.json").read_text()) == json.loads(json.dumps(rec))
    assert ood_headline(ood_record(labels_real=False)) == {"selected": 10}
    assert ood_headline({"strategy": "none", "selected": 0}) == {"selected": 0}


def stage_entries(stages: dict, key: str) -> dict[str, dict]:
    """path -> its options, of every ``key`` (outs / metrics) entry of every stage of dvc.yaml."""
    out = {}
    for st in stages.values():
        for e in (st.get("do", st).get(key) or []):
            path = next(iter(e)) if isinstance(e, dict) else e
            out[path] = e[path] if isinstance(e, dict) else {}
    return out


def test_dvc_yaml_declares_the_headlines_alone_as_metrics_and_the_rest_as_cached_outputs():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    metrics, outs = stage_entries(stages, "metrics"), stage_entries(stages, "outs")
    assert set(metrics) == {"metrics/probe/${item}.json", "metrics/probe/ref-pixels.json",
                            "metrics/probe/ref-random.json", "metrics/probe/ext-${key}.json",
                            "metrics/cluster/${item}.json", "metrics/cluster/ext-${key}.json", "metrics/ood.json"}
    for path in list(metrics) + ["metrics/dataset.json", "metrics/pretrain.json", "metrics/distill.json"]:
        declared = str(details_path(path)) if path in metrics else path
        assert outs[declared] == {}, declared  # cached: a cache: false output would cost the stage DVC's run cache
    for path in metrics:  # each details file beside its headline, in the same stage
        (stage,) = [s for s in stages.values() if path in stage_entries({"s": s}, "metrics")]
        assert str(details_path(path)) in stage_entries({"s": stage}, "outs")
    deps = stages["report"]["deps"]
    assert "metrics/ood_details.json" in deps and "metrics/ood.json" not in deps
    export = stages["export"]["do"]["deps"]
    assert {"metrics/probe/${item}_details.json", "metrics/probe/ref-pixels_details.json",
            "metrics/probe/ref-random_details.json"} <= set(export)


# metrics file -> (a record of its stage, the view that makes its headline)
RECORDS = {"metrics/probe/": (probe_record, probe_headline), "metrics/cluster/": (cluster_record, cluster_headline),
           "metrics/ood.json": (ood_record, ood_headline)}


def test_the_default_dvc_exp_show_has_under_60_metric_columns_probes_first(tmp_path):
    """The columns ``dvc exp show`` makes of the default pipeline's metrics files (scripts/exp_columns.py,
    checked here against DVC's own ``dvc exp show --json``), each file written by :func:`write_metrics`
    from a record of its stage (the fullest: every group, real labels, the default's protocols)."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    protocols = load_params(REPO / "params.yaml").probe.protocols
    files = exp_columns.declared_metrics(yaml.safe_load((REPO / "dvc.yaml").read_text()), params)
    for f in files:
        make, view = next(v for prefix, v in RECORDS.items() if f.startswith(prefix))
        rec = make(protocols) if make is probe_record else make()
        write_metrics(tmp_path / f, rec, view(rec))
    cols, _ = exp_columns.columns(exp_columns.workspace_rows(tmp_path))
    # directly: 4 probe files (f, g, the two reference rows) x (5 per protocol + kNN@1, @10),
    # 2 cluster files x (CHI, DBI), the OOD budget (selected, 3 groups, the Few share)
    assert params["external"] == {} and protocols == ["full", "few_shot"]
    assert files == ["metrics/probe/pretrain.json", "metrics/probe/distill.json", "metrics/probe/ref-pixels.json",
                     "metrics/probe/ref-random.json", "metrics/ood.json", "metrics/cluster/pretrain.json",
                     "metrics/cluster/distill.json"]
    assert len(cols) == 4 * (5 * len(protocols) + 2) + 2 * 2 + 5 == 57 < 60
    assert [name.split(":")[1] for _, name in cols[:12]] == [
        *(f"{p}.{k}" for p in protocols for k in GROUP_KEYS), "knn.k1", "knn.k10"]
    assert cols[0] == ("metrics/probe/pretrain.json", "metrics/probe/pretrain.json:full.many")
    # DVC itself: the same columns in the same order (a git + DVC project of these files)
    git = ["git", "-c", "user.email=ci@ltcl", "-c", "user.name=ci"]
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                [*git, "commit", "-qm", "metrics"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=tmp_path, check=True,
                           capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    workspace = [r for r in json.loads(shown.stdout) if r["rev"] == "workspace"]
    assert exp_columns.columns(workspace)[0] == cols

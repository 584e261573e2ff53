"""The KDUP stages (paper 003 Sec. 3) against their documented outputs, on tiny params."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
)

from conftest import copy_project
from ltcl.data.pool import open_pool
from ltcl.data.splits import load_manifest, load_split
from ltcl.io import load_checkpoint
from ltcl.models.checkpoint import load_encoder


def test_pool_matches_id_images(kdup_project):
    """ood-pool matches the pool to the ID images (their size and channels, read from the split),
    holds ood.pool_size images, is memory-mapped and its sidecar manifest describes this file."""
    p = kdup_project
    x_id, _ = load_split(p.path("data/lt"), "train")
    pool = open_pool(p.path("data/ood/pool.npy"))
    assert isinstance(pool, np.memmap)
    assert pool.shape[1:] == x_id.shape[1:] == tuple(load_manifest(p.path("data/lt"))["image_shape"])
    assert pool.dtype == x_id.dtype == np.uint8
    assert len(pool) == p.params()["ood"]["pool_size"]
    side = json.loads(p.path("data/ood/pool.json").read_text())
    assert side["sha256"] == hashlib.sha256(p.path("data/ood/pool.npy").read_bytes()).hexdigest()
    assert side["shape"] == list(pool.shape) and side["params"]["image_shape"] == list(x_id.shape[1:])


def test_ood_sampling_outputs(kdup_project):
    p = kdup_project
    sel = np.load(p.path("data/ood/selection.npz"))
    idx = sel["pool_indices"]
    assert len(idx) == 60 and len(np.unique(idx)) == 60 and idx.max() < 300  # no image twice
    assert sel["budgets"].sum() == 60
    assert np.array_equal(np.bincount(sel["cluster_of_each"], minlength=4), sel["budgets"])  # (so none < 0)
    m = json.loads(p.path("metrics/ood_details.json").read_text())  # the whole record (ltcl.headline)
    assert m["strategy"] == "kdup" and sum(m["budgets"]) == 60 and len(m["cluster_sizes"]) == 4
    # the update's seconds per step are in the run record, not the metrics
    assert "seconds" not in m
    secs = json.loads(p.path("runs/ood-sampling.json").read_text())["timings"]["seconds"]
    assert set(secs) == {"clustering", "tailness", "budget", "sampling", "embedding", "total"}
    assert secs["total"] >= secs["embedding"] and all(v >= 0 for v in secs.values())
    # the tailness diagnostics recomputed from the selection and the split's labels: Spearman of
    # sample tailness with rarity (minus the class's training count), and the budget share of the
    # clusters whose majority true class is a Few class
    manifest = load_manifest(p.path("data/lt"))
    _, y = load_split(p.path("data/lt"), "train")
    counts, groups = np.asarray(manifest["lt_counts"]), manifest["groups"]
    d = m["diagnostics"]
    rho = spearmanr(sel["sample_tailness"], -counts[y])[0]
    assert d["spearman_rarity"] == pytest.approx(rho, abs=1e-12)
    majority = [int(np.bincount(y[sel["id_clusters"] == k]).argmax()) for k in range(4)]
    few_budget = sum(int(b) for b, c in zip(sel["budgets"], majority) if groups[c] == "few")
    assert d["cluster_majority_class"] == majority and d["cluster_sizes"] == np.bincount(sel["id_clusters"]).tolist()
    assert d["few_budget_share"] == pytest.approx(few_budget / 60, abs=1e-12)
    # the headline (the DVC metric): the selected images, the budget per image per group, the Few share
    head = json.loads(p.path("metrics/ood.json").read_text())
    assert head == {"selected": 60, "budget_per_image": d["budget_per_image"],
                    "few_budget_share": d["few_budget_share"]}
    per_image = sel["budgets"][sel["id_clusters"]] / np.bincount(sel["id_clusters"])[sel["id_clusters"]] / (60 / len(y))
    for g in ("many", "medium", "few"):
        assert head["budget_per_image"][g] == pytest.approx(per_image[np.asarray(groups)[y] == g].mean(), abs=1e-12)
    warm = load_checkpoint(p.path("data/ood/warmup.pt"))
    assert warm["epoch"] == 1 and warm["sampler"]["rounds"] == 1 and warm["sampler"]["tailness"].shape == (sum(
        load_manifest(p.path("data/lt"))["lt_counts"]),)


def test_pretrain_resamples(kdup_project):
    m = json.loads(kdup_project.path("metrics/pretrain.json").read_text())
    assert m["method"] == "psd" and m["ood_strategy"] == "kdup"
    assert m["start_epoch"] == 1 and m["epochs"] == 2  # continues from the warm-up
    assert m["ood_images"] == 60 and m["ood_updates"] == 1  # interval 1: one re-sampling at epoch 2
    assert m["ood_update_history"][0]["epoch"] == 2


def test_distill_outputs_and_frozen_teacher(kdup_project, tmp_path, monkeypatch):
    """distill (rerun on a copy, without its resume checkpoint) leaves the teacher file byte for
    byte as pretrain wrote it, trains a student that is a separate copy of f while f's weights
    and BN statistics stay put, and reports the neighbour precision of f's own neighbours."""
    import ltcl.pipeline.distill as distill_mod

    p = copy_project(kdup_project, tmp_path / "p")
    assert not p.path("data/checkpoints/distill.pt").exists()  # spent: the finished stage removed it
    teacher_files = {rel: hashlib.sha256(p.path(rel).read_bytes()).hexdigest()
                     for rel in ("data/models/pretrain.pt", "data/models/pretrain.pt.sha256")}
    seen = {}
    real = distill_mod.run_session

    def spy(method, *args, **kwargs):
        t, s = method.teacher, method.model
        shared = {q.data_ptr() for q in t.parameters()} & {q.data_ptr() for q in s.parameters()}
        seen.update(separate=t is not s and not shared, frozen=not any(q.requires_grad for q in t.parameters()))
        before = {k: v.clone() for k, v in t.state_dict().items()}
        out = real(method, *args, **kwargs)
        seen["unchanged"] = all(torch.equal(v, before[k]) for k, v in t.state_dict().items())
        return out

    monkeypatch.setattr(distill_mod, "run_session", spy)
    p.stage("distill.py")
    assert seen == {"separate": True, "frozen": True, "unchanged": True}
    assert {rel: hashlib.sha256(p.path(rel).read_bytes()).hexdigest() for rel in teacher_files} == teacher_files
    f, spec, _ = load_encoder(p.path("data/models/pretrain.pt"))
    g, _, ck = load_encoder(p.path("data/models/distill.pt"))
    assert ck["distilled"] is True
    changed = [not torch.equal(a, b) for a, b in zip(f.state_dict().values(), g.state_dict().values())]
    assert any(changed)
    m = json.loads(p.path("metrics/distill.json").read_text())
    assert m["enabled"] and m["epochs"] == 1
    # neighbour precision: how often f's k_kd nearest neighbours (cosine of its projections, self
    # excluded) share the anchor's true class, recomputed here
    x, y = load_split(p.path("data/lt"), "train")
    mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        z = f.eval()((torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float() / 255 - mean) / std)[1]
    z = torch.nn.functional.normalize(z.double(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-math.inf)
    k = p.params()["distill"]["kdup"]["k_kd"]
    nb = sim.topk(k, dim=1).indices.numpy()
    assert m["neighbour_precision"] == pytest.approx(np.mean(y[nb] == y[:, None]), abs=1.5 / (len(y) * k))


def test_cluster_probe_and_report(kdup_project):
    p = kdup_project  # linear-probe of f and g: run (and checked to succeed) by the fixture
    for enc in ("pretrain", "distill"):
        p.stage("cluster.py", enc)
        c = json.loads(p.path(f"metrics/cluster/{enc}_details.json").read_text())  # the whole record
        assert json.loads(p.path(f"metrics/cluster/{enc}.json").read_text()) == {"chi": c["chi"], "dbi": c["dbi"]}
        # the metrics of this encoder's backbone features of the test split with its true labels
        # (CHI / DBI) and of k-means with k = number of classes against them (NMI / ARI)
        model, spec, _ = load_encoder(p.path(f"data/models/{enc}.pt"))
        x, y = load_split(p.path("data/lt"), "test")
        mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(spec["std"]).view(1, -1, 1, 1)
        with torch.no_grad():
            h = model.eval().features((torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float() / 255 - mean) / std)
        h = h.double().numpy()
        if p.params()["cluster"]["l2_normalize"]:
            h /= np.linalg.norm(h, axis=1, keepdims=True)
        assert c["chi"] == pytest.approx(calinski_harabasz_score(h, y), rel=1e-4)
        assert c["dbi"] == pytest.approx(davies_bouldin_score(h, y), rel=1e-4)
        km = KMeans(n_clusters=10, n_init=10, random_state=p.params()["cluster"]["seed"]).fit_predict(h)
        assert c["nmi"] == pytest.approx(normalized_mutual_info_score(y, km), abs=1e-6)
        assert c["ari"] == pytest.approx(adjusted_rand_score(y, km), abs=1e-6)
        assert "intra_alignment.few" in c["geometry"]
        tsne = p.path(f"metrics/cluster/{enc}_tsne.csv").read_text().splitlines()
        assert tsne[0] == "x,y,label,group" and len(tsne) == 101
    p.stage("report.py")
    page = p.path("report/index.html").read_text()
    for needle in ("f (pre-trained)", "g (distilled)", "OOD sampling", "OOD budget", "Cluster quality",
                   "CHI", "DBI", "Spearman"):
        assert needle in page, needle
    # the Parameters section: the params the stages read, as dvc.yaml's report stage lists them (issue
    # 22): psd's own subsection, not another method's; kdup's strategy keys, not COLT's
    import html as html_mod

    import yaml

    text = html_mod.unescape(page.split("<h2>Parameters</h2>", 1)[1].split("<pre>", 1)[1].split("</pre>", 1)[0])
    shown = yaml.safe_load(text)
    params = p.params()
    assert shown["pretrain"]["psd"] == params["pretrain"]["psd"] and shown["probe"] == params["probe"]
    assert not {"gml", "tase", "ts"} & set(shown["pretrain"]) and "colt" not in shown["ood"]
    assert "gml" not in shown["distill"] and shown["distill"]["kdup"] == params["distill"]["kdup"]
    assert f"pretrain.seed {params['pretrain']['seed']}" in page


MAK_TINY = {"views": 3, "rebatch": 2, "batch": 64, "clusters": 4}  # the tiny pool holds 300 images


@pytest.mark.parametrize("strategy", ["colt", "random", "augment", "mak", "none"])
def test_other_strategies(lt_project, built_project, tmp_path, strategy):
    if strategy == "none":  # the tiny params' own strategy: built_project ran exactly these stages
        project = built_project
    else:  # make-lt-dataset and ood-pool (which ignore ood.strategy) from the shared project
        ood = {"strategy": strategy, **({"mak": MAK_TINY} if strategy == "mak" else {})}
        project = copy_project(lt_project, tmp_path / "p", {"ood": ood, "pretrain": {"epochs": 2}})
        for script in ("ood_sampling.py", "pretrain.py"):
            project.stage(script)
    assert project.params()["ood"]["strategy"] == strategy and project.params()["pretrain"]["epochs"] == 2
    m = json.loads(project.path("metrics/ood_details.json").read_text())
    assert m["strategy"] == strategy
    pre = json.loads(project.path("metrics/pretrain.json").read_text())
    assert pre["ood_images"] == (0 if strategy == "none" else 60)
    assert pre["start_epoch"] == (0 if strategy in ("none", "mak") else 1)  # MAK retrains from epoch 0
    if strategy in ("colt", "augment"):
        assert sum(m["budgets"]) == 60
    if strategy == "mak":  # one selection, no re-sampling; the label-free summary of its scores
        assert pre["ood_updates"] == 0 and m["selected"] == 60 and m["pool_scores"]["core"] == 90
        from ltcl.report.html import ood_section  # the report's account of MAK's scores, from this record

        html_part, md = ood_section(project.root, load_manifest(project.path("data/lt")))
        sc = m["pool_scores"]
        assert ("MAK kept the 90 pool images" in md and f"{sc['ecle_selected_mean']:.3f} selected vs "
                f"{sc['ecle_pool_mean']:.3f}" in md and "gives no per-cluster budgets" in md)


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

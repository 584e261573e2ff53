"""Issue 21 part 4: the OOD updates' diagnostics as pictures that need no labels, and no label
diagnostics without real labels.

The pictures' file (data/ood/diagnostics.npz, data/ood/pretrain_diagnostics.npz) is checked
against direct numpy computations: the ID thumbnails are the members nearest each centroid of
the sampler's own embeddings, the OOD thumbnails the pool rows the selection took for the
cluster, the histogram numpy's.  Without real labels (manifest ``labels.train`` false) nothing
label-derived is computed, stored or printed, while the grids and histograms are drawn."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

import ltcl.sampling.refresh as refresh
from conftest import copy_project
from ltcl.data.splits import load_manifest, load_split
from ltcl.io import load_checkpoint, sha256_file
from ltcl.models.checkpoint import build_from_spec
from ltcl.params import OODParams
from ltcl.report import plots
from ltcl.sampling.select import tailness_diagnostics
from ltcl.sampling.selection_io import sample_groups, selection_metrics
from ltcl.sampling.update_file import keep_first_and_last, load_updates, save_updates
from ltcl.sampling.update_pictures import (
    THUMB_MAX_SIDE,
    THUMBNAILS,
    TAILNESS_BINS,
    record_from_state,
    record_state,
    thumbnails,
    update_record,
)

LABEL_KEYS = ("spearman", "few_budget_share", "majority", "purity", "budget_per_image", "n_few_clusters")
UNLABELED = {"labels": {"train": False, "eval": False, "note": "an unlabeled collection"}, "groups": None,
             "lt_counts": None, "class_names": []}


def label_keys(obj) -> list[str]:
    """Every key (at any depth) of a metrics object that names a label-derived diagnostic."""
    if isinstance(obj, dict):
        return [k for k in obj if any(s in k for s in LABEL_KEYS)] + [x for v in obj.values() for x in label_keys(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in label_keys(v)]
    return []


def _unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _problem(tmp_path):
    """Synthetic ID / pool embeddings (blobs of 60, 30, 20, 10 ID images), their images as uint8
    NHWC (gray, 6x6) and the pool as the memory-mapped .npy file ood-pool writes."""
    rng = np.random.default_rng(3)
    means = _unit(rng, 4, 8)
    z = np.concatenate([means[c] + 0.3 * rng.standard_normal((n, 8)) for c, n in enumerate([60, 30, 20, 10])])
    z = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
    pool_z = _unit(rng, 200, 8)
    x_id = rng.integers(0, 256, (len(z), 6, 6, 1), dtype=np.uint8)
    np.save(tmp_path / "pool.npy", rng.integers(0, 256, (200, 6, 6, 1), dtype=np.uint8))
    return z, pool_z, torch.from_numpy(x_id), np.load(tmp_path / "pool.npy", mmap_mode="r")


def _update(monkeypatch, strategy, z, pool_z, x_id, pool):
    """One update of the real sampler (OODSampler.update) whose encoder is replaced by the fixed
    embeddings: ``z`` for the ID images, ``pool_z`` for the pool."""
    def fake_embed(model, images, *args):
        return z if images is x_id else pool_z

    monkeypatch.setattr(refresh, "embed_images", fake_embed)
    cfg = OODParams(strategy=strategy, clusters=4, budget=40, knn_k=5, colt={"topk": 5}, cluster_max_iter=20,
                    pool_size=200)
    sampler = refresh.OODSampler(cfg=cfg, pool=pool, id_images=x_id, mean=[0.5], std=[0.25], batch_size=32)
    return sampler.update(None, None)


def nearest_members(z, clusters, centroids, n):
    """Per cluster, its members sorted by float64 L2 distance to the centroid (ties by row), first n."""
    out = []
    for k, c in enumerate(np.asarray(centroids, dtype=np.float64)):
        m = np.flatnonzero(clusters == k)
        d = ((z[m].astype(np.float64) - c) ** 2).sum(axis=1)
        out.append(m[np.argsort(d, kind="stable")][:n])
    return out


def check_rows(rows, thumbs, want, images):
    """``rows`` (-1 padded) hold exactly ``want`` and ``thumbs`` the images of those rows, blank after."""
    assert rows[: len(want)].tolist() == list(want) and (rows[len(want):] == -1).all()
    np.testing.assert_array_equal(thumbs[: len(want)], np.asarray(images)[np.asarray(want, dtype=np.int64)])
    assert (thumbs[len(want):] == 0).all()


# --------------------------------------------------------------------------- the file, per strategy
@pytest.mark.parametrize("strategy", ["kdup", "colt", "augment"])
def test_thumbnails_are_the_rows_nearest_each_centre_and_the_selection(tmp_path, monkeypatch, strategy):
    z, pool_z, x_id, pool = _problem(tmp_path)
    sel = _update(monkeypatch, strategy, z, pool_z, x_id, pool)
    save_updates(tmp_path / "d.npz", [update_record(sel, x_id, pool, 3, "backbone")])
    (rec,) = load_updates(tmp_path / "d.npz")
    assert rec["strategy"] == strategy and rec["epoch"] == 3 and rec["space"] == "backbone"
    np.testing.assert_array_equal(rec["centroids"], sel.centroids)
    np.testing.assert_array_equal(rec["budgets"], sel.budgets)
    np.testing.assert_array_equal(rec["cluster_sizes"], np.bincount(sel.id_labels, minlength=4))
    np.testing.assert_array_equal(rec["cluster_tailness"], sel.cluster_tailness.numpy())
    # ID side: the members of each cluster nearest its centroid, in the sampler's embedding space
    for k, want in enumerate(nearest_members(z, sel.id_labels, sel.centroids, THUMBNAILS)):
        check_rows(rec["id_rows"][k], rec["id_thumbs"][k], want, x_id.numpy())
    # right side: what the update selected for the cluster, ranked as the strategy ranked it
    for k in range(4):
        if strategy == "augment":  # the first ID rows of the seeded draw for cluster k
            want = sel.id_indices[sel.cluster_of_each == k][:THUMBNAILS]
            check_rows(rec["extra_rows"][k], rec["extra_thumbs"][k], want, x_id.numpy())
            assert rec["extra_kind"] == "id copies"
            continue
        taken = sel.pool_indices[sel.cluster_of_each == k]
        d = ((pool_z[taken].astype(np.float64) - sel.centroids[k]) ** 2).sum(axis=1)
        want = taken[np.argsort(d, kind="stable")][:THUMBNAILS]  # the cluster's selection, nearest first
        check_rows(rec["extra_rows"][k], rec["extra_thumbs"][k], want, pool)
        assert rec["extra_kind"] == "pool"
    # the tailness histogram: numpy's, one series without groups
    t = sel.sample_tailness.numpy().astype(np.float64)
    counts, edges = np.histogram(t, bins=TAILNESS_BINS, range=(t.min(), t.max()))
    np.testing.assert_allclose(rec["tailness_edges"], edges, rtol=1e-12)
    np.testing.assert_array_equal(rec["tailness_counts"], counts[None])
    assert rec["tailness_groups"].tolist() == ["all"]
    # byte-stable: the same update written again gives the same bytes (no timings inside)
    save_updates(tmp_path / "again.npz", [update_record(sel, x_id, pool, 3, "backbone")])
    assert sha256_file(tmp_path / "d.npz") == sha256_file(tmp_path / "again.npz")


def test_random_strategy_shows_the_draw_and_no_clusters(tmp_path, monkeypatch):
    z, pool_z, x_id, pool = _problem(tmp_path)
    sel = _update(monkeypatch, "random", z, pool_z, x_id, pool)
    rec = update_record(sel, x_id, pool, 1, "backbone")
    assert not {"id_thumbs", "id_rows", "centroids", "budgets", "tailness_counts"} & set(rec)
    assert rec["cluster_ids"].tolist() == [-1, -1]
    for r in range(2):
        want = sel.pool_indices[r * THUMBNAILS: (r + 1) * THUMBNAILS]
        check_rows(rec["extra_rows"][r], rec["extra_thumbs"][r], want, pool)


def test_histogram_by_group_only_from_real_labels(tmp_path, monkeypatch):
    z, pool_z, x_id, pool = _problem(tmp_path)
    sel = _update(monkeypatch, "kdup", z, pool_z, x_id, pool)
    y = np.repeat([0, 1, 2, 3], [60, 30, 20, 10])
    labeled = {"labels": {"train": True, "eval": True, "note": ""}, "groups": ["many", "medium", "few", "few"],
               "lt_counts": [60, 30, 20, 10]}
    rec = update_record(sel, x_id, pool, 1, "backbone", sample_groups(labeled, y))
    t = sel.sample_tailness.numpy().astype(np.float64)
    edges = np.linspace(t.min(), t.max(), TAILNESS_BINS + 1)
    assert rec["tailness_groups"].tolist() == ["many", "medium", "few"]
    for g, c in zip(["many", "medium", "few"], rec["tailness_counts"]):
        np.testing.assert_array_equal(c, np.histogram(t[np.asarray(labeled["groups"])[y] == g], bins=edges)[0])
    # placeholder labels (-1) and a manifest without groups give no groups at all
    assert sample_groups(UNLABELED, np.full(len(y), -1)) is None
    assert sample_groups({**labeled, "groups": None}, y) is None
    assert sample_groups({"groups": labeled["groups"], "lt_counts": [1] * 4}, y) is not None  # no `labels`: real


def test_large_images_are_shrunk_with_pil(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 100, 80, 3), dtype=np.uint8)
    got = thumbnails(imgs, np.array([[2, -1], [0, 2]]))
    size = (round(80 * THUMB_MAX_SIDE / 100), THUMB_MAX_SIDE)
    want = [np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BOX)) for im in imgs]
    assert got.shape == (2, 2, THUMB_MAX_SIDE, size[0], 3)
    np.testing.assert_array_equal(got[0, 0], want[2])
    np.testing.assert_array_equal(got[1, 0], want[0])
    assert (got[0, 1] == 0).all()


def test_pretrain_keeps_the_first_and_last_grids_and_resumes_them(tmp_path, monkeypatch):
    z, pool_z, x_id, pool = _problem(tmp_path)
    sel = _update(monkeypatch, "kdup", z, pool_z, x_id, pool)
    recs = [update_record(sel, x_id, pool, e, "backbone") for e in (2, 3, 4)]
    kept = keep_first_and_last(recs)
    assert [("id_thumbs" in r, "extra_thumbs" in r, "tailness_counts" in r) for r in kept] == [
        (True, True, True), (False, False, True), (True, True, True)]
    back = record_from_state(record_state(recs[1]))
    assert set(back) == set(recs[1]) and all(np.array_equal(back[k], np.asarray(v)) for k, v in recs[1].items())


def test_mosaic_is_the_thumbnails_pixel_for_pixel_and_gray_as_gray():
    rng = np.random.default_rng(1)
    left = rng.integers(0, 256, (2, 3, 5, 4, 1), dtype=np.uint8)
    right = rng.integers(0, 256, (2, 2, 5, 4, 1), dtype=np.uint8)
    lrows, rrows = np.array([[0, 1, 2], [3, -1, -1]]), np.array([[5, 6], [7, -1]])
    mos = plots.thumbnail_mosaic(left, lrows, right, rrows)
    p = plots.GRID_PAD
    ch, cw = 5 + p, 4 + p
    assert mos.shape == (2 * ch + p, (3 + 1 + 2) * cw + p, 3)
    for r in range(2):
        for col, (block, rows, j) in enumerate([(left, lrows, j) for j in range(3)] + [(None, None, None)]
                                               + [(right, rrows, j) for j in range(2)]):
            cell = mos[r * ch + p: r * ch + p + 5, col * cw + p: col * cw + p + 4]
            if block is None or rows[r, j] < 0:
                assert (cell == 255).all()  # the gap and empty cells stay white
            else:
                assert all(np.array_equal(cell[..., i], block[r, j, ..., 0]) for i in range(3))


# --------------------------------------------------------------------------- label diagnostics gated
def test_selection_metrics_without_real_labels_hold_no_label_number(tmp_path, monkeypatch):
    z, pool_z, x_id, pool = _problem(tmp_path)
    sel = _update(monkeypatch, "kdup", z, pool_z, x_id, pool)
    out = selection_metrics(sel, UNLABELED, np.full(len(z), -1))
    assert out["diagnostics"] == {"absent": "the training images have no labels (labels.train is false in the "
                                            "split manifest)"}
    assert label_keys(out) == []
    assert out["budgets"] == sel.budgets.tolist() and sum(out["cluster_sizes"]) == len(z)  # label-free stay
    no_groups = selection_metrics(sel, {"labels": {"train": True, "eval": True, "note": ""}, "groups": None,
                                        "lt_counts": [60, 30, 20, 10]}, np.repeat([0, 1, 2, 3], [60, 30, 20, 10]))
    assert "absent" in no_groups["diagnostics"] and label_keys(no_groups) == []
    # real labels (a manifest of before this change: no `labels` key): today's diagnostics
    y = np.repeat([0, 1, 2, 3], [60, 30, 20, 10])
    groups = ["many", "medium", "few", "few"]
    d = selection_metrics(sel, {"groups": groups, "lt_counts": [60, 30, 20, 10]}, y)["diagnostics"]
    rho = spearmanr(sel.sample_tailness.numpy(), -np.array([60, 30, 20, 10])[y])[0]
    assert d["spearman_rarity"] == pytest.approx(rho)
    want = tailness_diagnostics(sel.sample_tailness, y, [60, 30, 20, 10], sel.id_labels, sel.budgets, [2, 3], groups)
    assert json.dumps({k: v for k, v in d.items() if k != "cluster_majority_group"}, sort_keys=True) == json.dumps(
        want, sort_keys=True)
    assert d["cluster_majority_group"] == [groups[c] for c in want["cluster_majority_class"]]


# --------------------------------------------------------------------------- the stages and the report
def _as_unlabeled(proj):
    """Rewrite the project's split as an unlabeled collection (docs/data-manifest.md): labels.train
    false, every training label -1, no groups or counts; the file hashes updated."""
    lt = proj.path("data/lt")
    m = json.loads((lt / "manifest.json").read_text())
    y = np.load(lt / "train_y.npy")
    np.save(lt / "train_y.npy", np.full_like(y, -1))
    m["files"]["train_y.npy"] = sha256_file(lt / "train_y.npy")
    m.update(labels=UNLABELED["labels"], groups=None, group_counts=None, group_source=None, lt_counts=None)
    (lt / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def unlabeled(lt_project, tmp_path_factory):
    p = copy_project(lt_project, tmp_path_factory.mktemp("unlab") / "p",
                     {"ood": {"strategy": "kdup"}, "pretrain": {"epochs": 4}})
    _as_unlabeled(p)
    keep = pytest.MonkeyPatch()
    keep.setenv("LTCL_KEEP_CHECKPOINTS", "1")  # the test reads pretrain's last selection from its resume state
    try:
        for script in ("ood_sampling.py", "pretrain.py", "report.py"):
            p.stage(script)
    finally:
        keep.undo()
    return p


def _embed_like_the_sampler(p, x):
    """The ID images through the warm-up encoder, L2-normalised backbone features (ood.embedding
    backbone), computed here in torch."""
    warm = load_checkpoint(p.path("data/ood/warmup.pt"))
    model = build_from_spec(warm["spec"])
    model.load_state_dict(warm["model"])
    mean = torch.tensor(warm["spec"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(warm["spec"]["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        h = model.eval().features((torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float() / 255 - mean) / std)
    return torch.nn.functional.normalize(h, dim=1).double().numpy()


def _images(page: str, alt_start: str) -> list[Image.Image]:
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="' + re.escape(alt_start), page)
    return [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]


def test_unlabeled_run_pictures_equal_direct_computations(unlabeled):
    p = unlabeled
    assert p.params()["ood"]["embedding"] == "backbone"
    x, _ = load_split(p.path("data/lt"), "train")
    pool = np.load(p.path("data/ood/pool.npy"))
    sel = np.load(p.path("data/ood/selection.npz"))
    (rec,) = load_updates(p.path("data/ood/diagnostics.npz"))
    z = _embed_like_the_sampler(p, x)
    # the file's centroids are the sampler's: the recomputed embeddings fall in the selection's clusters
    d2 = ((z[:, None, :] - rec["centroids"].astype(np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(d2.argmin(1), sel["id_clusters"])
    for k, want in enumerate(nearest_members(z, sel["id_clusters"], rec["centroids"], THUMBNAILS)):
        check_rows(rec["id_rows"][k], rec["id_thumbs"][k], want, x)
        taken = sel["pool_indices"][sel["cluster_of_each"] == k][:THUMBNAILS]  # saved nearest first
        check_rows(rec["extra_rows"][k], rec["extra_thumbs"][k], taken, pool)
    assert rec["tailness_groups"].tolist() == ["all"]
    # pretrain's updates (epochs 2 and 3): both kept; the last one's OOD rows are its selection's
    later = load_updates(p.path("data/ood/pretrain_diagnostics.npz"))
    assert [r["epoch"] for r in later] == [2, 3] and all("extra_thumbs" in r for r in later)
    last = load_checkpoint(p.path("data/checkpoints/pretrain.pt"))["extra"]["selection"]
    for k in range(len(later[-1]["budgets"])):
        taken = last["pool_indices"].numpy()[last["cluster_of_each"].numpy() == k][:THUMBNAILS]
        check_rows(later[-1]["extra_rows"][k], later[-1]["extra_thumbs"][k], taken, pool)


def test_unlabeled_run_prints_no_label_number_and_draws_the_pictures(unlabeled):
    p = unlabeled
    ood = json.loads(p.path("metrics/ood_details.json").read_text())  # the whole record (ltcl.headline)
    pre = json.loads(p.path("metrics/pretrain.json").read_text())
    assert "absent" in ood["diagnostics"] and label_keys(ood) == [] and label_keys(pre) == []
    assert json.loads(p.path("metrics/ood.json").read_text()) == {"selected": ood["selected"]}  # the headline
    assert all(u["diagnostics"] == ood["diagnostics"] for u in pre["ood_update_history"])
    page = p.path("report/index.html").read_text()
    md = p.path("report/report.md").read_text()
    for text in (page, md):
        for needle in ("Spearman", "Few-majority", "majority class", "purity"):
            assert needle not in text.replace("majority class and purity) are absent", ""), needle
    assert "are absent: the training images have no labels" in page
    grids = _images(page, "thumbnail grid, ")
    hists = _images(page, "tailness histogram, ")
    assert len(grids) == 3 and len(hists) == 3  # the first update, then pretrain's two
    k = p.params()["ood"]["clusters"]
    assert all(g.size[1] > 2 * k * 8 and g.size[0] > 2 * THUMBNAILS * 8 for g in grids)  # k rows of 2 x 8 cells
    assert "pretrain re-sampled 2 times (at the start of epochs 2, 3); the pictures of each update follow." in page


def test_labeled_run_keeps_todays_diagnostics_and_adds_pictures(lt_project, tmp_path):
    p = copy_project(lt_project, tmp_path / "p", {"ood": {"strategy": "kdup"}, "pretrain": {"epochs": 2}})
    for script in ("ood_sampling.py", "pretrain.py", "report.py"):
        p.stage(script)
    m = json.loads(p.path("metrics/ood_details.json").read_text())
    sel = np.load(p.path("data/ood/selection.npz"))
    manifest = load_manifest(p.path("data/lt"))
    _, y = load_split(p.path("data/lt"), "train")
    counts, groups = np.asarray(manifest["lt_counts"]), manifest["groups"]
    assert m["diagnostics"]["spearman_rarity"] == pytest.approx(spearmanr(sel["sample_tailness"], -counts[y])[0])
    (rec,) = load_updates(p.path("data/ood/diagnostics.npz"))
    t = sel["sample_tailness"].astype(np.float64)
    edges = np.linspace(t.min(), t.max(), TAILNESS_BINS + 1)
    names = [g for g in ("many", "medium", "few") if g in groups]
    assert rec["tailness_groups"].tolist() == names
    for g, c in zip(names, rec["tailness_counts"]):
        np.testing.assert_array_equal(c, np.histogram(t[np.asarray(groups)[y] == g], bins=edges)[0])
    page = p.path("report/index.html").read_text()
    assert "Spearman" in page and "majority class" in page
    assert len(_images(page, "thumbnail grid, ")) == 1 and len(_images(page, "tailness histogram, ")) == 1
    assert load_updates(p.path("data/ood/pretrain_diagnostics.npz")) == []  # 2 epochs: no re-sampling
    first = hashlib.sha256(p.path("data/ood/diagnostics.npz").read_bytes()).hexdigest()
    assert not p.path("data/checkpoints/ood-warmup.pt").exists()  # spent: the stage removed it
    p.stage("ood_sampling.py")  # rerun from scratch: the same bytes
    assert hashlib.sha256(p.path("data/ood/diagnostics.npz").read_bytes()).hexdigest() == first


def test_pretrain_pictures_survive_a_resume_byte_for_byte(lt_project, tmp_path, monkeypatch):
    """pretrain stopped in its fifth epoch (index 4, after the update that starts it) and rerun,
    resuming from its checkpoint after four epochs, writes the same pictures file as an
    uninterrupted run: the updates at epochs 2 and 3 come from the checkpoint."""
    import ltcl.train.loop as loop

    params = {"ood": {"strategy": "kdup"}, "pretrain": {"epochs": 5, "checkpoint_every": 1}}
    ref = copy_project(lt_project, tmp_path / "ref", params)
    for script in ("ood_sampling.py", "pretrain.py"):
        ref.stage(script)
    want = sha256_file(ref.path("data/ood/pretrain_diagnostics.npz"))
    assert [r["epoch"] for r in load_updates(ref.path("data/ood/pretrain_diagnostics.npz"))] == [2, 3, 4]
    p = copy_project(lt_project, tmp_path / "p", params)
    p.stage("ood_sampling.py")
    real = loop.run_epoch

    def stop_at_4(method, optimizer, cfg, runtime, epoch, *a, **kw):
        if epoch == 4:
            raise RuntimeError("stopped")
        return real(method, optimizer, cfg, runtime, epoch, *a, **kw)

    monkeypatch.setattr(loop, "run_epoch", stop_at_4)
    assert p.stage("pretrain.py", check=False).returncode != 0
    assert not p.path("data/ood/pretrain_diagnostics.npz").exists()
    monkeypatch.setattr(loop, "run_epoch", real)
    out = p.stage("pretrain.py")
    assert "resuming from data/checkpoints/pretrain.pt after epoch 4" in out.stderr
    assert sha256_file(p.path("data/ood/pretrain_diagnostics.npz")) == want

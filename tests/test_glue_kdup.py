"""KDUP's glue (paper 003 Sec. 3.1-3.2): each step and stage wires the verified pieces together
as configured.  Every expected value is recomputed here, independently of the code under test:
losses from the verified functions of ``ltcl.losses.kdup`` on embeddings taken by a direct
forward of g and f, neighbours and farthest clusters from f's embeddings and the centroids,
refresh epochs from the params, the training set from the pool file and the selections."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import copy_project, fake_encoder
from ltcl.losses.kdup import guided_contrastive_loss, similarity_distillation_loss
from ltcl.methods.base import TrainSet
from ltcl.methods.distill.guided import GuidedDistillation
from ltcl.models.checkpoint import load_encoder
from ltcl.params import Params
from ltcl.runtime import Runtime
from ltcl.sampling import refresh
from ltcl.models.features import embed_images
from ltcl.sampling.refresh import OODSampler
from ltcl.sampling.select import OODSelection
from ltcl.sampling.strategies import augment as augment_strategy
from ltcl.train import loop
from ltcl.train.session import load_train_split, new_encoder

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=True)


# --------------------------------------------------------------------------- helpers
def normalised_nchw(x_uint8, mean, std) -> torch.Tensor:
    """(x / 255 - mean) / std as float NCHW, written out here (the eval transform)."""
    x = torch.as_tensor(np.array(x_uint8)).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


@torch.no_grad()
def direct_embeddings(model, x_uint8, mean, std, space: str) -> torch.Tensor:
    """L2-normalised h (backbone) or z (projection) of one eval-mode forward of the whole set."""
    was = model.training
    model.eval()
    h, z = model(normalised_nchw(x_uint8, mean, std))
    model.train(was)
    return F.normalize((h if space == "backbone" else z).float(), dim=1)


def farthest_nonempty(centroids, labels) -> np.ndarray:
    """For each cluster, the non-empty cluster whose centroid is farthest (L2), by a double loop."""
    c = np.asarray(centroids, dtype=np.float64)
    members = set(np.asarray(labels).tolist())
    out = []
    for a in range(len(c)):
        best, best_d = -1, -1.0
        for b in range(len(c)):
            if b in members:
                d = float(np.sqrt(((c[a] - c[b]) ** 2).sum()))
                if d > best_d:
                    best, best_d = b, d
        out.append(best)
    return np.asarray(out)


def rows_of(images: torch.Tensor, table: torch.Tensor) -> list[int]:
    """Index in ``table`` of each image of ``images`` (the images of ``table`` are unique)."""
    flat_t = table.reshape(len(table), -1)
    out = []
    for im in images.reshape(len(images), -1):
        hits = torch.nonzero((flat_t == im).all(1)).flatten().tolist()
        assert len(hits) == 1, hits
        out.append(hits[0])
    return out


class RecordingAugment(nn.Module):
    """Normalise, then add seeded noise (each call a fresh view); keeps every call's input and output."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.full((1, 1, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 1, 1, 1), 0.25))
        self.gen = torch.Generator().manual_seed(123)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        v = v + 0.3 * torch.randn(v.shape, generator=self.gen)
        self.calls.append((x.clone(), v.clone()))
        return v


# --------------------------------------------------------------------------- 1. guided distillation
# 40 unique images in 4 non-empty clusters; cluster 4 is empty and is the farthest cluster of
# clusters 0, 1 and 3 (on a line: 0, 1, 5, 2, 9), so their negatives come from the fallback:
# the farthest non-empty cluster (2); cluster 2's farthest is cluster 0.
CLUSTERS = np.array([0] * 12 + [1] * 10 + [2] * 10 + [3] * 8)
CENTROIDS = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [2.0, 0.0], [9.0, 0.0]])
BETA = 0.7


def distill_setup(centroids=CENTROIDS, **distill):
    torch.manual_seed(0)
    params = Params.model_validate({"model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
                                    "distill": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0,
                                                "kdup": {"beta": BETA, "k_kd": 3, **distill}}})
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 8, 8, 1), dtype=np.uint8)
    assert len(np.unique(x.reshape(40, -1), axis=0)) == 40
    teacher, _ = new_encoder(params.model, x, CPU)
    student = copy.deepcopy(teacher)
    with torch.no_grad():  # g != f, so that L_DL is far from 0
        for p in student.parameters():
            p.add_(0.5 * p.std().nan_to_num(0.1) * torch.randn_like(p))
    student.eval()  # BN on running statistics: each row's embedding is independent of the batch
    data = TrainSet.from_numpy(x, np.zeros(40, dtype=np.int64), 1, CPU.device)
    neighbours = np.stack([rng.choice(np.delete(np.arange(40), i), 3, replace=False) for i in range(40)])
    aug = RecordingAugment()
    m = GuidedDistillation(student, data, params.distill, CPU, aug, teacher=teacher, neighbours=neighbours,
                           clusters=CLUSTERS, centroids=centroids)
    return m, params.distill, teacher, neighbours, aug


@pytest.mark.parametrize("sampling,weighting", [(True, True), (True, False), (False, True), (False, False)])
def test_guided_step_loss_and_pairs(sampling, weighting):
    """One training_step: its positives / negatives are what Table 6's switches say, and its loss
    is L_GCL + beta L_DL (Eq. 11-13) of g's and f's projections of the very views it used, with
    f's cosine similarities as weights (all weights 1 without guided weighting)."""
    m, cfg, teacher, neighbours, aug = distill_setup(guided_sampling=sampling, guided_weighting=weighting)
    g_ref = copy.deepcopy(m.model)
    idx = torch.tensor([0, 3, 5, 11, 12, 14, 20, 21, 22, 25, 27, 30, 31, 33, 36, 39])
    b = len(idx)
    out = m.training_step(idx)
    assert len(aug.calls) == 1, "one augmented batch of anchors, positives and negatives"
    raw, views = aug.calls[0]
    assert raw.shape[0] == 3 * b
    rows = rows_of(raw, m.data.x)
    anchor, pos, neg = rows[:b], rows[b:2 * b], rows[2 * b:]
    assert anchor == idx.tolist()
    if sampling:  # positive: one of f's K_kd neighbours; negative: in the farthest non-empty cluster
        far = farthest_nonempty(CENTROIDS, CLUSTERS)
        assert far.tolist()[:4] == [2, 2, 0, 2]  # (cluster 4 has no anchors)
        for a, p, n in zip(anchor, pos, neg):
            assert p in neighbours[a].tolist(), (a, p)
            assert CLUSTERS[n] == far[CLUSTERS[a]], (a, n)
    else:  # typical loss: another view of the anchor, a random other member of the batch
        assert pos == anchor
        assert not torch.equal(views[:b], views[b:2 * b])  # a different view, not a copy
        for a, n in zip(anchor, neg):
            assert n in anchor and n != a, (a, n)

    with torch.no_grad():
        y = g_ref(views)[1].float()
        z = teacher(views)[1].float()
    ya, yp, yn = y[:b], y[b:2 * b], y[2 * b:]
    za, zp, zn = z[:b], z[b:2 * b], z[2 * b:]
    gcl = guided_contrastive_loss(ya, yp, yn, za, zp, zn, weighted=weighting)
    dl = similarity_distillation_loss(ya, za)
    assert float(dl) > 1e-3 and abs(float(gcl - guided_contrastive_loss(ya, yp, yn, za, zp, zn,
                                                                       weighted=not weighting))) > 1e-3
    expected = gcl + cfg.kdup.beta * dl
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert out.parts["gcl"] == pytest.approx(gcl.item(), rel=1e-5, abs=1e-6)
    assert out.parts["dl"] == pytest.approx(dl.item(), rel=1e-5, abs=1e-6)
    assert out.images == 3 * b
    # the loss reaches g only (f is frozen)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.model.parameters())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("empty_cluster", [True, False])
def test_guided_pairs_over_steps(empty_cluster):
    """Over a few steps every anchor's positive stays within its K_kd neighbours, the draw varies
    among them, and every negative comes from the farthest non-empty cluster, covering it (with
    and without an empty farthest cluster)."""
    centroids = CENTROIDS if empty_cluster else CENTROIDS[:4]
    m, _, _, neighbours, aug = distill_setup(centroids)
    far = farthest_nonempty(centroids, CLUSTERS)
    assert far.tolist()[:4] == [2, 2, 0, 2]
    seen_pos: dict[int, set] = {}
    seen_neg: dict[int, set] = {}
    with torch.no_grad():
        for _ in range(6):
            m.training_step(torch.arange(40))
    for raw, _ in aug.calls:
        rows = rows_of(raw, m.data.x)
        for a, p, n in zip(rows[:40], rows[40:80], rows[80:]):
            assert p in neighbours[a].tolist()
            assert CLUSTERS[n] == far[CLUSTERS[a]]
            seen_pos.setdefault(a, set()).add(p)
            seen_neg.setdefault(int(CLUSTERS[a]), set()).add(n)
    assert np.mean([len(s) for s in seen_pos.values()]) > 1.5  # random among the K_kd, not always one
    for c, s in seen_neg.items():
        assert len(s) >= 5, (c, s)  # random members of the farthest cluster


def test_distill_stage_guidance_from_f(lt_project, tmp_path, monkeypatch):
    """The distill stage guides g with f's own geometry: the neighbour table is f's K_kd nearest
    neighbours in its projection space, the clusters are the nearest centroids of f's embeddings,
    and every positive / negative drawn in training obeys them (kNN and farthest cluster
    recomputed here from the checkpoint of f)."""
    proj = copy_project(lt_project, tmp_path / "p", {"ood": {"strategy": "none"}})
    fake_encoder(proj)
    seen: dict = {"picks": []}
    init, pick = GuidedDistillation.__init__, GuidedDistillation.pick

    def rec_init(self, *a, **kw):
        seen.update(neighbours=np.asarray(kw["neighbours"]), clusters=np.asarray(kw["clusters"]),
                    centroids=np.asarray(kw["centroids"]), k_kd=a[2].kdup.k_kd)
        init(self, *a, **kw)

    def rec_pick(self, idx):
        p, n = pick(self, idx)
        seen["picks"].append((idx.clone(), p.clone(), n.clone()))
        return p, n

    monkeypatch.setattr(GuidedDistillation, "__init__", rec_init)
    monkeypatch.setattr(GuidedDistillation, "pick", rec_pick)
    proj.stage("distill.py")
    x, _, _ = load_train_split(proj.path("data/lt"))
    f, spec, _ = load_encoder(proj.path("data/models/pretrain.pt"))
    zf = direct_embeddings(f, x, spec["mean"], spec["std"], "projection")
    k = proj.params()["distill"]["kdup"]["k_kd"]
    assert seen["k_kd"] == k and seen["neighbours"].shape == (len(x), k)
    sims = zf @ zf.T
    sims.fill_diagonal_(-float("inf"))
    kth = sims.topk(k, dim=1).values[:, -1]  # the K_kd-th largest cosine to another image

    def in_knn(a, p):
        return a != p and float(sims[a, p]) >= float(kth[a]) - 1e-4

    assert all(in_knn(a, int(p)) for a in range(len(x)) for p in seen["neighbours"][a])
    cent, lab = seen["centroids"], seen["clusters"]
    d = torch.cdist(zf.double(), torch.as_tensor(cent, dtype=torch.float64))
    assert (d[torch.arange(len(x)), torch.as_tensor(lab)] <= d.min(1).values + 1e-4).all()  # f's clusters
    far = farthest_nonempty(cent, lab)
    assert seen["picks"], "no guided step ran"
    for idx, pos, neg in seen["picks"]:
        for a, p, n in zip(idx.tolist(), pos.tolist(), neg.tolist()):
            assert in_knn(a, p), (a, p)
            assert lab[n] == far[lab[a]], (a, n)


# --------------------------------------------------------------------------- 2. OOD refresh in pretrain
def _refresh_run(lt_project, tmp_path, monkeypatch, strategy, epochs):
    """ood-sampling, then pretrain with every epoch's training set and every sampling update recorded."""
    proj = copy_project(lt_project, tmp_path / "p", {"ood": {"strategy": strategy, "interval": 2},
                                                     "pretrain": {"method": "psd", "epochs": epochs}})
    proj.stage("ood_sampling.py")
    events: list = []
    update, run_epoch, augment_copies = OODSampler.update, loop.run_epoch, augment_strategy.augment_copies

    def rec_update(self, model, runtime):
        sel = update(self, model, runtime)
        events.append(("update", sel))
        return sel

    def rec_run_epoch(method, optimizer, cfg, runtime, epoch, *a, **kw):
        d = method.data
        events.append(("epoch", epoch, d.x.cpu().clone(), d.domain.cpu().clone(), d.labels.cpu().clone()))
        return run_epoch(method, optimizer, cfg, runtime, epoch, *a, **kw)

    def rec_augment(x, seed):
        out = augment_copies(x, seed)
        events.append(("augment", x.cpu().clone(), seed, out.cpu().clone()))
        return out

    monkeypatch.setattr(OODSampler, "update", rec_update)
    monkeypatch.setattr(loop, "run_epoch", rec_run_epoch)
    monkeypatch.setattr(augment_strategy, "augment_copies", rec_augment)
    proj.stage("pretrain.py")
    return proj, events


def _refresh_schedule(p: dict) -> tuple[int, list[int]]:
    """First pre-training epoch and the epochs that start with a re-sampling: the warm-up ends with
    the first sampling, then D_s^OOD is updated every T = ood.interval epochs (paper 003 Sec. 3.1.1)."""
    start, interval, end = p["ood"]["warmup_epochs"], p["ood"]["interval"], p["pretrain"]["epochs"]
    return start, list(range(start + interval, end, interval))


def _check_training_sets(proj, epochs, selections, extra_of):
    x, y, _ = load_train_split(proj.path("data/lt"))
    for epoch, (_, _, xs, dom, lab) in epochs.items():
        extra = extra_of(selections[epoch])
        m = len(extra)
        assert m == proj.params()["ood"]["budget"], epoch
        assert torch.equal(xs[: len(x)], torch.from_numpy(np.array(x))), epoch  # the ID images first, in order
        assert torch.equal(xs[len(x):], torch.as_tensor(extra)), epoch
        assert torch.equal(dom, torch.tensor([0] * len(x) + [1] * m)), epoch
        assert torch.equal(lab, torch.cat([torch.as_tensor(y, dtype=torch.long), torch.full((m,), -1)])), epoch


def _epochs_and_selections(events, first, start, schedule, end):
    """Check the order of updates and epochs; map every epoch to the selection it trains on."""
    kinds = [("update",) if ev[0] == "update" else ("epoch", ev[1]) for ev in events if ev[0] != "augment"]
    expected = []
    for e in range(start, end):
        expected += [("update",)] * (e in schedule) + [("epoch", e)]
    assert kinds == expected
    current, epochs, selections = first, {}, {}
    for ev in events:
        if ev[0] == "update":
            current = ev[1]
        elif ev[0] == "epoch":
            epochs[ev[1]], selections[ev[1]] = ev, current
    return epochs, selections


def test_kdup_refresh_sets_id_then_selected_pool_images(lt_project, tmp_path, monkeypatch):
    """With ood.strategy kdup the method trains, epoch by epoch, on the ID images followed by the
    pool images of the latest selection (the warm-up's saved one until the first re-sampling),
    domain 1 and label -1; re-sampling happens exactly at epochs warmup + k * interval."""
    proj, events = _refresh_run(lt_project, tmp_path, monkeypatch, "kdup", 6)
    p = proj.params()
    start, schedule = _refresh_schedule(p)
    assert schedule == [3, 5]
    saved = np.load(proj.path("data/ood/selection.npz"))["pool_indices"]
    first = OODSelection("kdup", saved, None, None, None, None, None, None, {})
    epochs, selections = _epochs_and_selections(events, first, start, schedule, p["pretrain"]["epochs"])
    pool = np.load(proj.path("data/ood/pool.npy"))
    # the pool rows of the selection, read in ascending pool order
    _check_training_sets(proj, epochs, selections, lambda sel: pool[np.sort(np.asarray(sel.pool_indices))])
    # the selection did change at the re-samplings, and the extra images with it
    assert not np.array_equal(np.sort(saved), np.sort(selections[3].pool_indices))
    assert not torch.equal(epochs[2][2], epochs[3][2]) and torch.equal(epochs[3][2], epochs[4][2])
    m = json.loads(proj.path("metrics/pretrain.json").read_text())
    assert [u["epoch"] for u in m["ood_update_history"]] == schedule


def test_augment_refresh_sets_augmented_id_copies(lt_project, tmp_path, monkeypatch):
    """With ood.strategy augment (paper 003 Table 12) the extra rows are augmented copies of the
    selection's ID images (id_indices), domain 1, label -1, rebuilt with ood.seed from the saved
    selection and with a new seed at each re-sampling, and they change only at the re-sampling epochs."""
    proj, events = _refresh_run(lt_project, tmp_path, monkeypatch, "augment", 4)
    p = proj.params()
    start, schedule = _refresh_schedule(p)
    x, _, _ = load_train_split(proj.path("data/lt"))
    saved = np.load(proj.path("data/ood/selection.npz"))
    assert saved["pool_indices"].size == 0 and saved["id_indices"].size == p["ood"]["budget"]
    first = OODSelection("augment", saved["pool_indices"], None, None, None, None, None, None, {},
                         id_indices=saved["id_indices"])
    epochs, selections = _epochs_and_selections(events, first, start, schedule, p["pretrain"]["epochs"])
    augs = [ev for ev in events if ev[0] == "augment"]
    # one augmentation when pretrain starts (from the saved selection) and one per re-sampling
    assert len(augs) == 1 + len(schedule)
    sels = [first] + [ev[1] for ev in events if ev[0] == "update"]
    seeds = []
    for (_, src, seed, out), sel in zip(augs, sels):
        assert torch.equal(src, torch.as_tensor(x[np.asarray(sel.id_indices)]))  # the selected ID images
        seeds.append(seed)
        assert not torch.equal(out, src)
    # the warm-up's copies are rebuilt with ood.seed (as ood-sampling made them); each update has its own seed
    assert seeds[0] == p["ood"]["seed"] and len(set(seeds)) == len(seeds)
    by_sel = {id(sel): out for (_, _, _, out), sel in zip(augs, sels)}
    _check_training_sets(proj, epochs, selections, lambda sel: by_sel[id(sel)].numpy())
    assert schedule == [3]
    assert torch.equal(epochs[1][2], epochs[2][2]) and not torch.equal(epochs[2][2], epochs[3][2])


def test_augment_copies_of_id_indices(monkeypatch):
    """extra_images for the augment strategy: augmented copies of exactly the rows id_indices of
    the ID images (duplicates included), uint8 of the same shape, the same for the same seed,
    other for another seed, and different from the originals."""
    rng = np.random.default_rng(1)
    id_images = torch.as_tensor(rng.integers(0, 255, size=(12, 8, 8, 1), dtype=np.uint8))
    cfg = Params.model_validate({"ood": {"strategy": "augment"}}).ood
    sampler = OODSampler(cfg=cfg, pool=None, id_images=id_images, mean=[0.5], std=[0.25], batch_size=4)
    ids = np.array([3, 3, 0, 7, 11, 5])
    sel = OODSelection("augment", np.empty(0, np.int64), np.zeros(6, np.int64), None, None, None, None, None, {},
                       id_indices=ids)
    state = torch.random.get_rng_state()
    a = sampler.extra_images(sel, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert a.dtype == torch.uint8 and a.shape == (6, 8, 8, 1)
    assert torch.equal(a, sampler.extra_images(sel, seed=5))
    assert not torch.equal(a, sampler.extra_images(sel, seed=6))
    src = id_images[torch.as_tensor(ids)]
    assert all(not torch.equal(a[i], src[i]) for i in range(len(ids)))
    # the copies are made from exactly the rows ids of the ID images, with the given seed
    seen = []
    monkeypatch.setattr(augment_strategy, "augment_copies", lambda x, seed: seen.append((x.clone(), seed)) or x + 1)
    assert torch.equal(sampler.extra_images(sel, seed=9), src + 1)
    assert len(seen) == 1 and torch.equal(seen[0][0], src) and seen[0][1] == 9


# --------------------------------------------------------------------------- 4. embed_images
def _encoder():
    torch.manual_seed(0)
    params = Params.model_validate({"model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16}})
    x = np.random.default_rng(0).integers(0, 255, size=(10, 8, 8, 1), dtype=np.uint8)
    model, spec = new_encoder(params.model, x, CPU)
    with torch.no_grad():  # non-trivial running statistics: eval and train mode differ
        for mod in model.modules():
            if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return model, spec, x


@pytest.mark.parametrize("space", ["backbone", "projection"])
def test_embed_images_space_norm_batches_and_mode(space):
    """embed_images equals a direct eval-mode forward of the configured space (h or z), rows
    L2-normalised, the same streamed in batches of 3 as in one pass (array or tensor input), and
    the model's train / eval mode is restored in every module."""
    model, spec, x = _encoder()
    ref = direct_embeddings(model, x, spec["mean"], spec["std"], space)
    assert ref.shape[1] == (model.feature_dim if space == "backbone" else model.proj_dim)
    for training in (True, False):
        model.train(training)
        one = embed_images(model, x, spec["mean"], spec["std"], CPU, batch_size=1024, space=space)
        assert all(mod.training == training for mod in model.modules())  # mode restored, every module
        streamed = embed_images(model, torch.as_tensor(x), spec["mean"], spec["std"], CPU, batch_size=3,
                                space=space)
        assert one.dtype == np.float32 and one.shape == tuple(ref.shape)
        np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(one, ref.numpy(), atol=1e-5)
        np.testing.assert_allclose(streamed, one, atol=1e-5)


@pytest.mark.parametrize("space", ["backbone", "projection"])
def test_sampler_update_embeds_in_configured_space(space, monkeypatch):
    """OODSampler.update hands the strategy L2-normalised ID and pool embeddings of the configured
    ood.embedding space, taken in eval mode, and leaves the model's mode as it was."""
    model, spec, x = _encoder()
    pool = np.random.default_rng(2).integers(0, 255, size=(7, 8, 8, 1), dtype=np.uint8)
    cfg = Params.model_validate({"ood": {"strategy": "kdup", "embedding": space, "embed_batch_size": 4}}).ood
    sampler = OODSampler(cfg=cfg, pool=pool, id_images=torch.as_tensor(x), mean=spec["mean"], std=spec["std"],
                         batch_size=4)
    got = {}

    def fake_sample(id_emb, pool_emb, config, prev, round_index=0, *, colt_batch_size):
        got.update(id=np.asarray(id_emb), pool=np.asarray(pool_emb), round=round_index)
        return OODSelection("kdup", np.empty(0, np.int64), np.empty(0, np.int64), None, None, None, None, None,
                            {}), prev

    monkeypatch.setattr(refresh, "sample_ood", fake_sample)
    model.train()
    sampler.update(model, CPU)
    assert all(mod.training for mod in model.modules())
    np.testing.assert_allclose(got["id"], direct_embeddings(model, x, spec["mean"], spec["std"], space).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(got["pool"],
                               direct_embeddings(model, pool, spec["mean"], spec["std"], space).numpy(), atol=1e-5)
    assert got["round"] == 0 and sampler.rounds == 1

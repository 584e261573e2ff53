"""MAK's sampling (``ood.strategy: mak``, ltcl.sampling.mak and ltcl.sampling.strategies.mak) against
the released code's expressions (VITA-Group/MAK@75d2b9f), transcribed below on the CPU as direct
loops: the re-batched per-sample NT-Xent (utils.py:116-184), ECLE (sampling.py:106-141), the
proximity (sampling.py:76-103), the score and core set (sampling.py:180-192) and the O(N^2) greedy
K-center (sampling.py:144-172); then the strategy's select and embed recomputed from those pieces,
and pretrain's retraining (MAK's protocol)."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltcl.errors import UserError
from ltcl.losses.contrastive import nt_xent, nt_xent_per_sample
from ltcl.params import OODParams
from ltcl.runtime import Runtime
from ltcl.sampling import mak
from ltcl.sampling.refresh import OODSampler
from ltcl.sampling.select import round_seed
from ltcl.sampling.strategies import sample_ood, strategy_for
from ltcl.sampling.strategies.mak import MAK, MAKFeatures, augmented_embeddings

RT = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


# --------------------------------------------------------------------------- the released code, on the CPU
def released_nt_xent(x, t=0.5):
    """utils.py:111-137, ``nt_xent(x, t, sampleWiseLoss=True)`` on interleaved rows."""
    n = x.norm(p=2, dim=1, keepdim=True)
    x = (x @ x.t()) / (n * n.t()).clamp(min=1e-8)
    x = torch.exp(x / t)
    idx = torch.arange(x.size()[0])
    idx[::2] += 1
    idx[1::2] -= 1
    x = x[idx]
    x = x.diag() / (x.sum(0) - torch.exp(torch.tensor(1 / t)))
    sample_loss = -torch.log(x)
    return sample_loss.reshape(len(sample_loss) // 2, 2).mean(-1)


def released_rebatched(out, t, batch_size, repeat_time):
    """utils.py:140-184, ``nt_xent_inter_batch_multiple_time`` (randperm from the global generator)."""
    dataset_len = out.size()[0] // 2
    out = out.view(dataset_len, 2, -1).contiguous()
    f1, f2 = out[:, 0], out[:, 1]
    losses_all = []
    for _ in range(repeat_time):
        losses_batch = []
        random_order = torch.randperm(dataset_len)
        order_back = torch.argsort(random_order)
        assert dataset_len >= batch_size
        for i in range(int(np.ceil(dataset_len / batch_size))):
            if (i + 1) * batch_size < dataset_len:
                idx, offset = random_order[i * batch_size: (i + 1) * batch_size], 0
            else:
                idx = random_order[dataset_len - batch_size:]
                offset = i * batch_size - (dataset_len - batch_size)
            o = torch.stack([f1[idx], f2[idx]], dim=1).view((batch_size * 2, -1))
            o = F.normalize(o, dim=-1)
            losses_batch.append(released_nt_xent(o, t=t)[offset:])
        losses_batch = torch.cat(losses_batch, dim=0)[order_back]
        losses_all.append(losses_batch)
    return torch.stack(losses_all).mean(0)


def released_ecle(features_new, t, batch_size, repeat_time):
    """sampling.py:106-141, ``calculateLoss_more`` (the pairs (j, i), i > j, in its order)."""
    pairs = [(j, i) for j in range(len(features_new)) for i in range(j + 1, len(features_new))]
    losses_new = []
    for i, j in pairs:
        features = torch.stack([features_new[i], features_new[j]], dim=1).reshape(len(features_new[i]) * 2, -1)
        losses_new.append(released_rebatched(features, t, batch_size, repeat_time).numpy())
    return np.array(losses_new).mean(0)


def released_k_center(initial, pool, sampling_num):
    """sampling.py:144-172, ``k_core_set_greedy``: the whole chosen set recomputed every pick."""
    initial, pool = F.normalize(initial, dim=-1), F.normalize(pool, dim=-1)
    sampled = []
    for _ in range(sampling_num):
        existing = torch.cat([initial, pool[sampled]])
        mask = np.ones(len(pool), dtype=bool)
        mask[sampled] = False
        rest = np.nonzero(mask)[0]
        dist = torch.matmul(pool[rest], existing.t()).max(1)[0]
        sampled.append(rest[int(torch.argmin(dist))])
    return np.array(sampled)


def views(r, n, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, n, d, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- the pieces
@pytest.mark.parametrize("n,batch,t", [(40, 16, 0.2), (48, 16, 0.5), (33, 33, 0.3), (50, 7, 0.2)])
def test_rebatched_loss_is_the_released_expression(n, batch, t):
    """Every batch size and remainder (last batch overlapping the one before, or exact), against
    the released function with the same permutation stream."""
    v = views(2, n, 6, seed=n)
    torch.manual_seed(11)
    want = released_rebatched(torch.stack([v[0], v[1]], 1).reshape(2 * n, -1), t, batch, 3)
    got = mak.rebatched_loss(v[0], v[1], t, batch, 3, torch.Generator().manual_seed(11))
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)


def test_per_sample_loss_mean_is_nt_xent_and_each_sample_once():
    """One batch of all N (one re-batching): the per-sample losses are nt_xent_per_sample's, their
    mean ltcl's nt_xent; a sample's loss is its own whatever the permutation."""
    v = views(2, 24, 5, seed=3, dtype=torch.float64)
    got = mak.rebatched_loss(v[0], v[1], 0.2, 24, 1, torch.Generator().manual_seed(0))
    per = nt_xent_per_sample(v[0], v[1], 0.2)
    torch.testing.assert_close(got.double(), per, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.double().mean(), nt_xent(v[0], v[1], 0.2), rtol=1e-6, atol=1e-6)
    # a direct loop of -log(exp(s_ip/t) / sum_{k != i} exp(s_ik/t)) for sample 5's view-1 anchor
    z = F.normalize(torch.cat([v[0], v[1]]), dim=1)
    s = z @ z.T / 0.2
    a = 5
    l1 = -(s[a, a + 24] - torch.logsumexp(torch.cat([s[a, :a], s[a, a + 1:]]), 0))
    b = a + 24
    l2 = -(s[b, a] - torch.logsumexp(torch.cat([s[b, :b], s[b, b + 1:]]), 0))
    assert abs(float(got[a]) - float((l1 + l2) / 2)) < 1e-5


def test_ecle_is_the_released_mean_over_pairs():
    v = views(4, 40, 6, seed=5)
    torch.manual_seed(7)
    want = released_ecle(list(v), 0.2, 16, 2)
    got = mak.ecle(v, 0.2, 16, 2, torch.Generator().manual_seed(7))
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-6, atol=2e-6)
    assert len(list(combinations(range(4), 2))) == 6


def test_rebatched_loss_and_ecle_refuse_what_they_cannot_do():
    v = views(2, 10, 4)
    with pytest.raises(UserError, match="ood.mak.batch"):
        mak.rebatched_loss(v[0], v[1], 0.2, 16, 1, torch.Generator())
    with pytest.raises(UserError, match="R >= 2"):
        mak.ecle(v[:1], 0.2, 4, 1, torch.Generator())


def test_proximity_is_one_minus_the_nearest_centre_cosine():
    """k-means as the released call (scikit-learn, random_state, n_init) on the normalised ID
    features; each pool image's distance by a direct loop over the normalised centres."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    id_f, pool_f = rng.normal(size=(60, 5)).astype(np.float32), rng.normal(size=(30, 5)).astype(np.float32)
    dist, nearest, centres, labels = mak.proximity(id_f, pool_f, 4, seed=9, n_init=3, chunk=7)
    idn = id_f / np.linalg.norm(id_f, axis=1, keepdims=True)
    km = KMeans(n_clusters=4, random_state=9, n_init=3).fit(idn)
    c = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    np.testing.assert_array_equal(labels, km.labels_)
    for i in range(30):
        p = pool_f[i] / np.linalg.norm(pool_f[i])
        cos = [float(p @ c[k]) for k in range(4)]
        assert abs(dist[i] - (1 - max(cos))) < 1e-5 and nearest[i] == int(np.argmax(cos))
    with pytest.raises(UserError, match="ood.mak.clusters"):
        mak.proximity(id_f[:3], pool_f, 4, seed=0)


def test_score_and_core_set():
    rng = np.random.default_rng(1)
    loss, dist = rng.normal(size=50).astype(np.float32), rng.random(50).astype(np.float32)
    got = mak.mak_score(loss, dist, 0.3)
    want = [0.3 * (loss[i] - loss.mean()) / loss.std() - 0.7 * (dist[i] - dist.mean()) / dist.std()
            for i in range(50)]  # numpy's std is the population std, as sampling.py:182-184
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
    core = mak.core_set(got, 12)
    assert sorted(core.tolist()) == sorted(np.argsort(-got)[:12].tolist()) and np.all(np.diff(got[core]) >= 0)
    # ties keep the lower index at the cut (a stable sort); a constant input standardises to 0
    assert mak.core_set(np.zeros(5, np.float32), 2).tolist() == [3, 4]
    tied = np.tile([0.0, 1.0], 100).astype(np.float32)  # long enough for numpy's quicksort to reorder ties
    assert mak.core_set(tied, 50).tolist() == list(range(101, 200, 2))
    assert np.all(mak.mak_score(np.ones(4), np.arange(4.0), 0.5) == -0.5 * mak._standardised(np.arange(4.0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_k_center_equals_the_released_recompute(seed):
    g = torch.Generator().manual_seed(seed)
    init, cand = torch.randn(15, 4, generator=g, dtype=torch.float64), torch.randn(40, 4, generator=g, dtype=torch.float64)
    got = mak.k_center_greedy(init, cand, 25, chunk=4)
    assert got.tolist() == released_k_center(init, cand, 25).tolist()
    assert len(set(got.tolist())) == 25


def test_k_center_ties_take_the_lowest_index_and_bounds():
    init = torch.tensor([[1.0, 0.0]])
    cand = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 1.0], [1.0, 0.0]])  # rows 0, 1, 2 tie at cos 0
    assert mak.k_center_greedy(init, cand, 2).tolist() == released_k_center(init, cand, 2).tolist() == [0, 1]
    # duplicate candidates: a pick is never picked again (the released excludeMask), all C picks distinct
    dup = torch.tensor([[0.0, 1.0]] * 3)
    assert mak.k_center_greedy(init, dup, 3).tolist() == released_k_center(init, dup, 3).tolist() == [0, 1, 2]
    with pytest.raises(UserError, match="picks 5 of 4"):
        mak.k_center_greedy(init, cand, 5)


# --------------------------------------------------------------------------- the strategy
def cfg(**own):
    base = {"views": 3, "rebatch": 2, "batch": 16, "temperature": 0.3, "clusters": 3, "kmeans_init": 2,
            "loss_weight": 0.4, "core_ratio": 1.5}
    return OODParams(strategy="mak", budget=8, seed=4, pool_size=40, mak={**base, **own})


def features(seed=0, n_id=30, n_pool=40):
    rng = np.random.default_rng(seed)
    id_h = rng.normal(size=(n_id, 6)).astype(np.float32)
    pool_h = rng.normal(size=(n_pool, 6)).astype(np.float32)
    return (id_h / np.linalg.norm(id_h, axis=1, keepdims=True), pool_h / np.linalg.norm(pool_h, axis=1, keepdims=True),
            views(3, n_pool, 5, seed=seed + 1))


@pytest.mark.parametrize("round_index", [0, 2])
def test_select_is_the_verified_pieces(round_index):
    """select = proximity -> ECLE -> score -> core -> K-center, with the streams of its round."""
    c = cfg()
    id_h, pool_h, v = features()
    sel, state = sample_ood(id_h, MAKFeatures(pool_h, v), c, prev_tailness=None, round_index=round_index,
                            colt_batch_size=64)
    dist, nearest, _, _ = mak.proximity(id_h, pool_h, 3, round_seed(4, round_index, 1), 2)
    loss = mak.ecle(v, 0.3, 16, 2, torch.Generator().manual_seed(round_seed(4, round_index, 5))).numpy()
    core = mak.core_set(mak.mak_score(loss, dist, 0.4), 12)
    want = core[mak.k_center_greedy(id_h, pool_h[core], 8)]
    assert sel.pool_indices.tolist() == want.tolist() and sel.strategy == "mak" and state is None
    assert sel.cluster_of_each.tolist() == nearest[want].tolist() and sel.budgets is None
    assert sel.pool_scores["core"] == 12
    assert math.isclose(sel.pool_scores["ecle_selected_mean"], float(loss[want].mean()), rel_tol=1e-6)
    assert set(sel.timings) >= {"clustering", "tailness", "budget", "sampling"}


def test_select_without_k_center_when_the_core_is_the_budget():
    id_h, pool_h, v = features()
    sel, _ = sample_ood(id_h, MAKFeatures(pool_h, v), cfg(core_ratio=1.0), colt_batch_size=64)
    dist, _, _, _ = mak.proximity(id_h, pool_h, 3, round_seed(4, 0, 1), 2)
    loss = mak.ecle(v, 0.3, 16, 2, torch.Generator().manual_seed(round_seed(4, 0, 5))).numpy()
    assert sel.pool_indices.tolist() == mak.core_set(mak.mak_score(loss, dist, 0.4), 8).tolist()


def test_select_refuses_plain_embeddings_and_a_small_pool():
    id_h, pool_h, v = features()
    with pytest.raises(UserError, match="MAKFeatures"):
        sample_ood(id_h, pool_h, cfg(), colt_batch_size=64)
    with pytest.raises(UserError, match="ood.mak.batch"):
        sample_ood(id_h, MAKFeatures(pool_h, v), cfg(batch=64), colt_batch_size=64)


class TinyEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        h = self.bn(self.conv(x)).mean((2, 3))
        return h, self.head(h)


def test_embed_is_backbone_features_and_seeded_augmented_projections():
    """MAK.embed: the ID and pool backbone features without augmentation (eval mode), and R passes
    of the run's augmentation through the projection, drawn from round_seed(seed, round, 4) in a
    forked RNG (the training stream continues as if nothing ran)."""
    from ltcl.data.augment import SimCLRAugment

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    idx = torch.as_tensor(rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    aug = SimCLRAugment(8, 3, crop_scale=(0.3, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, gray_p=0.2,
                        flip=True, mean=mean, std=std)
    model = TinyEncoder().train()
    c = cfg(views=2)
    sampler = OODSampler(cfg=c, pool=pool, id_images=idx, mean=mean, std=std, batch_size=8, augment=aug, rounds=3)
    torch.manual_seed(123)
    id_h, feats = strategy_for(c, 8).embed(sampler, model, RT)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(1)), "MAK's draws moved the training RNG stream"
    assert model.training
    model.eval()
    with torch.no_grad():
        def direct(x):
            t = torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255
            t = (t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
            return F.normalize(model(t)[0], dim=1)
        np.testing.assert_allclose(id_h, direct(idx).numpy(), atol=1e-5)
        np.testing.assert_allclose(feats.backbone, direct(pool).numpy(), atol=1e-5)
        torch.manual_seed(round_seed(4, 3, 4))
        want = torch.stack([F.normalize(model(aug(torch.as_tensor(pool)))[1], dim=1) for _ in range(2)])
    torch.testing.assert_close(feats.views, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(feats.views[0], feats.views[1])  # two different augmentations
    with pytest.raises(UserError, match="no augmentation"):
        augmented_embeddings(model, pool, None, RT, 8, 2, 0, mean, std)
    assert isinstance(strategy_for(c, 8), MAK)


# --------------------------------------------------------------------------- MAK's protocol in pretrain
@pytest.mark.parametrize("strategy", ["mak", "kdup"])
def test_pretrain_retrains_from_scratch_on_id_plus_the_selection(tmp_path, strategy):
    """pretrain with a ``retrain`` strategy (MAK): the encoder stays the fresh one (not the warm-up's),
    epoch 0, a fresh optimizer, the selection's images as ID rows (domain 0: no L_DD), no re-sampling;
    KDUP's continuation, the control, loads the warm-up and marks the images OOD."""
    from ltcl.io import save_checkpoint
    from ltcl.methods.base import TrainSet
    from ltcl.params import Params
    from ltcl.pipeline.pretrain import OODRounds
    from ltcl.sampling.select import OODSelection
    from ltcl.sampling.selection_io import save_selection
    from ltcl.train.session import new_encoder

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    pool = rng.integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "pool.npy", pool)
    params = Params.model_validate({"model": {"backbone": "resnet8"}, "ood": {"strategy": strategy, "budget": 5, "warmup_epochs": 3},
                                    "pretrain": {"method": "simclr", "epochs": 4}})
    torch.manual_seed(1)
    warm_model, spec = new_encoder(params.model, x, RT)
    save_checkpoint(tmp_path / "warmup.pt", {"model": warm_model.state_dict(), "spec": spec, "epoch": 3,
                                             "sampler": {"tailness": None, "rounds": 1}, "optimizer": {},
                                             "pruned_norms": None})
    picked = np.array([4, 0, 17, 9, 22])
    save_selection(tmp_path / "selection.npz", OODSelection(strategy, picked, np.zeros(5, np.int64)), 5)
    torch.manual_seed(2)
    model, _ = new_encoder(params.model, x, RT)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    rounds = OODRounds(params.ood, tmp_path, {"class_names": ["a"]}, np.zeros(20, np.int64))
    id_data = TrainSet.from_numpy(x, np.zeros(20, np.int64), 1, RT.device)
    epoch, data = rounds.warm_start(model, spec, id_data, params.pretrain)
    assert len(data) == 25
    assert torch.equal(data.x[20:], torch.as_tensor(pool[np.sort(picked)]))
    state = model.state_dict()
    if strategy == "mak":
        assert rounds.retrain and epoch == 0 and int(data.domain.sum()) == 0 and not data.has_ood
        assert all(torch.equal(state[k], fresh[k]) for k in fresh)
    else:
        assert not rounds.retrain and epoch == 3 and data.domain[20:].tolist() == [1] * 5
        assert all(torch.equal(state[k], warm_model.state_dict()[k]) for k in state)

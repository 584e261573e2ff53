"""BCL-I's pure pieces (ltcl.losses.bcl) against naive loops of the released code's expressions
(MediaBrain-SJTU/BCL@a2342f8: losses/nt_xent.py, train.py, data/memoboosted_cifar100.py,
data/randaug.py). The released snippets below are copied from those files, with ``.cuda()``
dropped and the images replaced by a recorder."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltcl.losses import bcl
from ltcl.losses.contrastive import nt_xent

# data/randaug.py:162-180, in the released order
RELEASED_OPS = [
    ("ShearX", 0., 0.6), ("ShearY", 0., 0.6), ("TranslateX", 0., 0.66), ("TranslateY", 0., 0.66),
    ("Rotate", 0, 60), ("AutoContrast", 0, 1), ("Invert", 0, 1), ("Equalize", 0, 1), ("Solarize", 0, 110),
    ("Posterize", 4, 8), ("Contrast", 0.1, 1.9), ("Color", 0.1, 1.9), ("Brightness", 0.1, 1.9),
    ("Sharpness", 0.1, 1.9), ("Cutout", 0, 0.4),
]
RELEASED_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}  # data/randaug.py:11-57


# ----------------------------------------------------------------------------- per-sample NT-Xent

def released_nt_xent(x, t=0.5, features2=None, average=True):
    """losses/nt_xent.py:5-49, verbatim but for ``.cuda()``."""
    def get_negative_mask(batch_size):
        negative_mask = torch.ones((batch_size, 2 * batch_size), dtype=bool)
        for i in range(batch_size):
            negative_mask[i, i] = 0
            negative_mask[i, i + batch_size] = 0
        negative_mask = torch.cat((negative_mask, negative_mask), 0)
        return negative_mask

    if features2 is None:
        out = F.normalize(x, dim=-1)
        d = out.size()
        batch_size = d[0] // 2
        out = out.view(batch_size, 2, -1).contiguous()
        out_1 = out[:, 0]
        out_2 = out[:, 1]
    else:
        batch_size = x.shape[0]
        out_1 = F.normalize(x, dim=-1)
        out_2 = F.normalize(features2, dim=-1)
    out = torch.cat([out_1, out_2], dim=0)
    neg = torch.exp(torch.mm(out, out.t().contiguous()) / t)
    mask = get_negative_mask(batch_size)
    neg = neg.masked_select(mask).view(2 * batch_size, -1)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / t)
    pos = torch.cat([pos, pos], dim=0)
    Ng = neg.sum(dim=-1)
    loss = (- torch.log(pos / (pos + Ng)))
    loss_reshape = loss.view(2, batch_size).mean(0)
    if average:
        return loss.mean()
    else:
        return loss_reshape


def naive_per_sample(z1, z2, t):
    """Double loop: anchor a of view v, positive its other view, negatives both views of every
    other sample; sample loss = mean of its two anchors' losses."""
    n = z1.shape[0]
    views = [F.normalize(z1, dim=1), F.normalize(z2, dim=1)]
    out = torch.zeros(n, dtype=z1.dtype)
    for i in range(n):
        total = 0.0
        for v in range(2):
            a = views[v][i]
            pos = math.exp(float(a @ views[1 - v][i]) / t)
            ng = 0.0
            for j in range(n):
                if j == i:
                    continue
                for u in range(2):
                    ng += math.exp(float(a @ views[u][j]) / t)
            total += -math.log(pos / (pos + ng))
        out[i] = total / 2
    return out


@pytest.mark.parametrize("n,d,t", [(1, 3, 0.5), (5, 4, 0.2), (8, 16, 0.7)])
def test_nt_xent_per_sample_matches_double_loop_and_released(n, d, t):
    g = torch.Generator().manual_seed(n * 31 + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    got = bcl.nt_xent_per_sample(z1, z2, t)
    assert got.shape == (n,)
    torch.testing.assert_close(got, naive_per_sample(z1, z2, t), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, released_nt_xent(z1, t=t, features2=z2, average=False), rtol=1e-10, atol=1e-10)
    # train.py:141-144: the two views interleaved (row 2i, 2i+1 = sample i), features2=None
    inter = torch.stack([z1, z2], dim=1).reshape(2 * n, d)
    torch.testing.assert_close(got, released_nt_xent(inter, t=t, average=False), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_nt_xent_per_sample_mean_is_ltcl_nt_xent(dtype, tol):
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(16, 8, generator=g, dtype=dtype, requires_grad=True)
    z2 = torch.randn(16, 8, generator=g, dtype=dtype, requires_grad=True)
    per = bcl.nt_xent_per_sample(z1, z2, 0.2)
    ref = nt_xent(z1, z2, 0.2)
    torch.testing.assert_close(per.mean(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(per.mean(), released_nt_xent(z1, t=0.2, features2=z2), rtol=tol, atol=tol)
    g1, g2 = torch.autograd.grad(per.mean(), (z1, z2))
    r1, r2 = torch.autograd.grad(ref, (z1, z2))
    torch.testing.assert_close(g1, r1, rtol=tol, atol=tol)
    torch.testing.assert_close(g2, r2, rtol=tol, atol=tol)


def test_nt_xent_per_sample_stable_and_checked():
    z = torch.eye(4, dtype=torch.float32)
    out = bcl.nt_xent_per_sample(z, z.clone(), 0.001)  # exp(1000) overflows in the released form
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError):
        bcl.nt_xent_per_sample(z, z[:3], 0.2)
    with pytest.raises(ValueError):
        bcl.nt_xent_per_sample(z, z, 0.0)
    with pytest.raises(ValueError):
        bcl.nt_xent_per_sample(z.long(), z.long(), 0.2)


# ----------------------------------------------------------------------------- momentum loss memory

def released_memory(batches_per_epoch, beta, num):
    """train.py:106-107 and 146-153: epochs 1-indexed, a per-sample loop over each batch."""
    shadow = torch.zeros(num)
    momentum_loss = torch.zeros(len(batches_per_epoch), num)
    for epoch, batches in enumerate(batches_per_epoch, start=1):
        for index, loss in batches:
            for count in range(len(index)):
                if epoch > 1:
                    new_average = (1.0 - beta) * loss[count].clone().detach() + beta * shadow[index[count]]
                else:
                    new_average = loss[count].clone().detach()
                shadow[index[count]] = new_average
                momentum_loss[epoch - 1, index[count]] = new_average
    return shadow, momentum_loss


def test_momentum_loss_update_matches_released_loop_over_epochs():
    num, bs, epochs = 23, 5, 6
    g = torch.Generator().manual_seed(11)
    schedule = []
    for _ in range(epochs):
        perm = torch.randperm(num, generator=g)  # shuffle=True, no drop_last (train.py:81)
        schedule.append([(perm[s:s + bs], torch.rand(len(perm[s:s + bs]), generator=g) * 5)
                         for s in range(0, num, bs)])
    shadow, rows = released_memory(schedule, bcl.MOMENTUM_LOSS_BETA, num)

    memory, seen = torch.zeros(num), torch.zeros(num, dtype=torch.bool)
    for e, batches in enumerate(schedule):
        for index, loss in batches:
            memory, seen = bcl.momentum_loss_update(memory, seen, index, loss, bcl.MOMENTUM_LOSS_BETA)
        assert seen.all()
        torch.testing.assert_close(memory, rows[e], rtol=1e-6, atol=1e-6)  # the row the weights read
    torch.testing.assert_close(memory, shadow, rtol=1e-6, atol=1e-6)


def test_momentum_loss_update_is_pure_and_checked():
    memory = torch.tensor([1.0, 2.0, 3.0])
    seen = torch.tensor([True, False, True])
    m0, s0 = memory.clone(), seen.clone()
    loss = torch.tensor([10.0, 20.0], requires_grad=True)
    new_m, new_s = bcl.momentum_loss_update(memory, seen, torch.tensor([1, 2]), loss, 0.5)
    assert torch.equal(memory, m0) and torch.equal(seen, s0)
    torch.testing.assert_close(new_m, torch.tensor([1.0, 10.0, 0.5 * 20 + 0.5 * 3]))  # first sight, then EMA
    assert new_s.all() and not new_m.requires_grad
    with pytest.raises(ValueError):
        bcl.momentum_loss_update(memory, seen, torch.tensor([1, 1]), loss, 0.5)
    with pytest.raises(ValueError):
        bcl.momentum_loss_update(memory, seen, torch.tensor([1, 3]), loss, 0.5)
    with pytest.raises(ValueError):
        bcl.momentum_loss_update(memory, seen, torch.tensor([0, 1]), loss, 1.5)
    with pytest.raises(ValueError):
        bcl.momentum_loss_update(memory, seen.float(), torch.tensor([0, 1]), loss, 0.5)


# ----------------------------------------------------------------------------- weights

def released_weights_numpy(m):
    """data/memoboosted_cifar100.py:8-9 in numpy; torch.std is unbiased (ddof=1)."""
    m = np.asarray(m, dtype=np.float64)
    u = (m - m.mean()) / m.std(ddof=1)
    return (u / np.max(np.abs(u))) / 2 + 1 / 2


def released_weights_torch(momentum_loss, epoch):
    """data/memoboosted_cifar100.py:6-11, verbatim."""
    momentum_weight = ((momentum_loss[epoch-1]-torch.mean(momentum_loss[epoch-1,:]))
                       / torch.std(momentum_loss[epoch-1,:]))  # line break added (line length)
    momentum_weight = ((momentum_weight/torch.max(torch.abs(momentum_weight[:])))/2+1/2).detach().cpu().numpy()
    return momentum_weight


@pytest.mark.parametrize("n", [2, 3, 17])
def test_momentum_weights_match_released_formula(n):
    g = torch.Generator().manual_seed(n)
    m = torch.rand(n, generator=g, dtype=torch.float64) * 4
    w = bcl.momentum_weights(m)
    np.testing.assert_allclose(w.numpy(), released_weights_numpy(m.numpy()), rtol=1e-12, atol=1e-12)
    rows = torch.stack([torch.zeros(n), m.float()])
    np.testing.assert_allclose(bcl.momentum_weights(m.float()).numpy(), released_weights_torch(rows, 2), rtol=1e-6)
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    extreme = w[torch.argmax((m - m.mean()).abs())]
    assert math.isclose(float(extreme), 0.0, abs_tol=1e-12) or math.isclose(float(extreme), 1.0, abs_tol=1e-12)
    assert torch.argmax(w) == torch.argmax(m)  # higher loss, higher weight


def test_momentum_weights_degenerate_memory_raises():
    with pytest.raises(ValueError):
        bcl.momentum_weights(torch.full((4,), 2.0))
    with pytest.raises(ValueError):
        bcl.momentum_weights(torch.tensor([1.0]))
    with pytest.raises(ValueError):
        bcl.momentum_weights(torch.tensor([1.0, float("nan"), 2.0]))


# ----------------------------------------------------------------------------- RandAugment draws

def test_op_table_is_released_order():
    assert [(o.name, o.min, o.max) for o in bcl.AUGMENT_OPS] == [(a, float(b), float(c)) for a, b, c in RELEASED_OPS]
    assert bcl.SIGNED_OPS == RELEASED_SIGNED
    assert bcl.min_strength(1) == 10 and bcl.min_strength(2) == 5 and bcl.min_strength(3) == 5


def released_randaugment_prob(n, m, p, rng):
    """data/randaug.py:199-213 with python ``random`` (a seeded Random); the ops record
    (index, val after the op-internal sign flip) instead of transforming an image."""
    augment_list = [(i, lo, hi) for i, (_, lo, hi) in enumerate(RELEASED_OPS)]
    ops = rng.choices(augment_list, k=n)
    record = []
    for op, minval, maxval in ops:
        if rng.uniform(0, 1) < p:
            val = (float(m) / 30) * float(maxval - minval) + minval
            if RELEASED_OPS[op][0] in RELEASED_SIGNED and rng.random() > 0.5:
                val = -val
            record.append((op, val))
    return record


def test_draws_match_naive_released_expressions():
    g = torch.Generator().manual_seed(5)
    w = torch.rand(40, generator=g, dtype=torch.float64)
    w[0], w[1] = 0.0, 1.0
    for k in (1, 2, 3):
        d = bcl.randaugment_draws(w, k, 30, torch.Generator().manual_seed(k))
        assert d.op.shape == d.applied.shape == d.magnitude.shape == d.sign.shape == (40, 2, k)
        lo_s = 10 if k == 1 else 5
        for i in range(40):
            wi = float(w[i])
            m = float(d.strength[i])
            if k == 1:  # data/memoboosted_cifar100.py:45
                assert math.isclose(m, lo_s + (30 - lo_s) * wi, rel_tol=1e-12)
            else:  # data/memoboosted_cifar100.py:55, factor in [0, 1)
                assert lo_s - 1e-12 <= m <= lo_s + (30 - lo_s) * wi + 1e-12
            for v in range(2):
                for s in range(k):
                    name, minval, maxval = RELEASED_OPS[int(d.op[i, v, s])]
                    val = (float(m) / 30) * float(maxval - minval) + minval  # data/randaug.py:210
                    assert math.isclose(float(d.magnitude[i, v, s]), val, rel_tol=1e-12, abs_tol=1e-15)
                    assert min(minval, maxval) - 1e-12 <= val <= max(minval, maxval) + 1e-12
                    if name not in RELEASED_SIGNED:
                        assert float(d.sign[i, v, s]) == 1.0
                    assert float(d.value[i, v, s]) == float(d.sign[i, v, s]) * float(d.magnitude[i, v, s])
        assert not d.applied[0].any() and d.applied[1].all()


def test_zero_weight_never_applies_and_one_always():
    for k in (1, 2):
        d = bcl.randaugment_draws(torch.zeros(500), k, 30, torch.Generator().manual_seed(0))
        assert not d.applied.any()
        assert torch.all(d.strength == (10.0 if k == 1 else 5.0))
        d = bcl.randaugment_draws(torch.ones(500), k, 30, torch.Generator().manual_seed(0))
        assert d.applied.all()


def test_draw_statistics_match_released_class():
    n, k, wv = 6000, 2, 0.4
    d = bcl.randaugment_draws(torch.full((n,), wv), k, 30, torch.Generator().manual_seed(7))
    # released class, python random
    rng = random.Random(7)
    nprng = np.random.RandomState(7)
    rel_applied, rel_ops, rel_neg = 0, np.zeros(15), []
    for _ in range(n):
        # data/memoboosted_cifar100.py:55 draws np.random.rand(1), a 1-element array; float() of it
        # (data/randaug.py:210) is a TypeError under numpy 2, so the scalar is taken here
        m = 5 + (30 - 5) * wv * nprng.rand(1)[0]
        for _view in range(2):
            rec = released_randaugment_prob(k, m, wv, rng)
            rel_applied += len(rec)
            for op, val in rec:
                rel_ops[op] += 1
                if RELEASED_OPS[op][0] in RELEASED_SIGNED:
                    rel_neg.append(val < 0)
    slots = n * 2 * k
    ours_rate = float(d.applied.double().mean())
    assert abs(ours_rate - wv) < 0.015 and abs(rel_applied / slots - wv) < 0.015
    # the drawn op: uniform over the 15 ops, with replacement
    freq = torch.bincount(d.op.flatten(), minlength=15).double() / slots
    assert torch.all((freq - 1 / 15).abs() < 0.01)
    np.testing.assert_allclose(rel_ops / rel_ops.sum(), np.full(15, 1 / 15), atol=0.015)
    same = (d.op[..., 0] == d.op[..., 1]).double().mean()
    assert abs(float(same) - 1 / 15) < 0.01
    # the sign flip of the signed ops, where applied
    signed = torch.tensor([nm in RELEASED_SIGNED for nm, _, _ in RELEASED_OPS])[d.op] & d.applied
    neg_rate = float((d.sign[signed] < 0).double().mean())
    assert abs(neg_rate - 0.5) < 0.03 and abs(np.mean(rel_neg) - 0.5) < 0.03
    # k = 2 strength: 5 + 25 w u, u ~ U[0, 1), shared by both views (one value per sample)
    mean_strength = float(d.strength.mean())
    assert abs(mean_strength - (5 + 25 * wv * 0.5)) < 0.2
    # the views draw their ops independently
    assert float((d.op[:, 0] != d.op[:, 1]).double().mean()) > 0.8


def test_draws_deterministic_and_checked():
    w = torch.rand(10, generator=torch.Generator().manual_seed(1))
    a = bcl.randaugment_draws(w, 1, 30, torch.Generator().manual_seed(3))
    b = bcl.randaugment_draws(w, 1, 30, torch.Generator().manual_seed(3))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError):
        bcl.randaugment_draws(torch.tensor([1.5]), 1, 30, g)
    with pytest.raises(ValueError):
        bcl.randaugment_draws(w, 0, 30, g)
    with pytest.raises(ValueError):
        bcl.randaugment_draws(w, 1, 31, g)
    with pytest.raises(ValueError):
        bcl.randaugment_draws(w, 1, 30, None)
    with pytest.raises(ValueError):
        bcl.randaugment_strength(w, 2, 30)  # k != 1 needs the factor

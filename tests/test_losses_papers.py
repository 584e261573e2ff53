"""Losses of papers 000 (TASE), 001 (GloCo/ProCo), 002 (GML) and the TS schedule, each checked
against a direct loop implementation written from the paper's equation (python loops, float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltcl.losses.gloco import adaptive_temperature, gloco_loss, gloco_simclr_loss, sample_global_positive_indices
from ltcl.losses.gml import (
    ClassQueues,
    gml_logits,
    gml_loss,
    gml_queue_lengths,
    log_prior_from_counts,
    logit_adjusted_cosine_logits,
)
from ltcl.losses.proco import class_prototypes, kcenter_greedy, kcenter_greedy_per_class, proco_loss
from ltcl.losses.schedules import cosine_temperature
from ltcl.losses.tase import tase_loss, tase_negative_weights, tase_progress, tase_temperatures

SEEDS = [0, 1, 2]
D64 = torch.float64


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(_unit(a) @ _unit(b))


# --------------------------------------------------------------------------------------------
# TASE (paper 000, Eq. 6)
# --------------------------------------------------------------------------------------------

def _tase_reference(z1, z2, tau, w):
    n = z1.shape[0]
    views = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]
    sample = list(range(n)) + list(range(n))
    total = 0.0
    for a in range(2 * n):
        i = sample[a]
        partner = a + n if a < n else a - n
        pos = math.exp(_cos(views[a], views[partner]) / float(tau[i]))
        neg = 0.0
        for b in range(2 * n):
            j = sample[b]
            if j == i:
                continue
            neg += float(w[j]) * math.exp(_cos(views[a], views[b]) / float(tau[i]))
        total += -math.log(pos / (pos + neg))
    return total / (2 * n)


@pytest.mark.parametrize("seed", SEEDS)
def test_tase_loss_matches_eq6_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n, d = 6, 5
    z1, z2 = torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, d, generator=g, dtype=D64)
    tau = 0.1 + torch.rand(n, generator=g, dtype=D64)
    w = torch.rand(n, generator=g, dtype=D64) + 0.05
    got = tase_loss(z1, z2, tau, w)
    assert got.item() == pytest.approx(_tase_reference(z1, z2, tau, w), rel=1e-10)


def test_tase_loss_float32_scalar_tau_and_simclr_limit():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    got = tase_loss(z1, z2, 0.2, torch.ones(8))
    assert got.dtype == torch.float32
    # constant tau, unit weights -> SimCLR NT-Xent
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    logits = (z @ z.T / 0.2).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(8, 16), torch.arange(8)])
    assert got.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)
    assert tase_loss(z1, z2, 0.2, None).item() == pytest.approx(got.item(), rel=1e-6)


def test_tase_loss_gradients_and_errors():
    z1 = torch.randn(4, 3, requires_grad=True)
    z2 = torch.randn(4, 3)
    tase_loss(z1, z2, torch.full((4,), 0.3), torch.tensor([1.0, 0.0, 0.5, 2.0])).backward()
    assert torch.isfinite(z1.grad).all()
    with pytest.raises(ValueError, match="tau"):
        tase_loss(z1, z2, torch.zeros(4), None)
    with pytest.raises(ValueError, match="weight"):
        tase_loss(z1, z2, 0.2, -torch.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        tase_loss(z1, z2[:3], 0.2, None)


def test_tase_negative_weights():
    sizes = torch.tensor([4, 100, 25, 4])
    w = tase_negative_weights(sizes)
    assert torch.allclose(w, torch.tensor([0.5, 0.1, 0.2, 0.5]))
    wm = tase_negative_weights(sizes, normalize="mean")
    assert wm.mean().item() == pytest.approx(1.0)
    assert torch.allclose(wm / wm[0], w / w[0])
    with pytest.raises(ValueError):
        tase_negative_weights(torch.tensor([0, 3]))
    with pytest.raises(ValueError):
        tase_negative_weights(sizes, normalize="sum")


def _tase_temp_reference(n, sizes, tau_min, tau_max, e, b, s, mapping, base):
    lo, hi = min(sizes), max(sizes)
    f = (lambda x: math.log(x)) if mapping == "log" else (lambda x: float(x))
    u = 1.0 if hi == lo else (f(n) - f(lo)) / (f(hi) - f(lo))
    target = tau_min + (tau_max - tau_min) * u
    if e < b:
        return base
    if e >= s:
        return target
    lam = (e - b) / (s - b)
    return (1 - lam) * base + lam * target


@pytest.mark.parametrize("mapping", ["linear", "log"])
def test_tase_temperatures_schedule(mapping):
    sizes = torch.tensor([4500.0, 2000.0, 45.0, 300.0, 45.0, 900.0])
    b, s, base = 50, 500, 0.2
    for e in [0, 10, 49, 50, 120, 275, 499, 500, 900]:
        got = tase_temperatures(sizes, 0.1, 0.5, e, b, s, mapping, base_tau=base)
        ref = [_tase_temp_reference(float(n), sizes.tolist(), 0.1, 0.5, e, b, s, mapping, base) for n in sizes]
        assert torch.allclose(got, torch.tensor(ref), atol=1e-12), (e, got, ref)
        if e < b:
            assert torch.all(got == base)
        if e >= s:
            order = torch.argsort(sizes)
            assert torch.all(got[order].diff() >= 0)  # monotone in cluster size
            assert got.min() >= 0.1 - 1e-12 and got.max() <= 0.5 + 1e-12
            assert got[sizes.argmax()] == pytest.approx(0.5) and got[sizes.argmin()] == pytest.approx(0.1)


def test_tase_temperatures_defaults_and_errors():
    sizes = torch.tensor([10, 20, 30])
    assert torch.all(tase_temperatures(sizes, 0.1, 0.5, 0, 5, 10, "linear") == 0.5)  # base_tau None -> tau_max
    same = tase_temperatures(torch.tensor([7, 7]), 0.1, 0.5, 20, 5, 10, "linear")
    assert torch.allclose(same, torch.tensor([0.5, 0.5], dtype=same.dtype))
    ranged = tase_temperatures(sizes, 0.1, 0.5, 20, 5, 10, "linear", size_range=(10, 50))
    assert torch.allclose(ranged, torch.tensor([0.1, 0.2, 0.3], dtype=ranged.dtype))
    assert tase_progress(7.5, 5, 10) == 0.5 and tase_progress(4, 5, 5) == 0.0 and tase_progress(5, 5, 5) == 1.0
    with pytest.raises(ValueError, match="mapping"):
        tase_temperatures(sizes, 0.1, 0.5, 0, 5, 10, mapping="sqrt")
    with pytest.raises(ValueError, match="tau_min"):
        tase_temperatures(sizes, 0.6, 0.5, 0, 5, 10, "linear")
    with pytest.raises(ValueError, match="full_epoch"):
        tase_temperatures(sizes, 0.1, 0.5, 0, 10, 5, "linear")


# --------------------------------------------------------------------------------------------
# TS (Kukleva et al. 2023)
# --------------------------------------------------------------------------------------------

def test_cosine_temperature():
    assert cosine_temperature(0, 0.1, 1.0, 400) == pytest.approx(1.0)
    assert cosine_temperature(200, 0.1, 1.0, 400) == pytest.approx(0.1)
    assert cosine_temperature(100, 0.1, 1.0, 400) == pytest.approx(0.55)
    for e in [0.0, 37.5, 123.0, 310.0]:
        assert cosine_temperature(e + 400, 0.1, 1.0, 400) == pytest.approx(cosine_temperature(e, 0.1, 1.0, 400))
        ref = 0.1 + 0.9 * (1 + math.cos(2 * math.pi * e / 400)) / 2
        assert cosine_temperature(e, 0.1, 1.0, 400) == pytest.approx(ref)
    with pytest.raises(ValueError):
        cosine_temperature(1, 0.1, 1.0, 0)
    with pytest.raises(ValueError):
        cosine_temperature(1, 0.5, 0.1, 10)


# --------------------------------------------------------------------------------------------
# GloCo (paper 001, Eq. 1, Eq. 13, Sec. 3.1)
# --------------------------------------------------------------------------------------------

def test_adaptive_temperature_eq13():
    counts = torch.tensor([500, 250, 50, 5])
    got = adaptive_temperature(counts, 0.1, 1.0)
    ref = [0.1 + 0.9 * c / 500 for c in [500, 250, 50, 5]]
    assert torch.allclose(got, torch.tensor(ref, dtype=got.dtype))
    assert got[0] == pytest.approx(1.0) and got.min() >= 0.1
    assert torch.allclose(adaptive_temperature(counts, 0.1, tau_max=0.5)[[0, 2]],
                          torch.tensor([0.5, 0.1 + 0.4 * 0.1], dtype=got.dtype))
    with pytest.raises(ValueError):
        adaptive_temperature(counts, 0.0, 1.0)
    with pytest.raises(ValueError):
        adaptive_temperature(torch.zeros(3), 0.1, 1.0)


def _gloco_reference(q, pos, neg, tau, neg_mask):
    total, count = 0.0, 0
    for i in range(q.shape[0]):
        for j in range(pos.shape[1]):
            e_pos = math.exp(_cos(q[i], pos[i, j]) / float(tau[i]))
            e_neg = sum(math.exp(_cos(q[i], neg[m]) / float(tau[i]))
                        for m in range(neg.shape[0]) if neg_mask[i][m])
            total += math.log(e_pos / (e_pos + e_neg))
            count += 1
    return -total / count


@pytest.mark.parametrize("seed", SEEDS)
def test_gloco_loss_matches_eq1_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n, k, m, d = 5, 3, 7, 4
    q = torch.randn(n, d, generator=g, dtype=D64)
    pos = torch.randn(n, k + 1, d, generator=g, dtype=D64)
    neg = torch.randn(m, d, generator=g, dtype=D64)
    tau = 0.1 + torch.rand(n, generator=g, dtype=D64)
    mask = torch.rand(n, m, generator=g) > 0.3
    got = gloco_loss(q, pos, neg, tau, negative_mask=mask)
    assert got.item() == pytest.approx(_gloco_reference(q, pos, neg, tau, mask.tolist()), rel=1e-10)
    full = [[True] * m for _ in range(n)]
    assert gloco_loss(q, pos, neg, 0.3).item() == pytest.approx(
        _gloco_reference(q, pos, neg, [0.3] * n, full), rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_gloco_simclr_loss_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n, k, d = 4, 2, 3
    z1, z2 = torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, d, generator=g, dtype=D64)
    gp = torch.randn(n, k, d, generator=g, dtype=D64)
    tau = adaptive_temperature(torch.tensor([40.0, 10.0, 4.0]), 0.2, 1.0)[torch.tensor([0, 1, 2, 0])]
    views = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]
    total, count = 0.0, 0
    for a in range(2 * n):
        i = a % n
        other = views[a + n] if a < n else views[a - n]
        positives = [other] + [gp[i, j] for j in range(k)]
        negs = [views[b] for b in range(2 * n) if b % n != i]
        t = float(tau[i])
        for p in positives:
            e_pos = math.exp(_cos(views[a], p) / t)
            e_neg = sum(math.exp(_cos(views[a], v) / t) for v in negs)
            total += -math.log(e_pos / (e_pos + e_neg))
            count += 1
    assert gloco_simclr_loss(z1, z2, gp, tau).item() == pytest.approx(total / count, rel=1e-10)


def test_gloco_simclr_without_global_positives_is_nt_xent():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(6, 4, generator=g, dtype=D64), torch.randn(6, 4, generator=g, dtype=D64)
    assert gloco_simclr_loss(z1, z2, None, 0.5).item() == pytest.approx(
        tase_loss(z1, z2, 0.5, None).item(), rel=1e-12)


def test_gloco_loss_masks_and_errors():
    g = torch.Generator().manual_seed(7)
    q = torch.randn(3, 4, generator=g, dtype=D64, requires_grad=True)
    pos = torch.randn(3, 2, 4, generator=g, dtype=D64)
    neg = torch.randn(5, 4, generator=g, dtype=D64)
    pmask = torch.tensor([[True, False], [True, True], [True, False]])
    got = gloco_loss(q, pos, neg, 0.2, positive_mask=pmask)
    per = [gloco_loss(q[i:i + 1], pos[i:i + 1, j:j + 1], neg, 0.2).item()
           for i in range(3) for j in range(2) if pmask[i, j]]
    assert got.item() == pytest.approx(sum(per) / len(per), rel=1e-10)
    nomask = torch.zeros(3, 5, dtype=torch.bool)
    loss = gloco_loss(q, pos, neg, 0.2, negative_mask=nomask)  # no negatives: log(1) = 0
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12) and torch.isfinite(q.grad).all()
    with pytest.raises(ValueError):
        gloco_loss(q, pos[:2], neg, 0.2)
    with pytest.raises(ValueError):
        gloco_loss(q, pos, neg, torch.tensor([0.1, -1.0, 0.2]))


def test_sample_global_positive_indices():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, -1, 1, 0, 3])
    anchors = torch.tensor([0, 1, 3, 9, 5, 8])
    g = torch.Generator().manual_seed(0)
    idx = sample_global_positive_indices(anchors, labels, k=50, generator=g)
    assert idx.shape == (6, 50)
    for row, a in enumerate(anchors.tolist()):
        drawn = set(idx[row].tolist())
        assert all(labels[j] == labels[a] for j in drawn)
        if int((labels == labels[a]).sum()) > 1:
            assert a not in drawn
            assert drawn == {j for j in range(10) if labels[j] == labels[a] and j != a}  # uniform over others
        else:
            assert drawn == {a}
    with pytest.raises(ValueError):
        sample_global_positive_indices(torch.tensor([6]), labels, 2)
    with pytest.raises(ValueError):
        sample_global_positive_indices(anchors, labels, 0)


# --------------------------------------------------------------------------------------------
# ProCo (paper 001, Sec. 3.3)
# --------------------------------------------------------------------------------------------

def _kcenter_reference(x, n, first):
    sel = [first]
    while len(sel) < n:
        best, best_d = None, -1.0
        for i in range(x.shape[0]):
            if i in sel:
                continue
            dmin = min(float(((x[i] - x[s]) ** 2).sum()) for s in sel)
            if dmin > best_d:
                best, best_d = i, dmin
        sel.append(best)
    return sel


@pytest.mark.parametrize("seed", SEEDS)
def test_kcenter_greedy_picks_farthest_point(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 3, generator=g, dtype=D64)
    got = kcenter_greedy(x, 8, seed=seed)
    assert len(set(got.tolist())) == 8
    assert got.tolist() == _kcenter_reference(x, 8, int(got[0]))
    assert torch.equal(kcenter_greedy(x, 8, seed=seed), got)  # deterministic given the seed
    assert kcenter_greedy(x.float(), 30, seed=seed).sort().values.tolist() == list(range(30))


def test_kcenter_greedy_duplicates_and_errors():
    x = torch.zeros(5, 2)
    assert sorted(kcenter_greedy(x, 5, seed=0).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        kcenter_greedy(x, 6, seed=0)
    with pytest.raises(ValueError):
        kcenter_greedy(x, 0, seed=0)


def test_kcenter_greedy_per_class():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    labels = torch.tensor([0] * 20 + [1] * 15 + [2] * 3 + [-1] * 2)
    idx = kcenter_greedy_per_class(x, labels, fraction=0.2, seed=1)
    counts = torch.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [4, 3, 1]
    assert (labels[idx] >= 0).all() and torch.equal(idx, idx.sort().values)


def _proco_reference(views, labels, proto_sets, tau):
    total, count = 0.0, 0
    for v in views:
        for i in range(v.shape[0]):
            for protos in proto_sets:
                t = float(tau[i])
                e_pos = math.exp(_cos(v[i], protos[labels[i]]) / t)
                e_neg = sum(math.exp(_cos(v[i], protos[c]) / t) for c in range(protos.shape[0]) if c != labels[i])
                total += -math.log(e_pos / (e_pos + e_neg))
                count += 1
    return total / count


@pytest.mark.parametrize("seed", SEEDS)
def test_proco_loss_matches_symmetric_loop(seed):
    g = torch.Generator().manual_seed(seed)
    n, c, d = 7, 4, 5
    v1, v2 = torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, d, generator=g, dtype=D64)
    labels = torch.randint(0, c, (n,), generator=g)
    core1, core2 = torch.randn(20, d, generator=g, dtype=D64), torch.randn(20, d, generator=g, dtype=D64)
    core_labels = torch.arange(20) % c
    p1, present1 = class_prototypes(core1, core_labels, c)
    p2, _ = class_prototypes(core2, core_labels, c)
    assert present1.all()
    tau = 0.1 + torch.rand(n, generator=g, dtype=D64)
    got = proco_loss(torch.stack([v1, v2]), labels, torch.stack([p1, p2]), tau)
    ref = _proco_reference([v1, v2], labels.tolist(), [p1, p2], tau)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    # prototypes = mean of normalised features of the class
    for cls in range(c):
        members = F.normalize(core1[core_labels == cls], dim=1)
        assert torch.allclose(p1[cls], members.mean(0))
    # single view / single set and scalar tau
    assert proco_loss(v1, labels, p1, 0.3).item() == pytest.approx(
        _proco_reference([v1], labels.tolist(), [p1], [0.3] * n), rel=1e-10)


def test_proco_loss_prototype_mask():
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(5, 3, generator=g, dtype=D64)
    labels = torch.tensor([0, 2, 2, 0, 2])
    protos = torch.randn(3, 3, generator=g, dtype=D64)
    mask = torch.tensor([True, False, True])
    got = proco_loss(feats, labels, protos, 0.5, prototype_mask=mask)
    ref = proco_loss(feats, torch.tensor([0, 1, 1, 0, 1]), protos[[0, 2]], 0.5)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)
    with pytest.raises(ValueError, match="prototype"):
        proco_loss(feats, torch.tensor([1, 2, 2, 0, 2]), protos, 0.5, prototype_mask=mask)
    with pytest.raises(ValueError):
        proco_loss(feats, torch.tensor([0, 3, 2, 0, 2]), protos, 0.5)


# --------------------------------------------------------------------------------------------
# GML (paper 002, Eq. 5, 6, 7, 11)
# --------------------------------------------------------------------------------------------

def _gml_reference(q, contrast, clabels, labels, log_prior, t, alpha, mask=None):
    num_classes = len(log_prior)
    total = 0.0
    for b in range(q.shape[0]):
        logits = []
        for c in range(num_classes):
            terms = [math.exp(_cos(q[b], contrast[k]) / t) for k in range(contrast.shape[0])
                     if clabels[k] == c and (mask is None or mask[b][k])]
            logits.append(math.log(sum(terms) / len(terms)) + alpha * float(log_prior[c]) if terms else -math.inf)
        denom = sum(math.exp(x) for x in logits if x > -math.inf)
        total += -(logits[labels[b]] - math.log(denom))
    return total / q.shape[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_gml_loss_matches_eq5_loop(seed):
    g = torch.Generator().manual_seed(seed)
    b, k, c, d = 6, 15, 4, 5
    q = torch.randn(b, d, generator=g, dtype=D64)
    contrast = torch.randn(k, d, generator=g, dtype=D64)
    clabels = torch.randint(0, c, (k,), generator=g)
    clabels[:c] = torch.arange(c)
    labels = torch.randint(0, c, (b,), generator=g)
    log_prior = log_prior_from_counts(torch.tensor([50.0, 20.0, 5.0, 1.0], dtype=D64))
    for alpha in [1.0, 0.5, 0.0]:
        got = gml_loss(q, contrast, clabels, labels, log_prior, 0.1, alpha=alpha)
        ref = _gml_reference(q, contrast, clabels.tolist(), labels.tolist(), log_prior, 0.1, alpha)
        assert got.item() == pytest.approx(ref, rel=1e-10)
    mask = torch.rand(b, k, generator=g) > 0.3
    mask[:, :c] = True  # every class keeps its first contrast feature for every query
    got = gml_loss(q, contrast, clabels, labels, log_prior, 0.2, alpha=1.0, contrast_mask=mask)
    ref = _gml_reference(q, contrast, clabels.tolist(), labels.tolist(), log_prior, 0.2, 1.0, mask.tolist())
    assert got.item() == pytest.approx(ref, rel=1e-10)


def test_gml_empty_class_is_minus_inf_and_stable():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, 4, generator=g, requires_grad=True)
    contrast = torch.randn(6, 4, generator=g)
    clabels = torch.tensor([0, 0, 2, 2, 2, 0])  # class 1 empty
    lp = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    logits = gml_logits(q, contrast, clabels, lp, 0.01, alpha=1.0)  # tiny temperature: no underflow to -inf
    assert torch.isneginf(logits[:, 1]).all() and torch.isfinite(logits[:, [0, 2]]).all()
    loss = gml_loss(q, contrast, clabels, torch.tensor([0, 2, 0]), lp, 0.01, alpha=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q.grad).all()
    with pytest.raises(ValueError, match="contrast feature"):
        gml_loss(q, contrast, clabels, torch.tensor([1, 2, 0]), lp, 0.1, alpha=1.0)
    # a class emptied for one query only by the mask: -inf for that query, finite gradients
    q.grad = None
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, [2, 3, 4]] = False
    logits = gml_logits(q, contrast, clabels, lp, 0.1, alpha=1.0, contrast_mask=mask)
    assert torch.isneginf(logits[1, 2]) and torch.isfinite(logits[0, 2])
    gml_loss(q, contrast, clabels, torch.tensor([0, 0, 2]), lp, 0.1, alpha=1.0, contrast_mask=mask).backward()
    assert torch.isfinite(q.grad).all()


def test_gml_queue_lengths_eq6():
    prior = torch.tensor([0.5, 0.25, 0.125, 0.125])
    lengths = gml_queue_lengths(prior, k=103, k_m=2)
    raw = [2 + (103 - 8) * p for p in prior.tolist()]  # 49.5, 25.75, 13.875, 13.875
    assert int(lengths.sum()) == 103
    assert (lengths >= 2).all()
    assert all(abs(int(l) - r) < 1 for l, r in zip(lengths, raw))
    assert lengths.tolist() == [49, 26, 14, 14]  # floors sum to 100; +1 to the 3 largest remainders
    assert gml_queue_lengths(torch.tensor([8, 4, 2, 2]), k=103, k_m=2).tolist() == [49, 26, 14, 14]  # counts
    counts = torch.tensor([4500, 2000, 45])
    lc = gml_queue_lengths(counts, k=4096, k_m=2)
    assert int(lc.sum()) == 4096 and lc[2] >= 2 and lc[0] > lc[1] > lc[2]
    with pytest.raises(ValueError):
        gml_queue_lengths(prior, k=7, k_m=2)


def test_class_queues_fifo():
    queues = ClassQueues(torch.tensor([3, 2]), dim=2)
    f0 = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    queues.push(f0, torch.tensor([0, 0, 1, 0, 0]))
    feats, labels = queues.contents()
    assert sorted(labels.tolist()) == [0, 0, 0, 1]
    kept0 = {tuple(r) for r in feats[labels == 0].tolist()}
    assert kept0 == {(2.0, 3.0), (6.0, 7.0), (8.0, 9.0)}  # oldest of class 0 dropped
    queues.push(torch.tensor([[100.0, 100.0], [200.0, 200.0], [300.0, 300.0]]), torch.tensor([1, 1, 1]))
    feats, labels = queues.contents()
    assert {tuple(r) for r in feats[labels == 1].tolist()} == {(200.0, 200.0), (300.0, 300.0)}


@pytest.mark.parametrize("seed", SEEDS)
def test_logit_adjusted_cosine_logits_eq7(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 5, generator=g, dtype=D64)
    w = torch.randn(3, 5, generator=g, dtype=D64)
    lp = log_prior_from_counts(torch.tensor([60.0, 30.0, 10.0], dtype=D64))
    got = logit_adjusted_cosine_logits(x, w, lp, 0.7, 30.0)
    for i in range(4):
        for c in range(3):
            assert got[i, c].item() == pytest.approx(30.0 * _cos(x[i], w[c]) + 0.7 * float(lp[c]), rel=1e-12)
    plain = logit_adjusted_cosine_logits(x, w, lp, 0.0, 30.0)
    assert torch.allclose(got - plain, (0.7 * lp).expand(4, 3))
    # head classes get the larger additive term (eta_c = log p(c) is largest for the head)
    assert (got - plain)[0, 0] > (got - plain)[0, 2]

"""Tests for ltcl.losses.contrastive (NT-Xent) and ltcl.losses.kdup (KDUP, paper 003, Eq. 8-13).

Every loss is compared with a direct double-loop implementation written from the paper's formula
(python loops, math.exp / math.log, float64).
"""

from __future__ import annotations

import math

import pytest
import torch

from ltcl.losses.contrastive import cosine_matrix, nt_xent
from ltcl.losses.kdup import (
    domain_loss,
    guided_contrastive_loss,
    guided_learning_loss,
    psd_loss,
    similarity_distillation_loss,
)

SEEDS = [0, 1, 2, 3]
TEMPS = [0.07, 0.2, 0.5, 1.0]


# ----------------------------------------------------------------------------- reference loops
def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return dot / (na * nb)


def _rows(x: torch.Tensor) -> list[list[float]]:
    return x.detach().double().tolist()


def ref_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    views = _rows(z1) + _rows(z2)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        p = i + n if i < n else i - n
        num = math.exp(_cos(views[i], views[p]) / t)
        den = sum(math.exp(_cos(views[i], views[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(num / den)
    return total / (2 * n)


def ref_psd(z: torch.Tensor, pos_mask: torch.Tensor, t: float) -> float:
    """Eq. 8: -1/|Z^B| sum_i log(sum_pos exp / sum_neg exp); anchors with empty S_pos or S_neg skipped."""
    rows = _rows(z)
    m = pos_mask.tolist()
    n = len(rows)
    terms = []
    for i in range(n):
        num = 0.0
        den = 0.0
        n_pos = n_neg = 0
        for j in range(n):
            if j == i:
                continue
            e = math.exp(_cos(rows[i], rows[j]) / t)
            if m[i][j]:
                num += e
                n_pos += 1
            else:
                den += e
                n_neg += 1
        if n_pos and n_neg:
            terms.append(-math.log(num / den))
    return sum(terms) / len(terms) if terms else 0.0


def ref_domain(z: torch.Tensor, domain: torch.Tensor, t: float) -> float:
    """Eq. 9; anchors without a same-domain partner are excluded from the outer mean."""
    rows = _rows(z)
    d = domain.tolist()
    n = len(rows)
    terms = []
    for i in range(n):
        same = [p for p in range(n) if p != i and d[p] == d[i]]
        diff = [k for k in range(n) if d[k] != d[i]]
        if not same:
            continue
        neg_sum = sum(math.exp(_cos(rows[i], rows[k]) / t) for k in diff)
        acc = 0.0
        for p in same:
            e = math.exp(_cos(rows[i], rows[p]) / t)
            acc += math.log(e / (e + neg_sum))
        terms.append(-acc / len(same))
    return sum(terms) / len(terms) if terms else 0.0


def ref_gcl(y, y_pos, y_neg, z, z_pos, z_neg, weighted: bool = True) -> float:
    Y, YP, YN, Z, ZP, ZN = (_rows(x) for x in (y, y_pos, y_neg, z, z_pos, z_neg))
    total = 0.0
    for i in range(len(Y)):
        w_pos = _cos(Z[i], ZP[i]) if weighted else 0.0
        w_neg = _cos(Z[i], ZN[i]) if weighted else 0.0
        total += (1 + w_pos) * (1 - _cos(Y[i], YP[i])) + (1 - w_neg) * (1 + _cos(Y[i], YN[i]))
    return total / len(Y)


def ref_dl(y, z) -> float:
    Y, Z = _rows(y), _rows(z)
    b = len(Y)
    total = 0.0
    for i in range(b):
        for j in range(b):
            if j != i:
                total += (_cos(Z[i], Z[j]) - _cos(Y[i], Y[j])) ** 2
    return total / (b * (b - 1))


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _sizes(seed: int) -> tuple[int, int]:
    gen = torch.Generator().manual_seed(1000 + seed)
    n = int(torch.randint(5, 13, (1,), generator=gen))
    d = int(torch.randint(3, 9, (1,), generator=gen))
    return n, d


# ----------------------------------------------------------------------------- cosine_matrix
def test_cosine_matrix_matches_loop():
    gen = torch.Generator().manual_seed(0)
    a, b = _randn(gen, 6, 4), _randn(gen, 5, 4)
    s = cosine_matrix(a, b)
    assert s.shape == (6, 5)
    for i in range(6):
        for j in range(5):
            assert s[i, j].item() == pytest.approx(_cos(_rows(a)[i], _rows(b)[j]), abs=1e-12)
    assert torch.allclose(cosine_matrix(a), cosine_matrix(a, a))
    with pytest.raises(ValueError, match="feature dimension"):
        cosine_matrix(a, _randn(gen, 5, 3))


# ----------------------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("t", TEMPS)
def test_nt_xent_matches_loop(seed, t):
    n, d = _sizes(seed)
    gen = torch.Generator().manual_seed(seed)
    z1, z2 = _randn(gen, n, d), _randn(gen, n, d)
    assert nt_xent(z1, z2, t).item() == pytest.approx(ref_nt_xent(z1, z2, t), rel=1e-9, abs=1e-12)


def test_nt_xent_scale_invariant_and_float32():
    gen = torch.Generator().manual_seed(5)
    z1, z2 = _randn(gen, 8, 6), _randn(gen, 8, 6)
    base = nt_xent(z1, z2, 0.2)
    assert torch.allclose(base, nt_xent(3.7 * z1, 0.01 * z2, 0.2))
    out32 = nt_xent(z1.float(), z2.float(), 0.2)
    assert out32.dtype == torch.float32
    assert out32.item() == pytest.approx(base.item(), rel=1e-5)


def test_nt_xent_identical_views_lower_than_random():
    gen = torch.Generator().manual_seed(7)
    z = _randn(gen, 10, 8)
    other = _randn(gen, 10, 8)
    assert nt_xent(z, z, 0.2) < nt_xent(z, other, 0.2)


def test_nt_xent_gradients_finite_and_input_checks():
    gen = torch.Generator().manual_seed(8)
    z1 = _randn(gen, 6, 4).requires_grad_(True)
    z2 = _randn(gen, 6, 4).requires_grad_(True)
    nt_xent(z1, z2, 0.05).backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert z1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z2, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(z1, z2[:5], 0.2)
    with pytest.raises(ValueError, match="2-D"):
        nt_xent(z1[0], z2[0], 0.2)


# ----------------------------------------------------------------------------- PSD (Eq. 8)
def _random_pos_mask(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    mask = torch.rand(n, n, generator=gen) < p
    mask[0] = False  # an anchor without positives
    mask[1] = True  # an anchor without negatives (every other sample positive)
    return mask


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("t", TEMPS)
def test_psd_matches_loop(seed, t):
    n, d = _sizes(seed)
    gen = torch.Generator().manual_seed(seed)
    z = _randn(gen, n, d)
    mask = _random_pos_mask(gen, n, p=0.3)
    out = psd_loss(z, mask, t)
    assert out.item() == pytest.approx(ref_psd(z, mask, t), rel=1e-9, abs=1e-12)


def test_psd_diagonal_ignored_and_scale_invariant():
    gen = torch.Generator().manual_seed(11)
    z = _randn(gen, 9, 5)
    mask = _random_pos_mask(gen, 9, p=0.4)
    with_diag = mask.clone().fill_diagonal_(True)
    without_diag = mask.clone().fill_diagonal_(False)
    a = psd_loss(z, with_diag, 0.2)
    assert torch.allclose(a, psd_loss(z, without_diag, 0.2))
    assert torch.allclose(a, psd_loss(12.5 * z, with_diag, 0.2))


def test_psd_denominator_holds_negatives_only():
    # One positive pair among 3 samples, the third is the single negative: the loss is exactly
    # -(s_01 - s_02)/t for anchor 0 (no positive in the denominator), not an InfoNCE value.
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 1] = True
    t = 0.5
    expected = -(0.6 - 0.0) / t
    assert psd_loss(z, mask, t).item() == pytest.approx(expected, abs=1e-12)


def test_psd_no_positive_row_returns_zero_with_grad():
    gen = torch.Generator().manual_seed(12)
    z = _randn(gen, 6, 4).requires_grad_(True)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    out = psd_loss(z, mask, 0.2)
    assert out.item() == 0.0
    out.backward()
    assert z.grad is not None and torch.all(z.grad == 0)


def test_psd_gradients_finite_and_gradcheck():
    gen = torch.Generator().manual_seed(13)
    z = _randn(gen, 7, 4).requires_grad_(True)
    mask = _random_pos_mask(gen, 7, p=0.3)
    psd_loss(z, mask, 0.1).backward()
    assert torch.isfinite(z.grad).all()
    assert torch.autograd.gradcheck(lambda x: psd_loss(x, mask, 0.3), (z.detach().clone().requires_grad_(True),))


def test_psd_input_checks():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="bool"):
        psd_loss(z, torch.zeros(4, 4), 0.2)
    with pytest.raises(ValueError, match="shape"):
        psd_loss(z, torch.zeros(3, 3, dtype=torch.bool), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        psd_loss(z, torch.zeros(4, 4, dtype=torch.bool), -1.0)


# ----------------------------------------------------------------------------- DD (Eq. 9)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("t", TEMPS)
def test_domain_loss_matches_loop_unequal_domains(seed, t):
    n, d = _sizes(seed)
    gen = torch.Generator().manual_seed(seed)
    z = _randn(gen, n, d)
    domain = torch.zeros(n, dtype=torch.long)
    domain[: n // 3] = 1  # two domains of unequal sizes
    domain = domain[torch.randperm(n, generator=gen)]
    out = domain_loss(z, domain, t)
    assert out.item() == pytest.approx(ref_domain(z, domain, t), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_domain_loss_anchor_alone_in_its_domain_is_excluded(seed):
    gen = torch.Generator().manual_seed(seed)
    n = 8
    z = _randn(gen, n, 5)
    domain = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2])  # sample 7 alone in domain 2
    out = domain_loss(z, domain, 0.2)
    assert out.item() == pytest.approx(ref_domain(z, domain, 0.2), rel=1e-9)
    # Documented choice: anchor 7 (empty S_i^s) is excluded from the mean, not counted as a 0 term.
    rows, t = _rows(z), 0.2
    terms = []
    for i in range(7):
        same = [p for p in range(n) if p != i and domain[p] == domain[i]]
        neg = sum(math.exp(_cos(rows[i], rows[k]) / t) for k in range(n) if domain[k] != domain[i])
        acc = sum(math.log(math.exp(_cos(rows[i], rows[p]) / t) / (math.exp(_cos(rows[i], rows[p]) / t) + neg)) for p in same)
        terms.append(-acc / len(same))
    assert out.item() == pytest.approx(sum(terms) / 7, rel=1e-9)
    assert out.item() != pytest.approx(sum(terms) / 8, rel=1e-6)
    # Sample 7 still acts as a negative for everyone else, so dropping it from z changes the value.
    assert out.item() != pytest.approx(domain_loss(z[:7], domain[:7], 0.2).item(), rel=1e-6)
    z_req = z.clone().requires_grad_(True)
    domain_loss(z_req, domain, 0.2).backward()
    assert torch.isfinite(z_req.grad).all()
    assert z_req.grad[7].abs().sum() > 0  # it receives gradient as a negative


def test_domain_loss_edge_cases():
    gen = torch.Generator().manual_seed(21)
    z = _randn(gen, 5, 3).requires_grad_(True)
    # every sample in its own domain: no anchor has a positive -> zero with grad
    out = domain_loss(z, torch.arange(5), 0.2)
    assert out.item() == 0.0
    out.backward()
    assert torch.all(z.grad == 0)
    # a single domain: no negatives, each term is log(1) = 0
    z.grad = None
    out = domain_loss(z, torch.zeros(5, dtype=torch.long), 0.2)
    assert out.item() == pytest.approx(0.0, abs=1e-12)
    out.backward()
    assert torch.isfinite(z.grad).all()
    # scale invariance and float32
    dom = torch.tensor([0, 1, 0, 1, 1])
    base = domain_loss(z.detach(), dom, 0.2)
    assert torch.allclose(base, domain_loss(4.0 * z.detach(), dom, 0.2))
    assert domain_loss(z.detach().float(), dom, 0.2).item() == pytest.approx(base.item(), rel=1e-5)
    assert torch.autograd.gradcheck(lambda x: domain_loss(x, dom, 0.3), (z.detach().clone().requires_grad_(True),))
    with pytest.raises(ValueError, match="integer"):
        domain_loss(z, torch.zeros(5), 0.2)
    with pytest.raises(ValueError, match="shape"):
        domain_loss(z, torch.zeros(4, dtype=torch.long), 0.2)


# L_CPT (Eq. 10) = L_PSD + alpha * L_DD is the PSD method's step: tests/test_losses_colt.py::
# test_psd_step_uses_the_configured_domain_loss checks it against the two terms verified above.


# ----------------------------------------------------------------------------- L_GCL (Eq. 11)
def _six(seed: int, b: int | None = None, d: int | None = None) -> list[torch.Tensor]:
    n, dd = _sizes(seed)
    b = b or n
    d = d or dd
    gen = torch.Generator().manual_seed(seed)
    return [_randn(gen, b, d) for _ in range(6)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [True, False])
def test_gcl_matches_loop(seed, weighted):
    tensors = _six(seed)
    out = guided_contrastive_loss(*tensors, weighted=weighted)
    assert out.item() == pytest.approx(ref_gcl(*tensors, weighted=weighted), rel=1e-9)


def test_gcl_gradients_reach_y_not_z():
    y, y_pos, y_neg, z, z_pos, z_neg = (x.requires_grad_(True) for x in _six(41))
    guided_contrastive_loss(y, y_pos, y_neg, z, z_pos, z_neg).backward()
    for x in (y, y_pos, y_neg):
        assert x.grad is not None and x.grad.abs().sum() > 0
    for x in (z, z_pos, z_neg):
        assert x.grad is None or torch.all(x.grad == 0)


def test_gcl_unweighted_ignores_guide_and_weights_change_value():
    y, y_pos, y_neg, z, z_pos, z_neg = _six(42)
    unweighted = guided_contrastive_loss(y, y_pos, y_neg, z, z_pos, z_neg, weighted=False)
    assert torch.allclose(unweighted, guided_contrastive_loss(y, y_pos, y_neg, -z, z_pos * 3, z_neg, weighted=False))
    weighted = guided_contrastive_loss(y, y_pos, y_neg, z, z_pos, z_neg, weighted=True)
    assert not torch.allclose(weighted, unweighted)
    # perfect guide agreement (w_pos = 1, w_neg = -1) doubles both attractive and repulsive terms
    doubled = guided_contrastive_loss(y, y_pos, y_neg, z, z, -z, weighted=True)
    assert doubled.item() == pytest.approx(2 * unweighted.item(), rel=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        guided_contrastive_loss(y, y_pos[:-1], y_neg, z, z_pos, z_neg)


# ----------------------------------------------------------------------------- L_DL (Eq. 12)
@pytest.mark.parametrize("seed", SEEDS)
def test_dl_matches_loop(seed):
    y, z = _six(seed)[:2]
    assert similarity_distillation_loss(y, z).item() == pytest.approx(ref_dl(y, z), rel=1e-9)


def test_dl_gradients_reach_y_not_z_and_zero_at_match():
    y, z = (x.requires_grad_(True) for x in _six(51)[:2])
    similarity_distillation_loss(y, z).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert z.grad is None or torch.all(z.grad == 0)
    # identical geometry (up to per-row scale) -> zero loss
    zz = z.detach()
    assert similarity_distillation_loss(2.0 * zz, zz).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 rows"):
        similarity_distillation_loss(zz[:1], zz[:1])
    with pytest.raises(ValueError, match="batch size"):
        similarity_distillation_loss(zz[:3], zz[:4])


# ----------------------------------------------------------------------------- L_GL (Eq. 13)
@pytest.mark.parametrize("weighted", [True, False])
def test_guided_learning_loss_is_gcl_plus_beta_dl(weighted):
    tensors = [x.requires_grad_(True) for x in _six(61)]
    total, parts = guided_learning_loss(*tensors, 0.4, weighted=weighted)
    assert set(parts) == {"gcl", "dl"}
    assert parts["gcl"].item() == pytest.approx(ref_gcl(*tensors, weighted=weighted), rel=1e-9)
    assert parts["dl"].item() == pytest.approx(ref_dl(tensors[0], tensors[3]), rel=1e-9)
    assert total.item() == pytest.approx(parts["gcl"].item() + 0.4 * parts["dl"].item(), rel=1e-12)
    total.backward()
    assert tensors[0].grad.abs().sum() > 0
    for x in tensors[3:]:
        assert x.grad is None or torch.all(x.grad == 0)


# ----------------------------------------------------------------------------- float32, low temperature
def test_float32_low_temperature_finite():
    gen = torch.Generator().manual_seed(71)
    z = torch.randn(12, 8, generator=gen).requires_grad_(True)
    mask = _random_pos_mask(gen, 12, p=0.25)
    dom = torch.tensor([0] * 9 + [1] * 2 + [2])
    z2 = torch.randn(12, 8, generator=gen)
    total = nt_xent(z, z2, 0.01) + psd_loss(z, mask, 0.01) + 0.3 * domain_loss(z, dom, 0.01)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert torch.isfinite(z.grad).all()
    ref = ref_nt_xent(z, z2, 0.01) + ref_psd(z, mask, 0.01) + 0.3 * ref_domain(z, dom, 0.01)
    assert total.item() == pytest.approx(ref, rel=1e-4)

"""COLT's domain-discrimination loss as COLT's released code computes it
(``ltcl.losses.kdup.domain_loss_colt``; JianhongBai/COLT ``utils.py``, ``nt_xent`` with ``args.COLT``)
and its wiring by ``pretrain.domain_loss``.

The reference is a direct Python loop (math.exp / math.log, float64) written from the formula:
for anchor i and every other sample p of i's domain (the anchor's own other view included),
``-log(exp(z_i.z_p/t) / (pos_i + Ng_i))`` with ``pos_i + Ng_i = sum_{j != i} exp(z_i.z_j/t)``,
averaged over p, then over the anchors that have such a p.  Eq. 9 (``domain_loss``) has
``exp(z_i.z_p/t) + sum_{n in other domains} exp(z_i.z_n/t)`` as the denominator instead.
"""

from __future__ import annotations

import math

import pytest
import torch

from ltcl.losses.contrastive import nt_xent
from ltcl.losses.kdup import domain_loss, domain_loss_colt
from ltcl.methods.contrastive import DOMAIN_LOSSES
from ltcl.params import Params
from test_glue_contrastive import (
    ALPHA,
    K_POS,
    N_ID,
    TEMP,
    assert_loss,
    assert_views,
    batch,
    make_method,
    psd_reference,
    reference_neighbours,
    snapshot,
    z_of,
)
from test_losses_kdup import ref_domain, ref_nt_xent


# ----------------------------------------------------------------------------- reference loops
def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def ref_colt(z: torch.Tensor, domain: torch.Tensor, t: float) -> float:
    """COLT's domain term written from the formula; anchors without a same-domain partner skipped."""
    rows = z.detach().double().tolist()
    d = domain.tolist()
    n = len(rows)
    terms = []
    for i in range(n):
        same = [p for p in range(n) if p != i and d[p] == d[i]]
        if not same:
            continue
        denom = sum(math.exp(_cos(rows[i], rows[j]) / t) for j in range(n) if j != i)  # pos_i + Ng_i
        acc = 0.0
        for p in same:
            acc += -math.log(math.exp(_cos(rows[i], rows[p]) / t) / denom)
        terms.append(acc / len(same))
    return sum(terms) / len(terms) if terms else 0.0


def ref_colt_total(z1: torch.Tensor, z2: torch.Tensor, ood: list[bool], t: float, sup_weight: float) -> float:
    """COLT's whole ``nt_xent`` (COLT=True) per anchor: rows [view 1; view 2], NT-Xent on the pair
    plus sup_weight * the mean over same-domain p of -log(exp(s_ip) / (pos_i + Ng_i))."""
    rows = z1.detach().double().tolist() + z2.detach().double().tolist()
    b = len(z1)
    dom = ood + ood
    total = 0.0
    for i in range(2 * b):
        e = [math.exp(_cos(rows[i], rows[j]) / t) for j in range(2 * b)]
        other = i + b if i < b else i - b
        pos = e[other]
        ng = sum(e[j] for j in range(2 * b) if j not in (i, other))
        loss = -math.log(pos / (pos + ng))
        same = [p for p in range(2 * b) if p != i and dom[p] == dom[i]]
        sup = sum(-math.log(e[p] / (pos + ng)) for p in same) / len(same)
        total += loss + sup_weight * sup
    return total / (2 * b)


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _pairs(gen: torch.Generator, b: int, d: int, noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 'views' of b random images: the second is the first plus noise."""
    z1 = _randn(gen, b, d)
    return z1, z1 + noise * _randn(gen, b, d)


# ----------------------------------------------------------------------------- vectorised == loop
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("t", [0.07, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("n_domains", [2, 3])
def test_colt_matches_loop(seed, t, n_domains):
    gen = torch.Generator().manual_seed(100 * n_domains + seed)
    b = int(torch.randint(4, 10, (1,), generator=gen))
    d = int(torch.randint(3, 9, (1,), generator=gen))
    z1, z2 = _pairs(gen, b, d)
    dom = torch.randint(0, n_domains, (b,), generator=gen)
    z, domain = torch.cat([z1, z2]), torch.cat([dom, dom])
    out = domain_loss_colt(z, domain, t)
    assert out.dtype == torch.float64
    assert out.item() == pytest.approx(ref_colt(z, domain, t), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_colt_matches_loop_unpaired_rows_and_lone_anchors(seed):
    """Arbitrary rows (no view structure), 3 domains, two anchors alone in their domain."""
    gen = torch.Generator().manual_seed(seed)
    z = _randn(gen, 9, 5)
    domain = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 3])  # 7 and 8 are alone
    out = domain_loss_colt(z, domain, 0.2)
    ref = ref_colt(z, domain, 0.2)
    assert out.item() == pytest.approx(ref, rel=1e-9)
    # lone anchors are excluded from the mean (7 terms), not counted as 0 (9 terms) ...
    rows, t = z.tolist(), 0.2
    terms = []
    for i in range(7):
        denom = sum(math.exp(_cos(rows[i], rows[j]) / t) for j in range(9) if j != i)
        same = [p for p in range(7) if p != i and domain[p] == domain[i]]
        terms.append(sum(-math.log(math.exp(_cos(rows[i], rows[p]) / t) / denom) for p in same) / len(same))
    assert out.item() == pytest.approx(sum(terms) / 7, rel=1e-9)
    assert out.item() != pytest.approx(sum(terms) / 9, rel=1e-6)
    # ... but stay in everyone's denominator (and get gradient from there)
    assert out.item() != pytest.approx(domain_loss_colt(z[:7], domain[:7], 0.2).item(), rel=1e-6)
    z_req = z.clone().requires_grad_(True)
    domain_loss_colt(z_req, domain, 0.2).backward()
    assert torch.isfinite(z_req.grad).all() and z_req.grad[7].abs().sum() > 0


def test_colt_single_domain_batch_is_not_zero():
    """One domain: Eq. 9 is log(1) = 0, COLT's term is a log-softmax over every other row."""
    gen = torch.Generator().manual_seed(7)
    z1, z2 = _pairs(gen, 6, 4)
    z, domain = torch.cat([z1, z2]), torch.zeros(12, dtype=torch.long)
    out = domain_loss_colt(z, domain, 0.2)
    assert out.item() == pytest.approx(ref_colt(z, domain, 0.2), rel=1e-9)
    assert out.item() > 1.0
    assert domain_loss(z, domain, 0.2).item() == pytest.approx(0.0, abs=1e-12)


def test_colt_equals_eq9_when_each_domain_is_one_pair():
    """The denominators differ only by the *other* same-domain samples: with exactly one partner
    per anchor (each domain a single pair) the two losses coincide."""
    gen = torch.Generator().manual_seed(3)
    z = _randn(gen, 8, 5)
    domain = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert domain_loss_colt(z, domain, 0.3).item() == pytest.approx(domain_loss(z, domain, 0.3).item(), rel=1e-12)


def test_colt_edge_cases_and_checks():
    gen = torch.Generator().manual_seed(21)
    z = _randn(gen, 5, 3).requires_grad_(True)
    out = domain_loss_colt(z, torch.arange(5), 0.2)  # no anchor has a partner
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.all(z.grad == 0)
    dom = torch.tensor([0, 1, 0, 1, 1])
    base = domain_loss_colt(z.detach(), dom, 0.2)
    assert torch.allclose(base, domain_loss_colt(4.0 * z.detach(), dom, 0.2))  # normalised inside
    assert domain_loss_colt(z.detach().float(), dom, 0.2).item() == pytest.approx(base.item(), rel=1e-5)
    assert torch.autograd.gradcheck(lambda x: domain_loss_colt(x, dom, 0.3), (z.detach().clone().requires_grad_(True),))
    with pytest.raises(ValueError, match="integer"):
        domain_loss_colt(z, torch.zeros(5), 0.2)
    with pytest.raises(ValueError, match="integer"):
        domain_loss_colt(z, torch.zeros(5, dtype=torch.bool), 0.2)
    with pytest.raises(ValueError, match="shape"):
        domain_loss_colt(z, torch.zeros(4, dtype=torch.long), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        domain_loss_colt(z, dom, 0.0)
    with pytest.raises(ValueError, match="2-D"):
        domain_loss_colt(z[0], dom, 0.2)


# ----------------------------------------------------------------------------- the issue's configuration
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_issue_configuration_colt_differs_from_eq9(seed):
    """16 pairs (N = 32), half of the images OOD, t = 0.2, float64: COLT's term is the loop's,
    larger than Eq. 9 (every (i, p) term has a larger denominator), and COLT's whole nt_xent
    (COLT=True, sup_weight = alpha) = ltcl's NT-Xent + alpha * domain_loss_colt, i.e. the
    NT-Xent parts agree and only the domain term differs."""
    gen = torch.Generator().manual_seed(seed)
    b, t = 16, 0.2
    z1, z2 = _randn(gen, b, 16), _randn(gen, b, 16)
    ood = torch.zeros(b, dtype=torch.long)
    ood[torch.randperm(b, generator=gen)[: b // 2]] = 1
    z, domain = torch.cat([z1, z2]), torch.cat([ood, ood])

    colt = domain_loss_colt(z, domain, t).item()
    eq9 = domain_loss(z, domain, t).item()
    ntx = nt_xent(z1, z2, t).item()
    print(f"seed {seed}: COLT {colt:.4f}, Eq. 9 {eq9:.4f}, NT-Xent {ntx:.4f}")
    assert colt == pytest.approx(ref_colt(z, domain, t), rel=1e-9)
    assert eq9 == pytest.approx(ref_domain(z, domain, t), rel=1e-9)
    assert ntx == pytest.approx(ref_nt_xent(z1, z2, t), rel=1e-9)
    assert colt > eq9 + 0.3  # same order of gap as the issue's 3.794 vs 3.170

    w = 0.3
    total = ref_colt_total(z1, z2, [bool(v) for v in ood], t, w)
    assert total == pytest.approx(ntx + w * colt, rel=1e-9)
    assert total != pytest.approx(ntx + w * eq9, rel=1e-3)


# ----------------------------------------------------------------------------- glue: pretrain.domain_loss
def test_domain_loss_setting():
    assert Params.model_validate({}).pretrain.domain_loss == "eq9"
    assert DOMAIN_LOSSES == {"eq9": domain_loss, "colt": domain_loss_colt}


LOSSES = {"eq9": domain_loss, "colt": domain_loss_colt}


def _distinct(z, dom, choice):
    """The configured L_DD, after checking the other choice would give a visibly different step."""
    dd = LOSSES[choice](z, dom, TEMP)
    other = LOSSES["colt" if choice == "eq9" else "eq9"](z, dom, TEMP)
    assert float(dd) > 0.1 and ALPHA * abs(float(dd) - float(other)) > 1e-3
    return dd


@pytest.mark.parametrize("choice", ["eq9", "colt"])
def test_simclr_step_uses_the_configured_domain_loss(choice):
    """SimCLR + OOD images (COLT): loss = NT-Xent + alpha * L_DD, L_DD = Eq. 9 or COLT's code's
    term as ``pretrain.domain_loss`` says, on both views' projections with each row's domain."""
    m = make_method("simclr", True, domain_loss=choice)
    m.on_epoch_start(0)
    m.model.train()
    idx = batch(True)
    ref, _ = snapshot(m)
    out = m.training_step(idx)
    v1, v2 = assert_views(m, idx, 2)

    z = z_of(ref, torch.cat([v1, v2]))
    z1, z2 = z[: len(idx)], z[len(idx):]
    contrastive = nt_xent(z1, z2, TEMP)
    dom = (idx >= N_ID).long()
    assert 0 < int(dom.sum()) < len(idx)
    dd = _distinct(torch.cat([z1, z2]), torch.cat([dom, dom]), choice)
    assert_loss(out, contrastive + ALPHA * dd, {"contrastive": contrastive, "dd": dd})


@pytest.mark.parametrize("choice", ["eq9", "colt"])
def test_psd_step_uses_the_configured_domain_loss(choice):
    """PSD (neighbours in the batch): loss = L_PSD + alpha * the configured L_DD over all rows."""
    m = make_method("psd", True, domain_loss=choice)
    m.on_epoch_start(0)
    nb_ref = reference_neighbours(m, K_POS)
    m.model.train()
    idx = batch(True)
    ref, _ = snapshot(m)
    out = m.training_step(idx)
    views = assert_views(m, idx, 3)
    z, _, dom, psd = psd_reference(m, idx, nb_ref, views, ref, None)
    dd = _distinct(z, dom, choice)
    assert_loss(out, psd + ALPHA * dd, {"psd": psd, "dd": dd})

"""Tests for ltcl.losses.gh (GH, Zhou et al. NeurIPS 2023, released code MediaBrain-SJTU/
Geometric-Harmonization @ 9f7057c).

Each function is compared with a direct python loop over the released code's expression
(utils.py:14-58, train_cifar.py:125-290, gen_target.py:5-10): math.exp / math.log, float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltcl.losses.gh import (
    ema_beta,
    gh_loss,
    gh_weight,
    moving_average_update,
    prior_from_argmax,
    prior_refresh_due,
    simplex_etf,
    sinkhorn,
    target_logits,
)

SEEDS = [0, 1, 2]


# ----------------------------------------------------------------------------- reference loops
def _rows(x: torch.Tensor) -> list[list[float]]:
    return x.detach().double().tolist()


def ref_sinkhorn(scores: list[list[float]], prior, eps: float, iters: int) -> list[list[float]]:
    """utils.py:32-58 written out: Q is K x N, r = inv_K / (Q c), c = inv_N / (Q^T r), N * (r Q c^T)^T."""
    n, k = len(scores), len(scores[0])
    q = [[math.exp(scores[i][j] / eps) for i in range(n)] for j in range(k)]  # (K, N)
    if prior is None:
        inv_k = [1.0 / k] * k
    else:
        tot = sum(prior)
        inv_k = [p / tot for p in prior]
    inv_n = 1.0 / n
    c = [1.0 / n] * n
    r = [1.0 / k] * k
    for _ in range(iters):
        r = [inv_k[j] / sum(q[j][i] * c[i] for i in range(n)) for j in range(k)]
        c = [inv_n / sum(q[j][i] * r[j] for j in range(k)) for i in range(n)]
    return [[r[j] * q[j][i] * c[i] * n for j in range(k)] for i in range(n)]


def ref_log_softmax(row: list[float], gamma: float) -> list[float]:
    m = max(v / gamma for v in row)
    lse = m + math.log(sum(math.exp(v / gamma - m) for v in row))
    return [v / gamma - lse for v in row]


def ref_gh_loss(t1, t2, prior, eps, iters, gamma) -> float:
    """utils.py:20-25 with a double loop over samples i and classes k."""
    q1 = ref_sinkhorn(t1, prior, eps, iters)
    q2 = ref_sinkhorn(t2, prior, eps, iters)
    n, k = len(t1), len(t1[0])
    a = b = 0.0
    for i in range(n):
        lp2 = ref_log_softmax(t2[i], gamma)
        lp1 = ref_log_softmax(t1[i], gamma)
        for j in range(k):
            a += q1[i][j] * lp2[j]
            b += q2[i][j] * lp1[j]
    return -a / n - b / n


def released_sinkhorn_torch(out: torch.Tensor, l: float, iters: int, stat=None) -> torch.Tensor:
    """utils.py:33-58 verbatim, less the ``.cuda()`` calls (float32, as released)."""
    Q = torch.exp(out / l).t()
    N = Q.shape[1]
    K = Q.shape[0]
    r = torch.ones((K, 1)) / K
    c = torch.ones((N, 1)) / N
    if stat is None:
        inv_K = 1.0 / K
    else:
        inv_K = stat.clone().detach().reshape(K, 1).float()
        inv_K = inv_K / torch.sum(inv_K)
    inv_N = 1.0 / N
    for _ in range(iters):
        r = inv_K / (Q @ c)
        c = inv_N / (Q.T @ r)
    Q = r * Q * c.t()
    Q = Q.t()
    Q *= N
    return Q


def _logits(n: int, k: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, k, generator=g, dtype=dtype), dim=1)


def _prior(k: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + seed)
    return torch.rand(k, generator=g, dtype=dtype) + 0.05  # unnormalised on purpose


# ----------------------------------------------------------------------------- ETF
@pytest.mark.parametrize("k,d", [(2, 2), (5, 8), (10, 10), (100, 128)])
def test_simplex_etf_geometry(k, d):
    m = simplex_etf(k, d, seed=3)
    assert m.shape == (k, d) and m.dtype == torch.float64
    rows = _rows(m)
    for a in range(k):
        assert math.isclose(math.sqrt(sum(x * x for x in rows[a])), 1.0, abs_tol=1e-12)
        for b in range(a + 1, k):
            cos = sum(x * y for x, y in zip(rows[a], rows[b]))
            assert math.isclose(cos, -1.0 / (k - 1), abs_tol=1e-12)
    for col in range(d):  # the K directions are centred: they sum to the zero vector
        assert abs(sum(rows[a][col] for a in range(k))) < 1e-12


def test_simplex_etf_matches_released_formula_and_seed():
    """gen_target.py:7-9 with the polar factor from scipy, on the same Gaussian draw."""
    linalg = pytest.importorskip("scipy.linalg")
    import numpy as np

    k, d, seed = 6, 9, 4
    a = torch.randn(k, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    u, _ = linalg.polar(a)
    expected = np.sqrt(k / (k - 1)) * (np.eye(k) - np.ones(k) / k) @ u
    got = simplex_etf(k, d, seed=seed)
    assert np.allclose(got.numpy(), expected, atol=1e-12)
    assert torch.equal(simplex_etf(k, d, seed=seed), got)
    assert not torch.allclose(simplex_etf(k, d, seed=seed + 1), got)
    assert simplex_etf(k, d, seed=seed, dtype=torch.float32).dtype == torch.float32


def test_simplex_etf_rejects_bad_sizes():
    with pytest.raises(ValueError):
        simplex_etf(1, 4, seed=0)
    with pytest.raises(ValueError):
        simplex_etf(5, 4, seed=0)  # K = d + 1: the polar factor has no orthonormal rows


# ----------------------------------------------------------------------------- target logits
def test_target_logits_matches_loop():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 6, generator=g, dtype=torch.float64) * 3.0
    m = simplex_etf(4, 6, seed=1)
    got = target_logits(z, m)
    for i, zi in enumerate(_rows(z)):
        raw = [sum(a * b for a, b in zip(zi, mk)) for mk in _rows(m)]
        norm = math.sqrt(sum(v * v for v in raw))
        for j in range(4):
            assert math.isclose(got[i, j].item(), raw[j] / norm, abs_tol=1e-12)
    assert torch.allclose(target_logits(F.normalize(z, dim=1), m), got, atol=1e-12)  # scale-invariant in z
    with pytest.raises(ValueError):
        target_logits(z, simplex_etf(4, 5, seed=0))


# ----------------------------------------------------------------------------- Sinkhorn
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_prior", [False, True])
def test_sinkhorn_matches_loop(seed, with_prior):
    n, k, iters = 9, 5, 40
    s = _logits(n, k, seed)
    prior = _prior(k, seed) if with_prior else None
    got = sinkhorn(s, prior, eps=0.05, iters=iters, dtype=torch.float64)
    ref = ref_sinkhorn(_rows(s), None if prior is None else prior.tolist(), 0.05, iters)
    assert got.shape == (n, k) and got.dtype == torch.float64
    assert torch.allclose(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_sinkhorn_marginals(seed):
    """Rows sum to exactly 1 (c is updated last); columns to N * pi once converged (300 iterations)."""
    n, k = 32, 6
    s = _logits(n, k, seed)
    prior = _prior(k, seed)
    pi = prior / prior.sum()
    q = sinkhorn(s, prior, dtype=torch.float64)  # released defaults: eps 0.05, 300 iterations
    assert (q >= 0).all()
    assert torch.allclose(q.sum(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(q.sum(dim=0), n * pi, rtol=1e-6)
    q_uniform = sinkhorn(s, None, dtype=torch.float64)
    assert torch.allclose(q_uniform.sum(dim=0), torch.full((k,), n / k, dtype=torch.float64), rtol=1e-6)
    # a class with prior 0 gets no mass
    p0 = prior.clone()
    p0[2] = 0.0
    q0 = sinkhorn(s, p0, dtype=torch.float64)
    assert torch.all(q0[:, 2] == 0) and torch.allclose(q0.sum(dim=1), torch.ones(n, dtype=torch.float64))


@pytest.mark.parametrize("seed", SEEDS)
def test_sinkhorn_float32_matches_released_torch_code(seed):
    s = _logits(64, 10, seed, dtype=torch.float32)
    prior = _prior(10, seed, dtype=torch.float64)  # the released pi is float64
    for stat in (None, prior):
        got = sinkhorn(s, stat)
        ref = released_sinkhorn_torch(s, 0.05, 300, stat)
        assert got.dtype == torch.float32
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_sinkhorn_no_grad_and_checks():
    s = _logits(6, 4, 0).requires_grad_(True)
    q = sinkhorn(s, dtype=torch.float64)
    assert not q.requires_grad
    with pytest.raises(ValueError):
        sinkhorn(s, eps=0.0)
    with pytest.raises(ValueError):
        sinkhorn(s, iters=0)
    with pytest.raises(ValueError):
        sinkhorn(s, prior=torch.ones(3))
    with pytest.raises(ValueError):
        sinkhorn(s, prior=torch.tensor([1.0, -1.0, 1.0, 1.0]))


# ----------------------------------------------------------------------------- L_GH
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_prior", [False, True])
def test_gh_loss_matches_double_loop(seed, with_prior):
    n, k, iters = 8, 5, 30
    t1, t2 = _logits(n, k, seed), _logits(n, k, seed + 50)
    prior = _prior(k, seed) if with_prior else None
    got = gh_loss(t1, t2, prior, eps=0.05, iters=iters, gamma=0.1, sinkhorn_dtype=torch.float64)
    ref = ref_gh_loss(_rows(t1), _rows(t2), None if prior is None else prior.tolist(), 0.05, iters, 0.1)
    assert math.isclose(got.item(), ref, rel_tol=1e-10)


def test_gh_loss_defaults_are_released_values():
    """eps 0.05 (train_cifar.py:107), 300 iterations (train_cifar.py:38), gamma 0.1 (utils.py:21)."""
    t1, t2 = _logits(6, 4, 7), _logits(6, 4, 8)
    prior = _prior(4, 7)
    got = gh_loss(t1, t2, prior, sinkhorn_dtype=torch.float64)
    ref = ref_gh_loss(_rows(t1), _rows(t2), prior.tolist(), 0.05, 300, 0.1)
    assert math.isclose(got.item(), ref, rel_tol=1e-10)


def test_gh_loss_gradient_treats_labels_as_constants():
    n, k = 8, 5
    t1 = _logits(n, k, 1).requires_grad_(True)
    t2 = _logits(n, k, 2).requires_grad_(True)
    prior = _prior(k, 1)
    loss = gh_loss(t1, t2, prior, sinkhorn_dtype=torch.float64)
    loss.backward()
    q1 = sinkhorn(t1, prior, dtype=torch.float64)
    q2 = sinkhorn(t2, prior, dtype=torch.float64)
    # d/dt2 of -1/N sum q1 log softmax(t2 / gamma) = (softmax(t2 / gamma) - q1) / (N gamma) (rows of q1 sum to 1)
    g2 = (torch.softmax(t2.detach() / 0.1, dim=1) - q1) / (n * 0.1)
    g1 = (torch.softmax(t1.detach() / 0.1, dim=1) - q2) / (n * 0.1)
    assert torch.allclose(t2.grad, g2, atol=1e-10)
    assert torch.allclose(t1.grad, g1, atol=1e-10)


def test_gh_loss_end_to_end_from_embeddings():
    """train_cifar.py:160-162: t = normalize(z M^T) of each view, then GHLoss(t1, t2, pi)."""
    g = torch.Generator().manual_seed(5)
    m = simplex_etf(6, 8, seed=0)
    z1 = torch.randn(10, 8, generator=g, dtype=torch.float64)
    z2 = torch.randn(10, 8, generator=g, dtype=torch.float64)
    t1, t2 = target_logits(z1, m), target_logits(z2, m)
    got = gh_loss(t1, t2, None, iters=20, sinkhorn_dtype=torch.float64)
    assert math.isclose(got.item(), ref_gh_loss(_rows(t1), _rows(t2), None, 0.05, 20, 0.1), rel_tol=1e-10)
    with pytest.raises(ValueError):
        gh_loss(t1, t2[:5])


# ----------------------------------------------------------------------------- moving average, prior
def test_moving_average_matches_released_loop():
    n_data, k, batch = 12, 4, 5
    g = torch.Generator().manual_seed(0)
    memory = torch.zeros(n_data, k, dtype=torch.float64)
    ref = [[0.0] * k for _ in range(n_data)]  # zeros instead of the released torch.empty
    warm_up = 2
    for epoch in range(4):
        perm = torch.randperm(n_data, generator=g)
        beta = ema_beta(epoch, warm_up)
        for start in range(0, n_data, batch):
            index = perm[start:start + batch]
            logit = _logits(index.numel(), k, 1000 * epoch + start)
            out = moving_average_update(memory, index, logit, beta, first_epoch=(epoch == 0))
            assert out is memory
            for count, idx in enumerate(index.tolist()):  # train_cifar.py:250-257
                if epoch == 0:
                    ref[idx] = [a + b for a, b in zip(ref[idx], logit[count].tolist())]
                else:
                    ref[idx] = [beta * a + (1.0 - beta) * b for a, b in zip(ref[idx], logit[count].tolist())]
        assert torch.allclose(memory, torch.tensor(ref, dtype=torch.float64), atol=1e-14)


def test_moving_average_checks():
    memory = torch.zeros(5, 3)
    logit = torch.ones(2, 3)
    with pytest.raises(ValueError):
        moving_average_update(memory, torch.tensor([1, 1]), logit, 0.9, False)
    with pytest.raises(ValueError):
        moving_average_update(memory, torch.tensor([0, 5]), logit, 0.9, False)
    with pytest.raises(ValueError):
        moving_average_update(memory, torch.tensor([0.0, 1.0]), logit, 0.9, False)
    with pytest.raises(ValueError):
        moving_average_update(memory, torch.tensor([0, 1]), logit, 1.5, False)
    moving_average_update(memory, torch.tensor([0, 1]), logit.requires_grad_(True), 0.9, True)
    assert not memory.requires_grad


def test_ema_beta_matches_released_schedule():
    """train_cifar.py:125-130: beta = 0.9, switched to args.beta once epoch >= warm_up (warm_up > 0)."""
    for warm_up in (0, 1, 5):
        beta = 0.9
        for epoch in range(12):
            if warm_up > 0 and epoch >= warm_up:
                beta = 0.999
            assert ema_beta(epoch, warm_up) == beta


@pytest.mark.parametrize("seed", SEEDS)
def test_prior_from_argmax_matches_loop(seed):
    n, k = 40, 7
    memory = _logits(n, k, seed)
    memory[:, 3] -= 5.0  # class 3 wins no sample: its prior is 0
    got = prior_from_argmax(memory)
    counts = [0] * k
    for row in _rows(memory):
        counts[max(range(k), key=lambda j: row[j])] += 1
    assert counts[3] == 0
    assert torch.allclose(got, torch.tensor([c / n for c in counts], dtype=torch.float64), atol=1e-15)
    assert math.isclose(got.sum().item(), 1.0)
    with pytest.raises(ValueError):
        prior_from_argmax(memory, num_classes=k + 1)


def test_prior_refresh_due_matches_released_condition():
    """train_cifar.py:285-286."""
    for warm_up in (0, 7, 20, 500):
        for epoch in range(600):
            expected = ((epoch + 1) % 20 == 0 or epoch + 1 == warm_up) and epoch + 1 >= warm_up
            assert prior_refresh_due(epoch, warm_up) == expected
    assert prior_refresh_due(499, 500) and not prior_refresh_due(500, 500) and prior_refresh_due(519, 500)


def test_gh_weight_matches_released_ramp():
    """train_cifar.py:150, 158, 163-166 (GH term only when epoch + 1 > warm_up)."""
    for warm_up, ramp in ((500, 10), (3, 4), (0, 10)):
        for epoch in range(warm_up + ramp + 5):
            if epoch + 1 <= warm_up:
                expected = 0.0
            elif epoch + 1 <= warm_up + ramp:
                expected = 1 * (epoch + 1 - warm_up) / ramp
            else:
                expected = 1
            assert gh_weight(epoch, warm_up, ramp) == expected
    assert gh_weight(500, 500) == 0.1 and gh_weight(509, 500) == 1.0 and gh_weight(499, 500) == 0.0


def test_sinkhorn_runs_in_fp32_under_autocast():
    """A training step's bf16 autocast does not reach the Sinkhorn iterations (fp32 products)."""
    gen = torch.Generator().manual_seed(5)
    t = torch.nn.functional.normalize(torch.randn(24, 6, generator=gen), dim=1)
    plain = sinkhorn(t)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under = sinkhorn(t)
    assert under.dtype == torch.float32 and torch.equal(under, plain)

"""Tests for ltcl.sampling: KDUP OOD sampling (paper 003, Sec. 3.1.1, Eq. 1-7) and the COLT baseline.

Every formula is checked against a direct loop implementation written from the paper.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest
import torch

from ltcl.params import OODParams
from ltcl.sampling.budget import allocate_budget, budget_weights
from ltcl.sampling.clustering import (
    cluster_embeddings,
    kl_cluster_loss,
    kl_refine,
    kmeans,
    student_t_assign,
    target_distribution,
)
from ltcl.sampling.select import OODSelection, select_nearest, tailness_diagnostics
from ltcl.sampling.strategies import sample_ood
from ltcl.sampling.strategies.augment import select_augment
from ltcl.sampling.strategies.random import select_random
from ltcl.sampling.tailness import cluster_tailness, colt_tailness, knn_excluding_self, momentum_update, tailness_scores

_OOD = OODParams()
# the clustering keys of the schema's defaults (cluster_embeddings takes every one)
REFINE = {"tol": _OOD.cluster_tol, "max_iter": _OOD.cluster_max_iter, "refine": _OOD.refine, "lr": _OOD.cluster_lr,
          "patience": _OOD.cluster_patience}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Pin torch/faiss to one thread for this module (small problems; avoids OpenMP oversubscription)."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _blobs(rng, sizes, d, noise):
    means = _unit(rng, len(sizes), d)
    x = np.concatenate([means[c] + noise * rng.standard_normal((n, d)) for c, n in enumerate(sizes)])
    y = np.repeat(np.arange(len(sizes)), sizes)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


# ----------------------------------------------------------------------------- loop references
def ref_q(z, mu, dof):
    """Eq. 1 with Python loops."""
    n, k = len(z), len(mu)
    q = np.zeros((n, k))
    for i in range(n):
        kern = []
        for j in range(k):
            d2 = sum((z[i][t] - mu[j][t]) ** 2 for t in range(len(z[i])))
            kern.append((1.0 + d2 / dof) ** (-(dof + 1.0) / 2.0))
        for j in range(k):
            q[i, j] = kern[j] / sum(kern)
    return q


def ref_p(q):
    """Eq. 2 with Python loops."""
    n, k = q.shape
    h = [sum(q[i, j] for i in range(n)) for j in range(k)]
    p = np.zeros_like(q)
    for i in range(n):
        denom = sum(q[i, j] ** 2 / h[j] for j in range(k))
        for j in range(k):
            p[i, j] = (q[i, j] ** 2 / h[j]) / denom
    return p


def ref_kl(p, q):
    """Eq. 3 with Python loops."""
    n, k = q.shape
    return sum(p[i, j] * math.log(p[i, j] / q[i, j]) for i in range(n) for j in range(k)) / n


def ref_tailness(z, k):
    """Eq. 4 with Python loops and a brute-force cosine kNN (self excluded)."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    out = np.zeros(n)
    for i in range(n):
        sims = [(float(np.dot(z[i], z[j])), j) for j in range(n) if j != i]
        sims.sort(key=lambda t: -t[0])
        members = [i] + [j for _, j in sims[:k]]
        total = 0.0
        for m in members:
            for nn in members:
                if m != nn:
                    total += math.exp(float(np.dot(z[m], z[nn])))
        out[i] = -total / (k * (k + 1))
    return out


def ref_greedy(pool, centroids, budgets):
    """Brute-force global greedy selection over the full float64 distance matrix."""
    pairs = []
    for c in range(len(centroids)):
        for i in range(len(pool)):
            pairs.append((float(np.sum((pool[i].astype(np.float64) - centroids[c]) ** 2)), c, i))
    pairs.sort()
    need = list(budgets)
    taken = set()
    chosen = {c: [] for c in range(len(centroids))}
    for _, c, i in pairs:
        if need[c] > 0 and i not in taken:
            taken.add(i)
            need[c] -= 1
            chosen[c].append(i)
    idx = [i for c in range(len(centroids)) for i in chosen[c]]
    cl = [c for c in range(len(centroids)) for _ in chosen[c]]
    return np.array(idx), np.array(cl)


# ----------------------------------------------------------------------------- Eq. 1-3
@pytest.mark.parametrize("dof", [1.0, 2.5])
def test_student_t_assign_matches_loop(dof):
    rng = np.random.default_rng(0)
    z, mu = rng.standard_normal((9, 5)), rng.standard_normal((4, 5))
    q = student_t_assign(torch.tensor(z), torch.tensor(mu), dof=dof)
    assert q.dtype == torch.float64
    np.testing.assert_allclose(q.numpy(), ref_q(z, mu, dof), rtol=1e-10, atol=1e-12)
    q32 = student_t_assign(torch.tensor(z, dtype=torch.float32), torch.tensor(mu, dtype=torch.float32), dof=dof)
    np.testing.assert_allclose(q32.numpy(), ref_q(z, mu, dof), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="dof"):
        student_t_assign(torch.tensor(z), torch.tensor(mu), dof=0.0)
    with pytest.raises(ValueError, match="centroids"):
        student_t_assign(torch.tensor(z), torch.tensor(mu[:, :3]))


def test_target_distribution_matches_loop():
    rng = np.random.default_rng(1)
    q = rng.random((8, 3)) + 0.05
    q /= q.sum(axis=1, keepdims=True)
    p = target_distribution(torch.tensor(q))
    np.testing.assert_allclose(p.numpy(), ref_p(q), rtol=1e-12)
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0)


@pytest.mark.parametrize("dof", [1.0, 3.0])
def test_kl_cluster_loss_matches_loop_and_dec_gradient(dof):
    rng = np.random.default_rng(2)
    z, mu = rng.standard_normal((10, 4)), rng.standard_normal((3, 4))
    mu_t = torch.tensor(mu, requires_grad=True)
    loss = kl_cluster_loss(torch.tensor(z), mu_t, dof=dof)
    q = ref_q(z, mu, dof)
    p = ref_p(q)
    assert loss.item() == pytest.approx(ref_kl(p, q), rel=1e-10)
    loss.backward()
    # p is a detached target: dL/dmu_j = -(a+1)/a * 1/B * sum_i (p_ij - q_ij)(1 + d2/a)^-1 (z_i - mu_j)  (DEC)
    grad = np.zeros_like(mu)
    for j in range(len(mu)):
        for i in range(len(z)):
            d2 = float(np.sum((z[i] - mu[j]) ** 2))
            grad[j] -= (dof + 1) / dof * (p[i, j] - q[i, j]) / (1 + d2 / dof) * (z[i] - mu[j])
    np.testing.assert_allclose(mu_t.grad.numpy(), grad / len(z), rtol=1e-8, atol=1e-12)
    loss32 = kl_cluster_loss(torch.tensor(z, dtype=torch.float32), torch.tensor(mu, dtype=torch.float32), dof)
    assert float(loss32) == pytest.approx(ref_kl(p, q), rel=1e-4)


# ----------------------------------------------------------------------------- clustering
def test_kmeans_shapes_recovery_and_errors():
    rng = np.random.default_rng(3)
    x, y = _blobs(rng, [60, 40, 30], 8, 0.05)
    c = kmeans(torch.from_numpy(x), 3, seed=0)
    assert c.shape == (3, 8) and c.dtype == np.float32
    _, labels, info = cluster_embeddings(x, 3, seed=0, **{**REFINE, "refine": False})
    assert labels.dtype == np.int64 and info == {"refined": False}
    for cls in range(3):  # each true blob is one cluster
        assert len(set(labels[y == cls].tolist())) == 1
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        kmeans(x[:5], 6, seed=0)


def _refine_data():
    rng = np.random.default_rng(4)
    x, _ = _blobs(rng, [120, 60, 30, 15], 16, 0.6)
    return x, kmeans(x, 4, seed=0)


def test_kl_refine_stops_at_first_iteration_below_tol():
    x, c0 = _refine_data()
    _, _, full = kl_refine(x, c0, tol=0.0, max_iter=40, lr=0.1, seed=0, patience=3)
    hist = full["changed_fraction"]
    assert full["n_iter"] == 40 and len(hist) == 40 and not full["converged"]  # max_iter respected
    # pick a tol first undercut at iteration t* + 1 (1-based), the latest record low of the history
    t_star = max(t for t in range(1, len(hist)) if hist[t] < min(hist[:t]))
    assert t_star >= 2
    tol = min(hist[:t_star])
    _, labels, info = kl_refine(x, c0, tol=tol, max_iter=40, lr=0.1, seed=0, patience=3)
    assert info["converged"] and info["n_iter"] == t_star + 1
    assert info["changed_fraction"] == hist[: t_star + 1]
    assert all(h >= tol for h in info["changed_fraction"][:-1]) and info["changed_fraction"][-1] < tol
    # tol = 1.0: any change fraction < 1 stops after the first iteration
    _, _, one = kl_refine(x, c0, tol=1.0, max_iter=40, lr=0.1, seed=0, patience=3)
    assert one["n_iter"] == 1 and one["converged"]


def test_kl_refine_final_labels_are_l2_nearest_and_minibatch_runs():
    x, c0 = _refine_data()
    cents, labels, info = kl_refine(x, c0, tol=0.0, max_iter=5, lr=0.01, seed=0, patience=3, batch_size=32)
    assert info["n_iter"] == 5 and len(info["loss"]) == 6
    d2 = ((x[:, None, :].astype(np.float64) - cents[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d2.argmin(1))
    c2, l2, i2 = cluster_embeddings(x, 4, seed=0, **{**REFINE, "tol": 0.0, "max_iter": 3})
    assert i2["refined"] and i2["n_iter"] == 3 and c2.shape == (4, x.shape[1]) and l2.shape == (len(x),)


def test_kl_refine_step_decreases_eq3_for_the_current_target():
    """One refinement iteration lowers KL(p || q) for the target p computed before the step (Eq. 3)."""
    x, c0 = _refine_data()
    z = torch.tensor(x, dtype=torch.float64)
    p0 = target_distribution(student_t_assign(z, torch.tensor(c0, dtype=torch.float64)))

    def kl_fixed(c):
        q = student_t_assign(z, torch.tensor(c, dtype=torch.float64))
        return float((p0 * (p0.log() - q.log())).sum(1).mean())

    c1, _, _ = kl_refine(x, c0, tol=0.0, max_iter=1, lr=1e-3, seed=0, patience=3)
    assert kl_fixed(c1) < kl_fixed(c0)
    assert kl_fixed(c0) == pytest.approx(float(kl_cluster_loss(z, torch.tensor(c0, dtype=torch.float64))))


@pytest.mark.parametrize("dof", [1.0, 2.5])
def test_kl_full_batch_gradient_matches_autograd(dof):
    """The written-out gradient of Eq. 3 w.r.t. the centroids (``_kl_step_full``) equals autograd's."""
    from ltcl.sampling.clustering import _kl_step_full

    x, c0 = _refine_data()
    z = torch.tensor(x, dtype=torch.float64)
    mu = torch.tensor(c0, dtype=torch.float64) + 0.05
    labels, loss, grad = _kl_step_full(z, (z * z).sum(1, keepdim=True), mu, dof)
    mu_ag = mu.clone().requires_grad_(True)
    ref = kl_cluster_loss(z, mu_ag, dof)
    ref.backward()
    torch.testing.assert_close(grad, mu_ag.grad, rtol=1e-9, atol=1e-12)
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-12)
    np.testing.assert_array_equal(labels.numpy(), student_t_assign(z, mu, dof).argmax(1).numpy())


def test_kl_refine_patience_decays_the_step_until_assignments_settle():
    """Adam's constant step keeps boundary samples flipping; halving it on a plateau (patience)
    stops the refinement by the paper's rule. patience=0 keeps the step size constant."""
    rng = np.random.default_rng(9)
    x, _ = _blobs(rng, [900, 500, 300, 150, 80, 40], 32, 1.2)  # overlapping blobs: many boundary samples
    c0 = kmeans(x, 6, seed=0)
    _, _, const = kl_refine(x, c0, tol=0.001, max_iter=60, lr=0.01, seed=0, patience=0)
    assert const["lr"] == 0.01
    _, _, decayed = kl_refine(x, c0, tol=0.001, max_iter=60, lr=0.01, seed=0, patience=2)
    assert decayed["converged"] and decayed["lr"] < 0.01
    assert decayed["n_iter"] < const["n_iter"]
    with pytest.raises(ValueError, match="patience"):
        kl_refine(x, c0, tol=0.001, max_iter=60, lr=0.01, seed=0, patience=-1)


# ----------------------------------------------------------------------------- Eq. 4-6
def test_tailness_scores_match_loop():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((40, 6))
    s = tailness_scores(torch.tensor(z), k=5, chunk_size=7)
    assert isinstance(s, torch.Tensor) and s.dtype == torch.float64 and s.shape == (40,)
    np.testing.assert_allclose(s.numpy(), ref_tailness(z, 5), rtol=1e-6)
    s32 = tailness_scores(z.astype(np.float32), k=5)
    assert s32.dtype == torch.float32
    np.testing.assert_allclose(s32.numpy(), ref_tailness(z, 5), rtol=1e-5)
    with pytest.raises(ValueError, match="k"):
        tailness_scores(z[:5], k=5)


def test_tailness_excludes_self_with_duplicates():
    rng = np.random.default_rng(6)
    base = _unit(rng, 15, 4)
    z = np.concatenate([base, base[:5], base[:5]])  # rows 0-4 appear three times
    nbrs = knn_excluding_self(z, 3)
    assert nbrs.shape == (25, 3)
    assert not (nbrs == np.arange(25)[:, None]).any()
    for i in range(25):
        assert len(set(nbrs[i].tolist())) == 3
    # duplicates of row i are its nearest neighbours (cos = 1)
    for i in (0, 15, 20):
        twins = {j for j in range(25) if j != i and np.allclose(z[j], z[i])}
        assert twins <= set(nbrs[i].tolist())
    np.testing.assert_allclose(tailness_scores(z, 3).numpy(), ref_tailness(z, 3), rtol=1e-5)


def test_tailness_sparse_blob_scores_higher_than_dense_blob():
    rng = np.random.default_rng(7)
    d = 16
    centres = _unit(rng, 2, d)
    dense = centres[0] + 0.05 * rng.standard_normal((300, d))
    sparse = centres[1] + 0.6 * rng.standard_normal((40, d))
    s = tailness_scores(np.concatenate([dense, sparse]).astype(np.float32), k=10)
    assert s[300:].min() > s[:300].max()
    ct = cluster_tailness(s, np.repeat([0, 1], [300, 40]), 2)
    assert ct[1] > ct[0]


def test_momentum_update():
    new = torch.tensor([1.0, 2.0, 3.0])
    first = momentum_update(None, new, 0.9)
    assert torch.equal(first, new) and first is not new
    prev = torch.tensor([0.0, 10.0, -1.0])
    out = momentum_update(prev, new, 0.9)
    np.testing.assert_allclose(out.numpy(), [0.9 * 0 + 0.1 * 1, 0.9 * 10 + 0.1 * 2, 0.9 * -1 + 0.1 * 3], rtol=1e-6)
    assert torch.equal(momentum_update(prev, new, 0.0), new)
    with pytest.raises(ValueError, match="shape"):
        momentum_update(prev[:2], new, 0.9)
    with pytest.raises(ValueError, match="rho"):
        momentum_update(prev, new, 1.5)


def test_cluster_tailness_matches_loop_and_empty_cluster():
    rng = np.random.default_rng(8)
    s = rng.standard_normal(30)
    labels = rng.choice([0, 1, 3], size=30)  # cluster 2 empty
    out = cluster_tailness(torch.tensor(s), labels, 4).numpy()
    for k in (0, 1, 3):
        members = [s[i] for i in range(30) if labels[i] == k]
        assert out[k] == pytest.approx(sum(members) / len(members))
    assert out[2] == pytest.approx(min(out[0], out[1], out[3]))
    with pytest.raises(ValueError, match="labels"):
        cluster_tailness(torch.tensor(s), labels, 3)


def test_colt_tailness_matches_loop():
    rng = np.random.default_rng(9)
    z = _unit(rng, 50, 5)
    batch, topk, seed = 16, 3, 11
    out = colt_tailness(torch.tensor(z), batch, topk, seed=seed, momentum=0.97)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [perm[0:16], perm[16:32], perm[32:50]]  # trailing batch of 2 < topk + 1 is merged
    ref = np.zeros(50)
    for b in batches:
        for i in b:
            sims = sorted((float(z[i] @ z[j]) for j in b if j != i), reverse=True)
            ref[i] = -sum(sims[:topk])
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10)
    prev = torch.zeros(50, dtype=torch.float64)
    ema = colt_tailness(torch.tensor(z), batch, topk, seed=seed, prev=prev, momentum=0.97)
    np.testing.assert_allclose(ema.numpy(), 0.03 * ref, rtol=1e-10)


# ----------------------------------------------------------------------------- Eq. 7
def test_allocate_budget_matches_eq7_and_is_integral():
    rng = np.random.default_rng(10)
    s = rng.standard_normal(6)
    u = allocate_budget(s, 1000, temperature=0.5)
    std = np.sqrt(sum((v - s.mean()) ** 2 for v in s) / len(s))  # population std
    e = [math.exp((v - s.mean()) / std / 0.5) for v in s]
    real = [1000 * v / sum(e) for v in e]
    assert u.dtype == np.int64 and u.sum() == 1000
    assert np.all(np.abs(u - np.array(real)) < 1.0)
    np.testing.assert_allclose(budget_weights(s, 0.5), np.array(e) / sum(e), rtol=1e-12)
    for trial in range(500):
        k = int(rng.integers(1, 40))
        total = int(rng.integers(0, 20000))
        s = rng.standard_normal(k) * rng.choice([1e-3, 1.0, 100.0])
        u = allocate_budget(s, total, temperature=float(rng.choice([0.1, 1.0, 5.0])))
        assert u.sum() == total and (u >= 0).all()
        order = np.argsort(s)
        assert np.all(np.diff(u[order]) >= 0), "budget must be non-decreasing in tailness"


def test_allocate_budget_edge_cases():
    np.testing.assert_array_equal(allocate_budget(np.full(3, 2.0), 10, 1.0), [4, 3, 3])
    np.testing.assert_array_equal(allocate_budget(torch.tensor([0.3]), 7, 1.0), [7])
    with pytest.raises(ValueError, match="temperature"):
        allocate_budget([1.0, 2.0], 10, 0.0)
    with pytest.raises(ValueError, match="total"):
        allocate_budget([1.0, 2.0], -1, 1.0)


# ----------------------------------------------------------------------------- selection
@pytest.mark.parametrize("case", range(4))
def test_select_nearest_matches_bruteforce_greedy(case):
    rng = np.random.default_rng(100 + case)
    pool = _unit(rng, 400, 8).astype(np.float32)
    if case == 3:  # three near-identical centroids: heavy conflicts, forces candidate expansion
        centroids = np.repeat(pool[:1], 3, axis=0) + 1e-3 * rng.standard_normal((3, 8))
        budgets = np.array([100, 100, 100])
    else:
        centroids = pool[rng.choice(400, 5, replace=False)] + 0.3 * rng.standard_normal((5, 8))
        budgets = rng.integers(0, 60, size=5)
    idx, cl = select_nearest(torch.from_numpy(pool), centroids.astype(np.float32), budgets)
    assert idx.dtype == np.int64 and cl.dtype == np.int64
    assert len(idx) == budgets.sum() and len(set(idx.tolist())) == len(idx)
    np.testing.assert_array_equal(np.bincount(cl, minlength=len(budgets)), budgets)
    ref_idx, ref_cl = ref_greedy(pool, centroids.astype(np.float32).astype(np.float64), budgets)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(cl, ref_cl)


def test_nearest_rows_streams_a_memmap_and_equals_one_flat_search(tmp_path):
    from ltcl.sampling.select import nearest_rows

    rng = np.random.default_rng(12)
    base = _unit(rng, 1000, 16).astype(np.float32)
    path = tmp_path / "emb.npy"
    np.save(path, base)
    mm = np.load(path, mmap_mode="r")
    q = base[:5] + 0.1
    index = faiss.IndexFlatL2(16)
    index.add(base)
    ref_d, ref_i = index.search(q, 50)
    d, i = nearest_rows(q, mm, 50, chunk_bytes=16 * 4 * 64)  # 64 rows per block: 16 blocks
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, ref_d, rtol=1e-5, atol=1e-5)
    d, i = nearest_rows(q, mm[:30], 40, chunk_bytes=16 * 4 * 7)  # k > N: padded with -1 / float32 max
    assert (i[:, :30] >= 0).all() and (i[:, 30:] == -1).all() and (d[:, 30:] == np.finfo(np.float32).max).all()
    # selection over the memmap equals selection over the array in memory
    cents = base[rng.choice(1000, 4, replace=False)]
    for a, b in zip(select_nearest(mm, cents, [50, 20, 0, 80]), select_nearest(base, cents, [50, 20, 0, 80])):
        np.testing.assert_array_equal(a, b)


def test_knn_ivf_above_exact_max():
    """Above ``exact_max`` the kNN of Eq. 4 comes from an IVF index: exact when every list is
    probed, close with few lists on clustered data."""
    from ltcl.sampling.tailness import knn_excluding_self

    rng = np.random.default_rng(13)
    x, _ = _blobs(rng, [800, 400, 200, 100], 16, 0.3)
    exact = knn_excluding_self(x, 5)
    every_list = knn_excluding_self(x, 5, exact_max=100, nprobe=10_000)
    np.testing.assert_array_equal(np.sort(every_list, 1), np.sort(exact, 1))
    few = knn_excluding_self(x, 5, exact_max=100, nprobe=4)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(few, exact)])
    assert few.shape == exact.shape and (few != np.arange(len(x))[:, None]).all() and recall > 0.8
    s_exact, s_ivf = tailness_scores(x, 5), tailness_scores(x, 5, exact_max=100, nprobe=10_000)
    torch.testing.assert_close(s_ivf, s_exact)


def test_select_nearest_errors():
    pool = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="exceeds the pool size"):
        select_nearest(pool, pool[:2], [3, 2])
    with pytest.raises(ValueError, match="budgets"):
        select_nearest(pool, pool[:2], [1])
    idx, cl = select_nearest(pool, pool[:2], [0, 0])
    assert idx.size == 0 and cl.size == 0


def test_select_random_and_augment():
    idx = select_random(100, 30, seed=1)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == 30 and idx.max() < 100
    np.testing.assert_array_equal(idx, select_random(100, 30, seed=1))
    with pytest.raises(ValueError, match="pool_size"):
        select_random(10, 11, seed=0)
    labels = np.array([0, 0, 1, 1, 1, 2, 0, 1])
    budgets = np.array([5, 0, 7, 4])  # cluster 3 is empty -> uniform over all ID samples
    dup = select_augment(labels, budgets, seed=3)
    assert dup.dtype == np.int64 and len(dup) == 16
    assert set(labels[dup[:5]].tolist()) == {0} and set(labels[dup[5:12]].tolist()) == {2}
    assert dup[12:].min() >= 0 and dup[12:].max() < len(labels)


# ----------------------------------------------------------------------------- full update
def _small_problem(seed=0):
    rng = np.random.default_rng(seed)
    id_emb, y = _blobs(rng, [150, 60, 25, 10], 16, 0.2)
    pool = _unit(rng, 800, 16).astype(np.float32)
    return id_emb, y, pool


@pytest.mark.parametrize("strategy", ["kdup", "colt", "random", "augment", "none"])
def test_sample_ood_each_strategy(strategy):
    id_emb, _, pool = _small_problem()
    cfg = OODParams(strategy=strategy, clusters=4, knn_k=5, budget=120, colt={"topk": 5}, cluster_max_iter=20)
    sel, state = sample_ood(torch.from_numpy(id_emb), pool, cfg, colt_batch_size=64)
    assert isinstance(sel, OODSelection) and set(sel.timings) == {"clustering", "tailness", "budget", "sampling"}
    if strategy == "none":
        assert sel.pool_indices.size == 0 and state is None
        return
    if strategy in ("kdup", "colt"):
        assert len(sel.pool_indices) == 120 and len(np.unique(sel.pool_indices)) == 120
        np.testing.assert_array_equal(np.bincount(sel.cluster_of_each, minlength=4), sel.budgets)
    if strategy == "random":
        assert len(np.unique(sel.pool_indices)) == 120 and (sel.cluster_of_each == -1).all()
        assert sel.budgets is None and state is None
        return
    assert sel.budgets.sum() == 120 and sel.id_labels.shape == (len(id_emb),)
    assert sel.centroids.shape == (4, 16) and sel.cluster_tailness.shape == (4,)
    assert state.shape == (len(id_emb),) and torch.equal(state, sel.sample_tailness)
    if strategy == "augment":
        assert sel.pool_indices.size == 0 and len(sel.id_indices) == 120
    # second update: momentum combines the previous state with the new raw scores
    _, state2 = sample_ood(id_emb, pool, cfg, prev_tailness=state, round_index=1, colt_batch_size=64)
    if strategy in ("kdup", "augment"):
        np.testing.assert_allclose(state2.numpy(), (0.9 * state + 0.1 * tailness_scores(id_emb, 5)).numpy(), rtol=1e-5)


def test_sample_ood_errors():
    id_emb, _, pool = _small_problem()
    with pytest.raises(ValueError, match="fewer than ood.budget"):
        sample_ood(id_emb, pool[:50], OODParams(strategy="kdup", clusters=4, budget=100), colt_batch_size=64)
    with pytest.raises(ValueError, match="budget"):
        OODParams(strategy="colt", budget=0)
    cfg = OODParams(strategy="kdup", clusters=4, budget=10).model_copy(update={"budget": -5})  # unvalidated
    with pytest.raises(ValueError, match="ood.budget must be > 0"):
        sample_ood(id_emb, pool, cfg, colt_batch_size=64)
    with pytest.raises(ValueError, match="ood.clusters"):
        sample_ood(id_emb[:3], pool, OODParams(strategy="kdup", clusters=4, budget=10), colt_batch_size=64)
    with pytest.raises(ValueError, match="strategy"):
        OODParams(strategy="bogus")
    with pytest.raises(ValueError, match="unknown ood.strategy 'bogus'"):
        sample_ood(id_emb, pool, OODParams().model_copy(update={"strategy": "bogus"}), colt_batch_size=64)
    sel, _ = sample_ood(id_emb, None, OODParams(strategy="none", budget=0), colt_batch_size=64)
    assert sel.pool_indices.size == 0


def test_tailness_diagnostics_values():
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    counts = np.array([4, 2, 1])
    tail = np.array([0.1, 0.2, 0.0, 0.15, 0.5, 0.6, 0.9])  # rarer class -> higher tailness
    clusters = np.array([0, 0, 0, 1, 1, 1, 2])
    d = tailness_diagnostics(torch.tensor(tail), y, counts, clusters, np.array([10, 30, 60]), few_classes=[2])
    assert d["spearman_frequency"] < 0 and d["spearman_rarity"] == pytest.approx(-d["spearman_frequency"])
    assert d["cluster_majority_class"] == [0, 1, 2]
    assert d["cluster_purity"] == pytest.approx([1.0, 2 / 3, 1.0])
    assert d["few_budget_share"] == pytest.approx(0.6) and d["n_few_clusters"] == 1
    assert d["overall_purity"] == pytest.approx(6 / 7)


def test_tailness_diagnostics_budget_per_image_by_group():
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    clusters = np.array([0, 0, 0, 1, 1, 1, 2])
    budgets = np.array([10, 30, 60])
    d = tailness_diagnostics(np.arange(7.0), y, np.array([4, 2, 1]), clusters, budgets, few_classes=[2],
                             class_groups=["many", "medium", "few"])
    # per image: cluster budget / cluster size, relative to the mean 100 / 7 (loop reference)
    per = [budgets[c] / (clusters == c).sum() / (100 / 7) for c in clusters]
    want = {g: np.mean([per[i] for i in range(7) if ["many", "medium", "few"][y[i]] == g])
            for g in ("many", "medium", "few")}
    assert d["budget_per_image"] == pytest.approx(want)
    assert d["budget_per_image"]["few"] == pytest.approx(60 / (100 / 7))


def test_empty_cluster_gets_no_budget(monkeypatch):
    """A cluster left without ID samples draws no OOD images; the others share N_b exactly."""
    import ltcl.sampling.strategies.clustered as sel_mod

    rng = np.random.default_rng(0)
    id_emb = rng.normal(size=(60, 8)).astype(np.float32)
    pool = rng.normal(size=(500, 8)).astype(np.float32)
    real = sel_mod.cluster_embeddings

    def one_empty(z, k, **kw):
        c, lab, info = real(z, k, **kw)
        lab = np.where(lab == 2, 0, lab)  # cluster 2 loses all its members
        return c, lab, info
    monkeypatch.setattr(sel_mod, "cluster_embeddings", one_empty)
    sel, _ = sample_ood(id_emb, pool, OODParams(strategy="kdup", budget=100, clusters=4, knn_k=5), colt_batch_size=64)
    assert sel.budgets[2] == 0 and sel.budgets.sum() == 100
    assert (sel.cluster_of_each != 2).all()


# --------------------------------------------------------------------------- the strategies registry
def test_ood_subsections_and_strategy_names_follow_the_registry():
    """ood.<name> subsections are exactly ltcl.registry.STRATEGIES' params models, one to one,
    and ood.strategy accepts exactly the registry's names."""
    import pydantic

    from ltcl.params import OODParams
    from ltcl.registry import STRATEGIES as TABLE

    own = {n: f.annotation for n, f in OODParams.model_fields.items() if n in TABLE}
    assert own == {n: e.params for n, e in TABLE.items()}
    for name in TABLE:
        assert OODParams(strategy=name, budget=0 if name == "none" else 10, pool_size=100).strategy == name
    with pytest.raises(pydantic.ValidationError, match="known: " + ", ".join(TABLE)):
        OODParams(strategy="nope")


def test_ood_selection_optional_fields_default():
    sel = OODSelection(strategy="none", pool_indices=np.empty(0, np.int64), cluster_of_each=np.empty(0, np.int64))
    assert sel.budgets is None and sel.sample_tailness is None and sel.timings == {} and sel.id_indices is None

"""Tailness scores: KDUP (paper 003, Sec. 3.1.1, Eq. 4-6) and COLT's in-batch score (Bai et al. 2023).

Convention everywhere in this package: a *higher* tailness means a sparser
neighbourhood, i.e. a sample (or cluster) more likely to belong to a tail class.
Scores are returned as torch tensors.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from ltcl.sampling.clustering import as_float_tensor


def _normalised(z: Any) -> torch.Tensor:
    return F.normalize(as_float_tensor(z), dim=1)


# Above this many rows an exact all-pairs search (N^2 d multiply-adds: 2.6e12 at 100K x 128,
# about a minute on one CPU core) gives way to an IVF index.
KNN_EXACT_MAX = 100_000
KNN_NPROBE = 32  # IVF lists searched per query above KNN_EXACT_MAX


def knn_excluding_self(z: Any, k: int, exact_max: int = KNN_EXACT_MAX, nprobe: int = KNN_NPROBE) -> np.ndarray:
    """Indices (N, k) int64 of the k nearest neighbours by cosine similarity, over the whole set.

    Up to ``exact_max`` rows: exact search (``faiss.knn``, inner product on L2-normalised
    float32 rows, no index copy). Above it: ``faiss.IndexIVFFlat`` with 4 sqrt(N) lists
    (faiss's guideline), trained on a fixed-seed sample of 64 rows per list and searched with
    ``nprobe`` lists; a row whose probed lists held fewer than k + 1 candidates is searched
    exactly. The query itself is excluded robustly: k+1 neighbours are retrieved and the
    entry equal to the query index is dropped; if the query is absent (possible with exact
    duplicates, whose ties faiss may order arbitrarily) the (k+1)-th neighbour is dropped instead.
    """
    x = np.ascontiguousarray(_normalised(z).numpy().astype(np.float32))
    n = x.shape[0]
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (number of nearest neighbours) must be a positive integer; got {k!r}")
    if k > n - 1:
        raise ValueError(f"k (number of nearest neighbours) = {k} must be <= n_samples - 1 = {n - 1}")
    if n <= exact_max:
        _, nbrs = faiss.knn(x, x, int(k) + 1, faiss.METRIC_INNER_PRODUCT)
    else:
        nbrs = _ivf_knn(x, int(k) + 1, nprobe)
    keep = nbrs != np.arange(n)[:, None]
    no_self = keep.all(axis=1)
    keep[no_self, -1] = False  # exactly k entries per row remain
    return nbrs[keep].reshape(n, int(k)).astype(np.int64)


def _ivf_knn(x: np.ndarray, k: int, nprobe: int) -> np.ndarray:
    """Approximate inner-product kNN of every row of ``x`` among all rows (IVF-Flat)."""
    n, d = x.shape
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 64))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    index.nprobe = max(1, min(int(nprobe), nlist))
    _, nbrs = index.search(x, k)
    short = np.flatnonzero((nbrs < 0).any(axis=1))
    if short.size:  # too few candidates in the probed lists: exact search for those rows
        _, nbrs[short] = faiss.knn(x[short], x, k, faiss.METRIC_INNER_PRODUCT)
    return nbrs


def tailness_scores(z: Any, k: int, chunk_size: int = 4096, exact_max: int = KNN_EXACT_MAX,
                    nprobe: int = KNN_NPROBE) -> torch.Tensor:
    """Instance-wise tailness s_hat_i, KDUP (paper 003, Eq. 4).

    Z^i = {z_i} plus its K nearest neighbours (cosine, over the whole set);
    s_hat_i = - sum_{m != n in Z^i} exp(cos(z_m, z_n)) / (K (K + 1))  (ordered pairs).
    ``z`` is L2-normalised inside.  Computed with one (K+1)x(K+1) Gram matrix per sample,
    batched with ``bmm`` over chunks of ``chunk_size`` samples so memory stays bounded.
    The neighbours come from :func:`knn_excluding_self` (exact up to ``exact_max`` samples, IVF
    with ``nprobe`` lists above). Returns a tensor (N,) of the input float dtype (float32 or
    float64); higher = sparser.
    """
    zn = _normalised(z)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    nbrs = torch.from_numpy(knn_excluding_self(zn, k, exact_max, nprobe))
    n = zn.shape[0]
    groups = torch.cat([torch.arange(n).unsqueeze(1), nbrs], dim=1)  # (N, K+1)
    out = torch.empty(n, dtype=zn.dtype)
    for start in range(0, n, chunk_size):
        members = zn[groups[start : start + chunk_size]]  # (c, K+1, d)
        sims = torch.exp(torch.bmm(members, members.transpose(1, 2)))  # (c, K+1, K+1)
        off_diag = sims.sum(dim=(1, 2)) - torch.diagonal(sims, dim1=1, dim2=2).sum(dim=1)
        out[start : start + chunk_size] = -off_diag / (k * (k + 1))
    return out


def momentum_update(prev: torch.Tensor | None, new: torch.Tensor, rho: float) -> torch.Tensor:
    """s^t = rho * s^(t-T) + (1 - rho) * s_hat^t, KDUP (paper 003, Eq. 5); s^0 = s_hat^0 (``prev=None``)."""
    new = torch.as_tensor(new)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho (momentum) must be in [0, 1]; got {rho}")
    if prev is None:
        return new.clone()
    prev = torch.as_tensor(prev, dtype=new.dtype)
    if prev.shape != new.shape:
        raise ValueError(
            f"prev (previous tailness state) has shape {tuple(prev.shape)} but new scores have shape "
            f"{tuple(new.shape)}; the in-domain set must not change between updates"
        )
    return rho * prev + (1.0 - rho) * new


def cluster_tailness(scores: Any, labels: Any, n_clusters: int) -> torch.Tensor:
    """Cluster-wise tailness s_k^tail = mean of s_i^t over i in C_k, KDUP (paper 003, Eq. 6).

    An empty cluster (no ID sample assigned) has no defined mean; it gets the minimum of
    the non-empty clusters, i.e. it is treated as the least tail-like cluster (the paper
    does not cover this case).  Returns a tensor (n_clusters,) of the scores' dtype.
    """
    s = torch.as_tensor(scores)
    if not s.is_floating_point():
        s = s.to(torch.float32)
    lab = torch.as_tensor(labels, dtype=torch.int64)
    if s.ndim != 1 or lab.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length; got {tuple(s.shape)} and {tuple(lab.shape)}")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1; got {n_clusters}")
    if s.numel() == 0:
        raise ValueError("scores must not be empty")
    if int(lab.min()) < 0 or int(lab.max()) >= n_clusters:
        raise ValueError(f"labels must lie in [0, n_clusters={n_clusters}); got range [{int(lab.min())}, {int(lab.max())}]")
    counts = torch.bincount(lab, minlength=n_clusters)
    sums = torch.zeros(n_clusters, dtype=s.dtype).index_add_(0, lab, s)
    means = sums / counts.clamp_min(1).to(s.dtype)
    empty = counts == 0
    if empty.any():
        means[empty] = means[~empty].min()
    return means


def colt_tailness(
    z: Any,
    batch_size: int,
    topk: int,
    *,
    seed: int,
    momentum: float,
    prev: torch.Tensor | None = None,
) -> torch.Tensor:
    """COLT's in-batch tailness (Bai et al. 2023), simulated over one pass of the ID set.

    COLT scores every sample during training from the minibatch it is drawn in: the sum
    of its top-k similarities to the other samples of the batch (high = head), kept as an
    EMA over iterations (beta = 0.97); clusters with a low mean score get more budget.
    Here the samples are shuffled (``seed``) into batches of ``batch_size`` once, the
    score is the sum of the top-``topk`` *cosine* similarities to the other batch
    members, tailness = -score, and the EMA is applied once against ``prev``
    (``momentum_update(prev, -score, momentum)``, prev=None -> no averaging).
    Differences from COLT's released code: it ranks the softmax-normalised negative terms
    exp(cos/t)/Z of its NT-Xent loss (two augmented views, per training step) rather than raw
    cosine similarities of one clean view (the per-anchor choice of the top-k neighbours is
    the same for one view; the summed values are a different monotone-per-row transform).
    A trailing batch smaller than ``topk + 1`` is merged into the previous batch so every
    sample has ``topk`` in-batch neighbours when possible.  Returns a tensor (N,).
    """
    zn = _normalised(z)
    n = zn.shape[0]
    if n < 2:
        raise ValueError(f"colt_tailness needs at least 2 samples; got {n}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2; got {batch_size}")
    if topk < 1:
        raise ValueError(f"topk must be >= 1; got {topk}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < topk + 1:
        starts.pop()
    ends = starts[1:] + [n]
    head = torch.empty(n, dtype=zn.dtype)
    for start, end in zip(starts, ends):  # one iteration per batch, not per sample
        idx = perm[start:end]
        zb = zn[idx]
        sims = zb @ zb.T
        sims.fill_diagonal_(float("-inf"))
        k_eff = min(topk, idx.numel() - 1)
        head[idx] = sims.topk(k_eff, dim=1).values.sum(dim=1)
    return momentum_update(prev, -head, momentum)

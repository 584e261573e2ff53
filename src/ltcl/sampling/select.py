"""The pieces of an OOD sampling update the strategies share (:mod:`ltcl.sampling.strategies`,
paper 003 Sec. 3.1.1 and its baselines): per-cluster nearest-to-centroid selection over a streamed
pool (:func:`select_nearest`), the members nearest each centre (for the update's pictures), the
result of an update (:class:`OODSelection`), its seeds, and the tailness diagnostics against true
labels.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.sampling.clustering import as_float32_numpy



def as_budgets(budgets: Any) -> np.ndarray:
    b = np.asarray(budgets)
    if b.ndim != 1 or b.size == 0:
        raise UserError(f"budgets must be a non-empty 1-D integer array; got shape {b.shape}")
    if not np.issubdtype(b.dtype, np.integer):
        if not np.all(np.equal(np.mod(b, 1), 0)):
            raise UserError("budgets must be integers")
    b = b.astype(np.int64)
    if (b < 0).any():
        raise UserError("budgets must be non-negative")
    return b


# --------------------------------------------------------------------------- nearest-to-centroid
@contextmanager
def _faiss_blas_search():
    """Temporarily make faiss's flat search use its BLAS kernel for any number of queries.

    This faiss build defaults ``distance_compute_blas_threshold`` to 128000 queries, so a
    search with ~10-100 centroid queries over a 300k pool takes the per-query SIMD path,
    measured ~3-4x slower here than the BLAS path (single thread).  Restored on exit.
    """
    previous = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 0
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = previous


def _greedy_by_distance(
    dists: list[np.ndarray], idxs: list[np.ndarray], budgets: np.ndarray, pool_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global greedy matching of candidate (cluster, image) pairs in ascending distance.

    A pair is accepted when its cluster still has budget and its image is untaken.
    Ties are broken by cluster index, then image index.  Returns (images, clusters, still_needed).
    """
    n_k = len(budgets)
    lengths = [len(r) for r in idxs]
    d = np.concatenate(dists) if n_k else np.empty(0)
    img = np.concatenate(idxs) if n_k else np.empty(0, dtype=np.int64)
    cl = np.repeat(np.arange(n_k), lengths)
    valid = img >= 0
    d, img, cl = d[valid], img[valid], cl[valid]
    order = np.lexsort((img, cl, d))
    need = budgets.tolist()
    remaining = int(budgets.sum())
    taken = bytearray(pool_size)
    out_img: list[int] = []
    out_cl: list[int] = []
    # Sequential by nature (each acceptance changes what later pairs may take); the loop
    # only visits ~budget + conflicts pairs and stops as soon as every budget is filled.
    for c, i in zip(cl[order].tolist(), img[order].tolist()):
        if remaining == 0:
            break
        if need[c] and not taken[i]:
            taken[i] = 1
            need[c] -= 1
            remaining -= 1
            out_img.append(i)
            out_cl.append(c)
    return np.asarray(out_img, dtype=np.int64), np.asarray(out_cl, dtype=np.int64), np.asarray(need)


def nearest_rows(queries: Any, base: Any, k: int, chunk_bytes: int = 64 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 k nearest rows of ``base`` for each of a few ``queries``: (dist2 (nq, k), index (nq, k)).

    ``base`` (N, d) may be a memory-mapped array: it is read in row blocks of about
    ``chunk_bytes`` (64 MB) and searched with ``faiss.knn`` (BLAS kernel, no index holding a
    copy of the base); ``faiss.ResultHeap`` merges the blocks' results. Memory stays
    O(block + nq k) whatever N is, and the result equals one flat search over the whole base
    (ties aside). Why flat and not IVF: the queries here are the N_c centroids, so one exact
    pass costs N N_c d multiply-adds (0.04 s for 300K x 10 x 128), less than training an IVF
    over the pool would. Rows beyond N (k > N) come back with index -1 and distance float32 max.
    """
    q = as_float32_numpy(queries, "queries")
    n, d = base.shape
    if q.shape[1] != d:
        raise UserError(f"queries have dim {q.shape[1]} but the base has dim {d}")
    if k < 1:
        raise UserError(f"k must be >= 1; got {k}")
    heap = faiss.ResultHeap(q.shape[0], int(k))
    rows = max(1, int(chunk_bytes) // (4 * d))
    for start in range(0, n, rows):
        block = as_float32_numpy(base[start : start + rows], "base")
        with _faiss_blas_search():
            dist, idx = faiss.knn(q, block, min(int(k), block.shape[0]))
        heap.add_result(dist, np.where(idx >= 0, idx + start, -1))
    heap.finalize()
    return heap.D, heap.I


def select_nearest(pool_emb: Any, centroids: Any, budgets: Any,
                   chunk_bytes: int = 64 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster, the ``budgets[k]`` pool images nearest its centroid (L2), no image twice.

    KDUP (paper 003, Sec. 3.1.1): "we sample OOD images whose feature embeddings are close to
    the cluster center".  Conflicts are resolved by global distance order: all candidate
    (cluster, image) pairs are visited nearest-first and an image claimed by several clusters
    goes to the nearest; the loser continues with its next candidate.  Candidates come from
    an exact search streamed over the pool (:func:`nearest_rows`, 2 * budget + 64 per
    cluster; ``pool_emb`` may be a memory-mapped array and is never copied whole); a cluster
    that runs out of candidates before its budget is filled gets twice as many and the
    matching is redone, so the result equals greedy matching over the full distance matrix.

    Returns (pool_indices int64 (sum budgets,), cluster_of_each int64), grouped by cluster
    (cluster 0 first) and nearest-first within a cluster.
    """
    pool = pool_emb if isinstance(pool_emb, np.ndarray) else as_float32_numpy(pool_emb, "pool_emb")
    if pool.ndim != 2:
        raise UserError(f"pool_emb must be a 2-D array (n_samples, dim); got shape {pool.shape}")
    cents = as_float32_numpy(centroids, "centroids")
    b = as_budgets(budgets)
    n_pool = pool.shape[0]
    if cents.shape[0] != b.size:
        raise UserError(f"budgets has {b.size} entries but there are {cents.shape[0]} centroids")
    if cents.shape[1] != pool.shape[1]:
        raise UserError(f"centroids have dim {cents.shape[1]} but pool_emb has dim {pool.shape[1]}")
    total = int(b.sum())
    if total > n_pool:
        raise UserError(f"sum(budgets) = {total} exceeds the pool size {n_pool}")
    if total == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)

    n_cand = np.where(b > 0, np.minimum(2 * b + 64, n_pool), 0)
    dists: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * b.size
    idxs: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * b.size
    to_search = np.flatnonzero(n_cand > 0)
    while True:
        if to_search.size:
            k_max = int(n_cand[to_search].max())
            dist, nbr = nearest_rows(cents[to_search], pool, k_max, chunk_bytes)
            for row, c in enumerate(to_search.tolist()):
                dists[c] = dist[row, : n_cand[c]]
                idxs[c] = nbr[row, : n_cand[c]]
        images, clusters, need = _greedy_by_distance(dists, idxs, b, n_pool)
        short = np.flatnonzero(need > 0)
        if short.size == 0:
            break
        if (n_cand[short] >= n_pool).all():  # cannot happen when sum(budgets) <= pool size
            raise RuntimeError("select_nearest: candidate lists exhausted although the pool is large enough")
        n_cand[short] = np.minimum(2 * n_cand[short], n_pool)
        to_search = short
    order = np.argsort(clusters, kind="stable")
    return images[order], clusters[order]


def nearest_to_centre(id_emb: Any, labels: Any, centroids: Any, n: int,
                      chunk_rows: int = 16384) -> np.ndarray:
    """Per cluster, the ``n`` members (ID rows with ``labels == k``) nearest its centroid (L2,
    float64, ties by row index), nearest first: int64 (N_c, n), -1 where a cluster has fewer
    than ``n`` members.  What the update's thumbnail grid shows as "the cluster's images"
    (:mod:`ltcl.sampling.update_pictures`); the distances are computed in row blocks of
    ``chunk_rows`` so that a large ID set is never copied whole in float64."""
    z = as_float32_numpy(id_emb, "id_emb")
    lab = np.asarray(labels, dtype=np.int64)
    cents = np.asarray(as_float32_numpy(centroids, "centroids"), dtype=np.float64)
    if lab.shape != (z.shape[0],) or cents.shape[1] != z.shape[1]:
        raise UserError(f"nearest_to_centre: {lab.shape} labels, embeddings {z.shape}, centroids {cents.shape}")
    out = np.full((cents.shape[0], int(n)), -1, dtype=np.int64)
    for k in range(cents.shape[0]):
        members = np.flatnonzero(lab == k)
        d = np.concatenate([((z[members[s: s + chunk_rows]].astype(np.float64) - cents[k]) ** 2).sum(axis=1)
                            for s in range(0, members.size, chunk_rows)]) if members.size else np.empty(0)
        best = members[np.lexsort((members, d))[: int(n)]]
        out[k, : best.size] = best
    return out


# --------------------------------------------------------------------------- full update
@dataclass
class OODSelection:
    """Result of one sampling update.

    ``pool_indices``/``cluster_of_each``: selected OOD images and the cluster each was taken
    for (random: cluster -1; augment/none: empty).  ``id_indices`` (augment only): ID samples
    to duplicate, with ``cluster_of_each`` aligned to them.  ``budgets``, ``id_labels``
    (cluster of each ID sample), ``centroids``, ``cluster_tailness`` are None for random/none;
    ``sample_tailness`` is the (momentum-averaged) per-ID-sample tailness used.
    ``timings`` has keys clustering, tailness, budget, sampling (seconds).  ``id_nearest``
    (set by the sampler that holds the embeddings, :class:`ltcl.sampling.refresh.OODSampler`):
    per cluster the ID rows nearest its centroid, for the update's pictures.
    """

    strategy: str
    pool_indices: np.ndarray
    cluster_of_each: np.ndarray
    budgets: np.ndarray | None = None
    id_labels: np.ndarray | None = None
    centroids: np.ndarray | None = None
    sample_tailness: torch.Tensor | None = None
    cluster_tailness: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)
    id_indices: np.ndarray | None = None
    cluster_info: dict[str, Any] = field(default_factory=dict)
    id_nearest: np.ndarray | None = None  # (N_c, n) ID rows nearest each centroid (nearest_to_centre), -1 padded
    pool_scores: dict[str, Any] = field(default_factory=dict)  # label-free summary of a strategy's pool scores (mak)


def round_seed(seed: int, round_index: int, stream: int) -> int:
    """The seed of random stream ``stream`` of update ``round_index`` (0: random pick, 1: k-means
    init, 2: COLT's batch shuffle, 3: augment's draws, 4: MAK's augmented views, 5: MAK's re-batchings)."""
    return int(np.random.SeedSequence([int(seed), int(round_index), stream]).generate_state(1)[0] >> 1)


def empty_indices() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


# --------------------------------------------------------------------------- diagnostics
def tailness_diagnostics(
    sample_tailness: Any,
    id_true_labels: Any,
    class_counts: Any,
    cluster_labels: Any | None,
    budgets: Any | None,
    few_classes: Any,
    class_groups: Any | None = None,
) -> dict[str, Any]:
    """How well tailness and budgets track true rarity (uses ground-truth labels; analysis only).

    Keys: ``spearman_frequency`` (Spearman rho between sample tailness and the training-set
    frequency of its true class; negative when tailness tracks rarity), ``spearman_rarity``
    (rho with -frequency; positive is good), ``few_budget_share`` (share of the budget given to
    clusters whose majority true class is a Few class), ``n_few_clusters``, and per cluster
    ``cluster_majority_class`` (-1 if empty), ``cluster_purity`` (NaN if empty),
    ``cluster_sizes``, plus ``overall_purity`` (sum of majority counts / N).
    With ``class_groups`` (a group name per class, e.g. "many"/"medium"/"few"),
    ``budget_per_image`` gives, per group, the mean over its images of (budget of the image's
    cluster / cluster size), relative to the overall mean budget / N: > 1 means the group's
    images draw more OOD images than average.  Unlike ``few_budget_share`` it does not need a
    cluster dominated by a Few class (which rarely exists when N_c ~ C and Few classes hold ~2%
    of the data).  Undefined correlations/shares are NaN.  All values are plain Python types.
    """
    from scipy.stats import spearmanr

    s = np.asarray(sample_tailness.detach().cpu() if isinstance(sample_tailness, torch.Tensor) else sample_tailness,
                   dtype=np.float64)
    y = np.asarray(id_true_labels, dtype=np.int64)
    counts = np.asarray(class_counts, dtype=np.float64)
    if s.shape != y.shape or s.ndim != 1:
        raise UserError(f"sample_tailness and id_true_labels must be 1-D of equal length; got {s.shape}, {y.shape}")
    freq = counts[y]
    out: dict[str, Any] = {}
    if np.ptp(s) == 0 or np.ptp(freq) == 0:
        rho = float("nan")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = float(spearmanr(s, freq)[0])
    out["spearman_frequency"] = rho
    out["spearman_rarity"] = -rho if rho == rho else float("nan")

    few = set(int(c) for c in np.asarray(few_classes).ravel().tolist())
    if cluster_labels is None:
        out.update(cluster_majority_class=[], cluster_purity=[], cluster_sizes=[], overall_purity=float("nan"),
                   few_budget_share=float("nan"), n_few_clusters=0)
        return out
    lab = np.asarray(cluster_labels, dtype=np.int64)
    if lab.shape != y.shape:
        raise UserError("cluster_labels must have one entry per ID sample")
    n_classes = max(int(counts.size), int(y.max()) + 1)
    b = None if budgets is None else np.asarray(budgets, dtype=np.int64)
    n_clusters = max(int(lab.max()) + 1, 0 if b is None else b.size)
    table = np.bincount(lab * n_classes + y, minlength=n_clusters * n_classes).reshape(n_clusters, n_classes)
    sizes = table.sum(axis=1)
    majority = np.where(sizes > 0, table.argmax(axis=1), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.where(sizes > 0, table.max(axis=1) / np.maximum(sizes, 1), np.nan)
    few_mask = np.isin(majority, list(few))
    out.update(
        cluster_majority_class=majority.tolist(),
        cluster_purity=[float(p) for p in purity],
        cluster_sizes=sizes.tolist(),
        overall_purity=float(table.max(axis=1).sum() / max(int(sizes.sum()), 1)),
        n_few_clusters=int(few_mask.sum()),
    )
    if b is None or b.sum() == 0:
        out["few_budget_share"] = float("nan")
    else:
        out["few_budget_share"] = float(b[few_mask[: b.size]].sum() / b.sum())
        if class_groups is not None:
            per_image = b[lab] / sizes[lab] / (b.sum() / lab.size)
            names = np.asarray(list(class_groups))[y]
            out["budget_per_image"] = {str(g): float(per_image[names == g].mean())
                                       for g in dict.fromkeys(class_groups) if (names == g).any()}
    return out

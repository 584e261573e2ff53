"""OOD data selection and the full sampling update: KDUP (paper 003, Sec. 3.1.1) and baselines.

Strategies of :func:`sample_ood`:

* ``"kdup"``   – k-means + KL refinement (Eq. 1-3), kNN tailness over the whole ID set with
  momentum (Eq. 4-6), budgets (Eq. 7), OOD images nearest to each centroid.
* ``"colt"``   – COLT (Bai et al. 2023): plain k-means, in-batch top-k tailness with EMA 0.97,
  the same budget rule and nearest-to-centroid selection.
* ``"random"`` – ``budget`` pool images uniformly at random, no clustering.
* ``"augment"`` – KDUP's Table 12 baseline: clusters and budgets as in ``"kdup"``, but each
  cluster's budget is filled with duplicated ID images of that cluster (to be augmented).
* ``"none"``   – no extra data.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.registry import STRATEGIES as _REGISTRY
from ltcl.sampling.budget import allocate_budget
from ltcl.sampling.clustering import as_float32_numpy, cluster_embeddings
from ltcl.sampling.tailness import (
    cluster_tailness,
    colt_tailness,
    momentum_update,
    tailness_scores,
)

STRATEGIES = tuple(_REGISTRY)  # ltcl.registry.STRATEGIES is the one list
TIMING_KEYS = ("clustering", "tailness", "budget", "sampling")


def _as_budgets(budgets: Any) -> np.ndarray:
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
    b = _as_budgets(budgets)
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


def select_random(pool_size: int, total: int, seed: int) -> np.ndarray:
    """``total`` distinct pool indices drawn uniformly at random (int64), the random-sampling baseline."""
    if total < 0 or total > pool_size:
        raise UserError(f"total = {total} must be in [0, pool_size = {pool_size}]")
    return np.random.default_rng(seed).choice(pool_size, size=int(total), replace=False).astype(np.int64)


def select_augment(labels: Any, budgets: Any, seed: int) -> np.ndarray:
    """ID indices to duplicate, KDUP Table 12 baseline (augmented ID images in place of OOD data).

    Cluster k's budget is filled with ``budgets[k]`` draws, with replacement and uniform
    within the cluster, from the ID samples labelled k.  If a cluster with a positive budget
    has no ID samples (possible after KL refinement), its draws are uniform over all ID
    samples so that the total stays ``sum(budgets)``.  Returns int64 indices grouped by cluster.
    """
    lab = np.asarray(labels, dtype=np.int64)
    b = _as_budgets(budgets)
    if lab.ndim != 1 or lab.size == 0:
        raise UserError(f"labels must be a non-empty 1-D array; got shape {lab.shape}")
    if lab.min() < 0 or lab.max() >= b.size:
        raise UserError(f"labels must lie in [0, {b.size}) (one budget per cluster)")
    rng = np.random.default_rng(seed)
    order = np.argsort(lab, kind="stable")
    counts = np.bincount(lab, minlength=b.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picks = []
    for k in np.flatnonzero(b > 0).tolist():  # one vectorised draw per cluster
        members = order[starts[k] : starts[k] + counts[k]] if counts[k] else np.arange(lab.size)
        picks.append(members[rng.integers(0, members.size, size=int(b[k]))])
    return np.concatenate(picks).astype(np.int64) if picks else np.empty(0, dtype=np.int64)


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


def _round_seed(seed: int, round_index: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(round_index), stream]).generate_state(1)[0] >> 1)


def _empty() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


def sample_ood(
    id_emb: Any,
    pool_emb: Any,
    config,
    prev_tailness: torch.Tensor | None = None,
    round_index: int = 0,
    *,
    colt_batch_size: int,
) -> tuple[OODSelection, torch.Tensor | None]:
    """Run one OOD sampling update (KDUP paper 003, Sec. 3.1.1, or a baseline; see module doc).

    ``config`` is the ``ood`` params section (``ltcl.params.OODParams``: strategy, N_c, K of Eq. 4,
    rho of Eq. 5, N_b and tau of Eq. 7, the clustering's stopping rule, the seed; COLT's top-k and
    momentum in its subsection ``ood.colt``, read as ``config.own``); ``colt_batch_size`` is the
    pre-training batch size, in which COLT scores tailness.

    ``id_emb`` (N_id, d) and ``pool_emb`` (N_pool, d) are L2-normalised float32 embeddings
    (torch or numpy); ``pool_emb`` may be None for "augment"/"none".  ``prev_tailness`` is the
    momentum state returned by the previous call (None at the first update).  ``round_index``
    (e.g. the update count) varies the random streams (COLT batch shuffle, random pick,
    augment draws, k-means init) between updates.  Returns (selection, new tailness state).
    """
    strategy = config.strategy
    if strategy not in STRATEGIES:
        raise UserError(f"ood.strategy must be one of {STRATEGIES}; got {strategy!r}")
    timings = {key: 0.0 for key in TIMING_KEYS}
    if strategy == "none":
        sel = OODSelection(strategy=strategy, pool_indices=_empty(), cluster_of_each=_empty(), timings=timings)
        return sel, prev_tailness
    if config.budget <= 0:
        raise UserError(f"ood.budget must be > 0 for strategy {strategy!r}; got {config.budget}")

    pool = None
    if _REGISTRY[strategy].reads_pool:
        if pool_emb is None:
            raise UserError(f"pool_emb is required for strategy {strategy!r}")
        pool = as_float32_numpy(pool_emb, "pool_emb")
        if pool.shape[0] < config.budget:
            raise UserError(f"the OOD pool has {pool.shape[0]} images, fewer than ood.budget = {config.budget}")

    if strategy == "random":
        t0 = time.perf_counter()
        idx = select_random(pool.shape[0], config.budget, _round_seed(config.seed, round_index, 0))
        timings["sampling"] = time.perf_counter() - t0
        sel = OODSelection(strategy=strategy, pool_indices=idx, cluster_of_each=np.full(idx.size, -1, dtype=np.int64),
                           sample_tailness=prev_tailness, timings=timings)
        return sel, prev_tailness

    z = as_float32_numpy(id_emb, "id_emb")
    if pool is not None and pool.shape[1] != z.shape[1]:
        raise UserError(f"pool_emb has dim {pool.shape[1]} but id_emb has dim {z.shape[1]}")
    if config.clusters > z.shape[0]:
        raise UserError(f"ood.clusters = {config.clusters} exceeds the number of ID samples {z.shape[0]}")
    if prev_tailness is not None and tuple(prev_tailness.shape) != (z.shape[0],):
        raise UserError(
            f"prev_tailness has shape {tuple(prev_tailness.shape)}; expected ({z.shape[0]},) for this ID set"
        )

    t0 = time.perf_counter()
    centroids, labels, info = cluster_embeddings(
        z,
        config.clusters,
        seed=_round_seed(config.seed, round_index, 1),
        tol=config.cluster_tol,
        max_iter=config.cluster_max_iter,
        refine=config.refine and strategy != "colt",
        lr=config.cluster_lr,
        patience=config.cluster_patience,
    )
    t1 = time.perf_counter()
    if strategy == "colt":
        tail = colt_tailness(z, colt_batch_size, config.own.topk,
                             seed=_round_seed(config.seed, round_index, 2),
                             prev=prev_tailness, momentum=config.own.momentum)
    else:
        tail = momentum_update(prev_tailness, tailness_scores(z, config.knn_k, exact_max=config.knn_exact_max,
                                                              nprobe=config.knn_nprobe), config.momentum)
    t2 = time.perf_counter()
    cl_tail = cluster_tailness(tail, labels, config.clusters)
    # Eq. 7 over the clusters that hold ID samples: a cluster the KL refinement left empty
    # represents no in-distribution data, so it draws no OOD images (measured: at 12,406 ID x
    # 300K it would otherwise have taken 209 of 10,000).
    nonempty = np.bincount(np.asarray(labels), minlength=config.clusters) > 0
    budgets = np.zeros(config.clusters, dtype=np.int64)
    budgets[nonempty] = allocate_budget(cl_tail[torch.as_tensor(nonempty)], config.budget, config.budget_temperature)
    t3 = time.perf_counter()
    id_indices = None
    if strategy == "augment":
        id_indices = select_augment(labels, budgets, _round_seed(config.seed, round_index, 3))
        pool_idx, cluster_of_each = _empty(), np.repeat(np.arange(budgets.size), budgets).astype(np.int64)
    else:
        pool_idx, cluster_of_each = select_nearest(pool, centroids, budgets)
    t4 = time.perf_counter()
    timings.update(clustering=t1 - t0, tailness=t2 - t1, budget=t3 - t2, sampling=t4 - t3)
    sel = OODSelection(strategy=strategy, pool_indices=pool_idx, cluster_of_each=cluster_of_each, budgets=budgets,
                       id_labels=labels, centroids=centroids, sample_tailness=tail, cluster_tailness=cl_tail,
                       timings=timings, id_indices=id_indices, cluster_info=info)
    return sel, tail


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

"""MAK, Model-Aware K-center sampling (Jiang et al., NeurIPS 2021, "Improving Contrastive Learning
on Imbalanced Seed Data via Open-World Sampling"), as the authors' released code computes it:
github.com/VITA-Group/MAK, commit 75d2b9f (below "sampling.py" and "utils.py" are files of that
commit).  The paper is not among ../shared/papers; paper 003 compares with it in Table 3 and uses
its setting in Table 7.  Pure functions of embeddings; the strategy that embeds the pool and runs
them is :mod:`ltcl.sampling.strategies.mak`.

MAK scores every pool image by three principles and keeps ``N_b`` of them:

    * :func:`rebatched_loss` - a sample's NT-Xent in random batches of 512, averaged over 10
      re-batchings (``nt_xent_inter_batch_multiple_time``, utils.py:140-184)
    * :func:`ecle`            - tailness, the empirical contrastive loss expectation: that loss
      over every pair of R augmented projection embeddings, averaged (``calculateLoss_more``,
      sampling.py:106-141)
    * :func:`proximity`       - 1 - the largest cosine between the image's backbone feature and
      the k-means centres of the ID backbone features (``cal_cloest_distance_to_feature_centroid``,
      sampling.py:76-103)
    * :func:`mak_score` / :func:`core_set` - the standardised ECLE minus the standardised distance,
      each weighted, and the top ``1.5 N_b`` (``optimize_loss_near_optimized``, sampling.py:180-192)
    * :func:`k_center_greedy` - diversity: greedy K-center from the ID features over that core
      down to ``N_b`` (``k_core_set_greedy``, sampling.py:144-172), incrementally

Deviations from the released code (docs/deviations.md lists them with what each changes):
    1. Random streams: the re-batchings draw ``torch.randperm`` from a ``torch.Generator`` seeded
       from ``ood.seed`` (released: the global generator after ``torch.manual_seed(0)``,
       sampling.py:244, on CUDA); the k-means ``random_state`` is derived from ``ood.seed``
       (released: 0, sampling.py:81).  Same draws' structure, one randperm per pair and
       re-batching in the released order.
    2. The NT-Xent of a batch is :func:`ltcl.losses.contrastive.nt_xent_per_sample` (log-softmax,
       self-similarity masked); the released ``nt_xent`` subtracts exactly exp(1/t) for it
       (utils.py:127).  They differ by the rounding of cos(z, z) = 1: below 1e-6 of the loss.
    3. The core set is the top of a *stable* argsort (released: numpy's default quicksort,
       sampling.py:192), so ties keep the lower pool index.
    4. K-center keeps, per candidate, its largest similarity to the chosen set and updates it
       with each pick (O(N_b x core) instead of the released O(N_b x core x |chosen|) recompute,
       sampling.py:152-167); the picks are the same (ties: the lowest index, as torch.argmin).
    5. A constant ECLE or distance (std 0) standardises to 0 where the released code divides by 0.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F

from ltcl.errors import UserError
from ltcl.losses.contrastive import nt_xent_per_sample

KMEANS_INIT = 10  # scikit-learn's n_init before 1.4 ("auto" = 1 since), which the released KMeans call used


def rebatched_loss(v1: torch.Tensor, v2: torch.Tensor, temperature: float, batch_size: int, repeats: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Each sample's NT-Xent (mean of its two views' anchor losses) inside random batches of
    ``batch_size`` samples, averaged over ``repeats`` random re-batchings (utils.py:140-184).

    Each re-batching draws a permutation of the N samples; batch i is its slice
    [i B, (i + 1) B), except the last, which is the permutation's last B samples, of which only
    those not in an earlier batch keep their loss (utils.py:160-173: ``offset``), so every sample
    has exactly one loss per re-batching, computed against B - 1 other samples.

    Args:
        v1, v2: (N, d) the two views' embeddings (row k = sample k); L2-normalised inside.
        temperature: t of the NT-Xent (released 0.2, sampling.py:130).
        batch_size: B (released 512); N >= B.
        repeats: re-batchings averaged (released 10).
        generator: CPU generator of the permutations (one ``randperm(N)`` per re-batching).

    Returns:
        (N,) float32 losses on the embeddings' device.
    """
    n = int(v1.shape[0])
    if v1.shape != v2.shape or v1.ndim != 2:
        raise UserError(f"the two views must be (N, d) of one shape; got {tuple(v1.shape)} and {tuple(v2.shape)}")
    if n < batch_size:
        raise UserError(f"MAK's re-batched loss needs at least ood.mak.batch = {batch_size} pool images; the pool "
                        f"has {n}: lower ood.mak.batch or enlarge the pool")
    out = []
    for _ in range(repeats):
        order = torch.randperm(n, generator=generator).to(v1.device)
        parts = []
        for i in range(-(-n // batch_size)):
            if (i + 1) * batch_size < n:
                rows, offset = order[i * batch_size: (i + 1) * batch_size], 0
            else:  # the last batch: the permutation's last B rows, the overlap with batch i - 1 dropped
                rows, offset = order[n - batch_size:], i * batch_size - (n - batch_size)
            parts.append(nt_xent_per_sample(v1[rows], v2[rows], temperature).float()[offset:])
        losses = torch.empty(n, dtype=torch.float32, device=v1.device)
        losses[order] = torch.cat(parts)  # the released ``losses_batch[argsort(order)]``
        out.append(losses)
    return torch.stack(out).mean(0)


@torch.no_grad()
def ecle(views: torch.Tensor, temperature: float, batch_size: int, repeats: int,
         generator: torch.Generator) -> torch.Tensor:
    """ECLE, MAK's tailness: for every pair (i, j), i < j, of the R augmented embeddings, the
    re-batched per-sample loss (:func:`rebatched_loss`) with view i as the first and view j as
    the second view, averaged over the R (R - 1) / 2 pairs (sampling.py:106-141; the pairs in the
    released order (0, 1), (0, 2), ..., (R-2, R-1)).  ``views``: (R, N, d).  Returns (N,) float32."""
    if views.ndim != 3 or views.shape[0] < 2:
        raise UserError(f"ECLE needs (R >= 2, N, d) augmented embeddings; got shape {tuple(views.shape)}")
    per_pair = [rebatched_loss(views[i], views[j], temperature, batch_size, repeats, generator)
                for i, j in combinations(range(views.shape[0]), 2)]
    return torch.stack(per_pair).mean(0)


def _unit(x) -> torch.Tensor:
    return F.normalize(torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x,
                                       dtype=torch.float32), dim=-1)


@torch.no_grad()
def proximity(id_features, pool_features, clusters: int, seed: int, n_init: int = KMEANS_INIT,
              chunk: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MAK's proximity (sampling.py:76-103): k-means (scikit-learn, ``clusters`` centres,
    ``random_state=seed``) of the L2-normalised ID backbone features; each pool image's distance
    is 1 - its largest cosine with the normalised centres.

    Returns (distance (N_pool,) float32, nearest centre of each pool image (N_pool,) int64,
    centres (K, d) float32, cluster of each ID image (N_id,) int64)."""
    from sklearn.cluster import KMeans

    z = _unit(id_features)
    if clusters > z.shape[0]:
        raise UserError(f"ood.mak.clusters = {clusters} exceeds the number of ID images ({z.shape[0]})")
    km = KMeans(n_clusters=clusters, random_state=seed, n_init=n_init).fit(z.numpy())
    centres = _unit(km.cluster_centers_)
    pool = _unit(pool_features)
    best, nearest = [], []
    for s in range(0, pool.shape[0], chunk):
        sim = pool[s:s + chunk] @ centres.T
        m, k = sim.max(dim=1)
        best.append(m)
        nearest.append(k)
    dist = (1 - torch.cat(best)).numpy().astype(np.float32)
    return dist, torch.cat(nearest).numpy().astype(np.int64), centres.numpy(), km.labels_.astype(np.int64)


def _standardised(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std with numpy's population std, in float32 (sampling.py:182-184); 0 where std is 0."""
    x = np.asarray(x, dtype=np.float32)
    sd = np.std(x)
    return (x - np.mean(x)) / sd if sd > 0 else np.zeros_like(x)


def mak_score(loss, distance, loss_weight: float) -> np.ndarray:
    """loss_weight z(ECLE) - (1 - loss_weight) z(distance), float32 (sampling.py:180-187, 257):
    high for images the model finds hard (tail) and that lie near the ID data."""
    if np.shape(loss) != np.shape(distance):
        raise UserError(f"ECLE and distance must have one value per pool image; got {np.shape(loss)}, "
                        f"{np.shape(distance)}")
    return loss_weight * _standardised(loss) - (1 - loss_weight) * _standardised(distance)


def core_set(score: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` highest scores' indices, lowest score first (sampling.py:192, a stable sort)."""
    return np.argsort(np.asarray(score), kind="stable")[-int(size):].astype(np.int64)


@torch.no_grad()
def k_center_greedy(initial, candidates, n: int, chunk: int = 8192) -> np.ndarray:
    """Greedy K-center (sampling.py:144-172): ``n`` times, the candidate whose largest cosine
    similarity to the ID set ``initial`` and the candidates already picked is the smallest
    (ties: the lowest index), in pick order.

    Incremental: each candidate's largest similarity to the chosen set is kept and updated with
    each pick's similarities, so a pick costs one (C, d) x (d,) product, not a pass over the whole
    chosen set (the released recompute); the result is the same.

    Args:
        initial: (M, d) ID features (L2-normalised inside).
        candidates: (C, d) pool features of the core set (L2-normalised inside); n <= C.
        n: picks.
        chunk: ID rows per product of the initial similarities.

    Returns:
        (n,) int64 indices into ``candidates``.
    """
    init, cand = _unit(initial), _unit(candidates)
    c = cand.shape[0]
    if not 0 <= n <= c:
        raise UserError(f"K-center picks {n} of {c} candidates")
    nearest = torch.full((c,), -float("inf"), dtype=cand.dtype, device=cand.device)
    for s in range(0, init.shape[0], chunk):
        nearest = torch.maximum(nearest, (cand @ init[s:s + chunk].T).max(dim=1).values)
    picked = np.empty(n, dtype=np.int64)
    for t in range(n):
        k = int(torch.argmin(nearest))
        picked[t] = k
        nearest = torch.maximum(nearest, cand @ cand[k])
        nearest[k] = float("inf")  # picked: never again (the released excludeMask)
    return picked

"""Cluster-quality metrics and t-SNE of learned representations.

- CHI (Calinski-Harabasz index, higher is better) and DBI (Davies-Bouldin index, lower is
  better) of the features grouped by their *true* labels - KDUP (paper 003) Table 4.
- NMI and ARI between k-means clusters (k = number of classes) and the true labels.
- 2-D t-SNE of a (stratified) subsample - KDUP Fig. 3.
- The sorted cluster sizes of a k-means of the training split's features (no labels needed): the
  tail the model sees, summarised by the largest / smallest cluster ratio.
All computed with scikit-learn.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from sklearn.cluster import KMeans
from sklearn.manifold import TSNE
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
)


def _to_numpy(x: npt.ArrayLike | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _features(x: npt.ArrayLike | torch.Tensor, l2_normalize: bool) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"features must be a non-empty 2-D (N, D) matrix, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if l2_normalize:
        arr = arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
    return arr


def cluster_metrics(
    features: npt.ArrayLike | torch.Tensor,
    labels: npt.ArrayLike | torch.Tensor,
    num_classes: int,
    *,
    seed: int,
    l2_normalize: bool,
    n_init: int = 10,
) -> dict[str, float]:
    """CHI / DBI with the true labels and NMI / ARI of k-means against the true labels.

    Args:
        features: (N, D) features.
        labels: (N,) true class labels.
        num_classes: number of k-means clusters (the number of classes C).
        seed: k-means ``random_state``.
        l2_normalize: L2-normalise the rows first (the paper does not say; default: raw).
        n_init: k-means restarts (best inertia kept).

    Returns:
        ``{"chi", "dbi", "nmi", "ari"}``.
    """
    x = _features(features, l2_normalize)
    y = _to_numpy(labels).reshape(-1).astype(np.int64)
    if y.size != x.shape[0]:
        raise ValueError(f"labels has {y.size} entries but features has {x.shape[0]} rows")
    n_labels = np.unique(y).size
    if not 2 <= n_labels <= x.shape[0] - 1:
        raise ValueError(
            f"labels must contain between 2 and N - 1 = {x.shape[0] - 1} distinct classes, got {n_labels}"
        )
    if not 2 <= num_classes <= x.shape[0]:
        raise ValueError(f"num_classes must be in [2, N={x.shape[0]}], got {num_classes}")
    clusters = KMeans(n_clusters=num_classes, n_init=n_init, random_state=seed).fit_predict(x)
    return {
        "chi": float(calinski_harabasz_score(x, y)),
        "dbi": float(davies_bouldin_score(x, y)),
        "nmi": float(normalized_mutual_info_score(y, clusters)),
        "ari": float(adjusted_rand_score(y, clusters)),
    }


def stratified_subsample(
    n: int, n_max: int, labels: npt.ArrayLike | None, seed: int
) -> np.ndarray:
    """Sorted indices of at most ``n_max`` of ``n`` samples.

    Without labels: uniform random subset. With labels: proportional stratified subset -
    a random permutation is stably sorted by label and ``n_max`` evenly spaced positions are
    taken, so each class keeps its share (every class with >= n / n_max samples appears).
    """
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    rng = np.random.default_rng(seed)
    if n <= n_max:
        return np.arange(n)
    perm = rng.permutation(n)
    if labels is None:
        return np.sort(perm[:n_max])
    y = np.asarray(labels).reshape(-1)
    if y.size != n:
        raise ValueError(f"labels has {y.size} entries but there are {n} samples")
    by_label = perm[np.argsort(y[perm], kind="stable")]
    positions = np.floor(np.arange(n_max) * (n / n_max)).astype(np.int64)
    return np.sort(by_label[positions])


def tsne_embedding(
    features: npt.ArrayLike | torch.Tensor,
    n_max: int,
    seed: int,
    labels: npt.ArrayLike | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of at most ``n_max`` samples.

    The subsample is stratified by ``labels`` when given, random otherwise (see
    :func:`stratified_subsample`). sklearn ``TSNE`` with PCA init and
    perplexity ``min(30, n / 4)``.

    Returns:
        (indices into ``features`` (sorted, int64), coordinates float32 of shape (n, 2)).
    """
    x = _features(features, l2_normalize=False)
    if x.shape[0] < 5:
        raise ValueError(f"t-SNE needs at least 5 samples, got {x.shape[0]}")
    y = None if labels is None else _to_numpy(labels)
    idx = stratified_subsample(x.shape[0], n_max, y, seed)
    if idx.size < 5:
        raise ValueError(f"n_max must be >= 5 for t-SNE, got {n_max}")
    sub = x[idx]
    tsne = TSNE(
        n_components=2,
        perplexity=min(30.0, sub.shape[0] / 4),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    coords = tsne.fit_transform(sub).astype(np.float32)
    return idx.astype(np.int64), coords


def cluster_sizes(
    features: npt.ArrayLike | torch.Tensor,
    k: int,
    seed: int,
    l2_normalize: bool,
    n_init: int = 10,
) -> tuple[dict[str, float | int | list[int] | None], np.ndarray]:
    """The size distribution of a k-means of ``features`` (sklearn ``KMeans``, ``n_init`` restarts,
    ``random_state=seed``): how the encoder spreads the images it was trained on over ``k``
    clusters, the tail it sees without any label.

    Returns:
        (``{"k", "sizes", "largest_smallest_ratio"}``: the cluster sizes sorted from the largest down
        and largest / smallest (None if a cluster is empty); each row's cluster as its rank in that
        order, int64 (0 = the largest cluster)).
    """
    x = _features(features, l2_normalize)
    if not 2 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [2, N={x.shape[0]}], got {k}")
    assign = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
    counts = np.bincount(assign, minlength=k)
    order = np.argsort(-counts, kind="stable")  # cluster ids, largest first
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    sizes = counts[order]
    ratio = float(sizes[0] / sizes[-1]) if sizes[-1] > 0 else None
    return {"k": int(k), "sizes": [int(s) for s in sizes], "largest_smallest_ratio": ratio}, rank[assign]

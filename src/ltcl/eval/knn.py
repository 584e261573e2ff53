"""K-nearest-neighbour evaluation of frozen features (TASE Sec. 4.2, KNN@1 / KNN@10).

Features are L2-normalised and compared by cosine similarity (exact search with a faiss
``IndexFlatIP``). A test sample is assigned the majority class among its k nearest training
samples; ties in the vote are broken by the summed similarity of the tied classes, and any
remaining tie by the smallest class index.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import numpy.typing as npt
import torch

_VOTE_CELLS = 1 << 22  # vote-table entries per block (~32 MB of float64)


def _to_unit_float32(x: npt.ArrayLike | torch.Tensor, name: str) -> np.ndarray:
    """C-contiguous float32 copy of ``x`` with unit-L2-norm rows (zero rows stay zero)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) feature matrix, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32).copy()
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    arr /= np.maximum(norms, 1e-12)
    return arr


def _to_labels(y: npt.ArrayLike | torch.Tensor, name: str, n: int) -> np.ndarray:
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    arr = arr.reshape(-1).astype(np.int64)
    if arr.size != n:
        raise ValueError(f"{name} has {arr.size} labels but the matching features have {n} rows")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} labels must be non-negative")
    return arr


def _search(train: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k cosine neighbours: (similarities, indices), each (N_test, k), best first."""
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train_x and test_x must have the same feature dimension, got {train.shape[1]} and {test.shape[1]}"
        )
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)
    return index.search(test, k)


def _vote_block(sims: np.ndarray, nbr_labels: np.ndarray, num_classes: int) -> np.ndarray:
    n, k = nbr_labels.shape
    flat = np.repeat(np.arange(n), k) * num_classes + nbr_labels.ravel()
    counts = np.bincount(flat, minlength=n * num_classes).reshape(n, num_classes)
    sim_sum = np.bincount(flat, weights=sims.ravel().astype(np.float64), minlength=n * num_classes)
    sim_sum = sim_sum.reshape(n, num_classes)
    is_top = counts == counts.max(axis=1, keepdims=True)
    return np.where(is_top, sim_sum, -np.inf).argmax(axis=1)


def _vote(sims: np.ndarray, nbr_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Majority vote over neighbour labels; ties broken by summed similarity, then class index.

    Processed in row blocks so the (rows, num_classes) vote tables stay small.
    """
    block = max(1, _VOTE_CELLS // num_classes)
    return np.concatenate(
        [
            _vote_block(sims[i : i + block], nbr_labels[i : i + block], num_classes)
            for i in range(0, nbr_labels.shape[0], block)
        ]
    ).astype(np.int64)


def _check_k(k: int, n_train: int) -> None:
    if not 1 <= k <= n_train:
        raise ValueError(f"k must be in [1, len(train_x)={n_train}], got {k}")


def knn_predict(
    train_x: npt.ArrayLike | torch.Tensor,
    train_y: npt.ArrayLike | torch.Tensor,
    test_x: npt.ArrayLike | torch.Tensor,
    k: int,
    num_classes: int | None = None,
) -> np.ndarray:
    """Cosine k-NN predictions (int64, shape (N_test,)) of ``test_x`` from ``(train_x, train_y)``.

    ``num_classes`` defaults to ``max(train_y) + 1``. Raises ValueError if ``k`` exceeds the
    number of training samples.
    """
    train = _to_unit_float32(train_x, "train_x")
    test = _to_unit_float32(test_x, "test_x")
    labels = _to_labels(train_y, "train_y", train.shape[0])
    _check_k(k, train.shape[0])
    n_cls = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.max() >= n_cls:
        raise ValueError(f"train_y labels must lie in [0, num_classes={n_cls})")
    if test.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    sims, idx = _search(train, test, k)
    return _vote(sims, labels[idx], n_cls)


def knn_accuracy(
    train_x: npt.ArrayLike | torch.Tensor,
    train_y: npt.ArrayLike | torch.Tensor,
    test_x: npt.ArrayLike | torch.Tensor,
    test_y: npt.ArrayLike | torch.Tensor,
    ks: Sequence[int] = (1, 10),
) -> dict[str, float]:
    """KNN@k test accuracy in percent for each ``k`` in ``ks``: ``{"k1": ..., "k10": ...}``.

    One faiss search with ``max(ks)`` neighbours serves every ``k``.
    """
    if len(ks) == 0:
        raise ValueError("ks must contain at least one k")
    train = _to_unit_float32(train_x, "train_x")
    test = _to_unit_float32(test_x, "test_x")
    labels = _to_labels(train_y, "train_y", train.shape[0])
    truth = _to_labels(test_y, "test_y", test.shape[0])
    for k in ks:
        _check_k(k, train.shape[0])
    if test.shape[0] == 0:
        return {f"k{k}": float("nan") for k in ks}
    n_cls = int(max(labels.max(), truth.max())) + 1
    sims, idx = _search(train, test, max(ks))
    nbr_labels = labels[idx]
    return {
        f"k{k}": float(100.0 * np.mean(_vote(sims[:, :k], nbr_labels[:, :k], n_cls) == truth))
        for k in ks
    }

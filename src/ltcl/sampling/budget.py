"""Sampling-budget allocation over clusters, KDUP (paper 003, Eq. 7; following COLT, Bai et al. 2023)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import softmax


def budget_weights(cluster_tailness: Any, temperature: float) -> np.ndarray:
    """Softmax weights S(s_hat^tail / tau) of KDUP (paper 003, Eq. 7), float64 (K,) summing to 1.

    s_hat^tail = (s^tail - mean) / std with the population std (ddof=0); if all scores are
    equal (std = 0) the standardised scores are undefined and the weights are uniform.
    """
    if isinstance(cluster_tailness, torch.Tensor):
        cluster_tailness = cluster_tailness.detach().cpu().numpy()
    s = np.asarray(cluster_tailness, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"cluster_tailness must be a non-empty 1-D array; got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("cluster_tailness must be finite (no NaN/inf)")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    std = s.std()
    if std == 0.0 or not np.isfinite(std) or std < 1e-12 * max(1.0, float(np.abs(s).max())):
        return np.full(s.size, 1.0 / s.size)
    return softmax((s - s.mean()) / std / temperature)


def largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer apportionment of ``total`` proportional to ``weights`` (Hamilton / largest-remainder).

    Floors total * w, then hands the leftover units to the largest fractional parts (ties:
    lower index first).  Sum is exactly ``total``; a larger weight never gets fewer units.
    """
    raw = np.asarray(weights, dtype=np.float64) * total
    base = np.floor(raw).astype(np.int64)
    leftover = int(total - base.sum())
    if leftover > 0:
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:leftover]] += 1
    elif leftover < 0:  # only via float round-off (sum of weights > 1): remove from the smallest fractions
        order = np.argsort(raw - base, kind="stable")
        order = order[base[order] > 0]
        base[order[:-leftover]] -= 1
    return base


def allocate_budget(cluster_tailness: Any, total: int, temperature: float) -> np.ndarray:
    """Per-cluster budgets u_k = N_b * S(s_hat^tail / tau)_k, KDUP (paper 003, Eq. 7), as integers.

    Returns an int64 array (K,) of non-negative budgets summing exactly to ``total``
    (largest-remainder rounding of the real-valued Eq. 7), non-decreasing in tailness.
    """
    if not isinstance(total, (int, np.integer)) or total < 0:
        raise ValueError(f"total (sampling budget N_b) must be a non-negative integer; got {total!r}")
    return largest_remainder(budget_weights(cluster_tailness, temperature), int(total))

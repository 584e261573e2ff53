"""Per-class image counts of long-tailed splits.

Profiles
--------
``exp``
    Exponential profile of Cui et al. (2019), as computed by the SDCLR/COLT
    split code: ``n_c = int(n_max * (1 / ratio) ** (c / (C - 1)))`` for
    ``c = 0..C-1``. With n_max = 4500, ratio = 100 this gives the published
    CIFAR-10-LT (C = 10, 11,165 images) and, with n_max = 450, CIFAR-100-LT
    (C = 100, 9,754 images).
``pareto``
    ImageNet-LT / ImageNet-100-LT style (Liu et al. 2019: Pareto with shape
    alpha = 6, counts from ``n_max`` down to ``min_count``). We use the
    *expected order statistics* of a Pareto(alpha = 6, x_m = 1) sample of size C
    (its quantile function ``(1 - q) ** (-1 / alpha)`` at plotting positions
    ``q = (i + 0.5) / C``), sorted and scaled linearly so that the largest class
    has ``n_max`` and the smallest ``min_count`` images, rounded to integers.
    Deterministic and seed-free: drawing random Pareto samples instead makes the
    total vary threefold between seeds (about 9.7k-29.8k images for C = 100,
    1280..5), which would make "five splits" incomparable. For C = 100,
    n_max = 1280, min_count = 5 the total is 18,247 (the released
    ImageNet-100-LT file list has 12.21k; its exact counts are not derivable
    from a formula).
``balanced``
    ``n_max`` for every class.
"""

from __future__ import annotations

import numpy as np

from ltcl.errors import UserError

PROFILES = ("exp", "pareto", "balanced")
PARETO_ALPHA = 6.0


def _exp_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Cui et al. (2019) exponential profile, SDCLR's exact integer arithmetic."""
    if num_classes == 1:
        return [int(n_max)]
    return [int(n_max * (1.0 / ratio) ** (c / (num_classes - 1))) for c in range(num_classes)]


def _pareto_counts(n_max: int, num_classes: int, min_count: int, alpha: float = PARETO_ALPHA) -> list[int]:
    """Expected Pareto(alpha) order statistics scaled to [min_count, n_max], largest first."""
    if num_classes == 1:
        return [int(n_max)]
    q = (np.arange(num_classes) + 0.5) / num_classes
    v = np.sort((1.0 - q) ** (-1.0 / alpha))[::-1]
    t = (v - v[-1]) / (v[0] - v[-1])
    return np.rint(min_count + t * (n_max - min_count)).astype(np.int64).tolist()


def longtail_counts(
    n_max: int,
    num_classes: int,
    ratio: float,
    profile: str,
    min_count: int | None = None,
) -> list[int]:
    """Per-class image counts of a long-tailed split, largest first.

    Args:
        n_max: images of the largest (head) class.
        num_classes: C.
        ratio: imbalance ratio n_max / n_min (>= 1); for ``pareto`` it sets
            ``min_count = max(1, int(n_max / ratio))`` unless min_count is given.
        profile: ``"exp"`` | ``"pareto"`` | ``"balanced"`` (see module docstring).
        min_count: smallest count for ``pareto`` (ignored by other profiles).

    Raises:
        ValueError: bad arguments, or a profile that gives some class 0 images.
    """
    if profile not in PROFILES:
        raise UserError(f"profile must be one of {PROFILES}, got {profile!r}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise UserError(f"num_classes must be a positive int, got {num_classes!r}")
    if int(n_max) != n_max or n_max < 1:
        raise UserError(f"n_max must be a positive int, got {n_max!r}")
    if not np.isfinite(ratio) or ratio < 1:
        raise UserError(f"ratio (imbalance ratio) must be >= 1, got {ratio!r}")
    n_max, num_classes = int(n_max), int(num_classes)
    if profile == "balanced":
        return [n_max] * num_classes
    if profile == "exp":
        counts = _exp_counts(n_max, num_classes, float(ratio))
    else:
        lo = max(1, int(n_max / ratio)) if min_count is None else int(min_count)
        if lo < 1 or lo > n_max:
            raise UserError(f"min_count must be in 1..n_max={n_max}, got {lo}")
        counts = _pareto_counts(n_max, num_classes, lo)
    if min(counts) < 1:
        zero = sum(1 for c in counts if c < 1)
        raise UserError(
            f"{zero} of {num_classes} classes would get zero images with n_max={n_max} and "
            f"ratio={ratio} (profile {profile!r}); raise n_max (data.max_per_class) or lower the ratio "
            f"(data.imbalance_ratio): the smallest class gets n_max / ratio images, so n_max >= ratio is needed"
        )
    return counts

"""Temperature schedules.

* :func:`cosine_temperature` - TS, the cosine temperature schedule of Kukleva et al. 2023
  ("Temperature Schedules for self-supervised contrastive methods on long-tail data", ICLR),
  the baseline that paper 000 compares against ("a global temperature with cosine variation",
  Sec. 1; "an oscillating temperature factor with a cosine schedule", Sec. 2).
"""

from __future__ import annotations

import math

__all__ = ["cosine_temperature"]


def cosine_temperature(epoch: float, tau_min: float, tau_max: float, period: float) -> float:
    """TS cosine temperature schedule (Kukleva et al. 2023, ICLR; the baseline "TS" of paper 000).

    ``tau(e) = tau_min + (tau_max - tau_min) * (1 + cos(2 pi e / T)) / 2``

    ``period`` T is the length of one *full* oscillation, in the same unit as ``epoch``
    (epochs; pass a fractional epoch, e.g. ``epoch + step / steps_per_epoch``, for a per-iteration
    schedule): tau_max at e = 0, tau_min at e = T/2, tau_max again at e = T, periodic after.
    Paper 000 gives no period. The TS reference code (annusha/temperature_schedules@3ac1db6,
    train_simCLR.py:399) writes ``cos(pi * e / t_max)`` with ``t_max`` = half a period, so
    ``T = 2 * t_max``; its published runs (README.md) use t_max 200 with tau 0.1 .. 1.0 in
    2,000 epochs (T = 400; the argparse defaults are tau_max 0.5 and 1,000 epochs,
    train_simCLR.py:32, 60-62). ``ltcl.methods.temperature`` passes TS's epoch numbering (from 1).

    Args:
        epoch: current (possibly fractional) epoch e >= 0.
        tau_min: lowest temperature, > 0.
        tau_max: highest temperature, >= tau_min.
        period: T > 0.

    Returns:
        The temperature (float).
    """
    if not (0.0 < tau_min <= tau_max) or not math.isfinite(tau_max):
        raise ValueError(f"need 0 < tau_min <= tau_max < inf, got tau_min={tau_min}, tau_max={tau_max}")
    if not (period > 0 and math.isfinite(period)):
        raise ValueError(f"period must be a finite number > 0, got {period!r}")
    if not (epoch >= 0 and math.isfinite(epoch)):
        raise ValueError(f"epoch must be a finite number >= 0, got {epoch!r}")
    return tau_min + (tau_max - tau_min) * (1.0 + math.cos(2.0 * math.pi * epoch / period)) / 2.0

"""TASE: Temperature Auxiliary Sample-level Encouragement (paper 000).

* :func:`tase_loss` - the re-weighted, per-sample-temperature NT-Xent loss of Eq. 6.
* :func:`tase_negative_weights` - the negative weights ``1 / sqrt(|D_j|)`` (Sec. 3.4, Eq. 6).
* :func:`tase_temperatures` - per-sample temperature from the size of the sample's pseudo-class
  (Sec. 3.3), introduced progressively between epochs B and S (Sec. 3.5, Algorithm 1).
* :func:`tase_progress` - the progressive factor in [0, 1] used by :func:`tase_temperatures`.

Pure torch: no parameters, no state. Pseudo-labels (k-means on the current features, refreshed
every F epochs, Algorithm 1 lines 2, 10-11) are the method's state, not this module's.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F

__all__ = ["tase_loss", "tase_negative_weights", "tase_temperatures", "tase_progress"]

TauLike = Union[float, torch.Tensor]
_MAPPINGS = ("linear", "log")
_WEIGHT_NORMS = ("none", "mean")


def _check_views(z: torch.Tensor, name: str) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError(f"{name} must be a floating-point (N, d) tensor, got "
                         f"{getattr(z, 'shape', type(z))}")
    if z.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row")


def _per_sample(value: Optional[TauLike], n: int, ref: torch.Tensor, name: str,
                positive: bool, default: Optional[float] = None) -> torch.Tensor:
    """Broadcast a scalar or (n,) tensor to a (n,) tensor on ``ref``'s device/dtype; validate sign."""
    if value is None:
        if default is None:
            raise ValueError(f"{name} must be given")
        value = default
    t = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a scalar or a tensor of shape ({n},), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    if positive and not (t > 0).all():
        raise ValueError(f"{name} must be > 0 everywhere")
    if not positive and not (t >= 0).all():
        raise ValueError(f"{name} must be >= 0 everywhere")
    return t


def tase_loss(z1: torch.Tensor, z2: torch.Tensor, tau: TauLike,
              weight: Optional[TauLike] = None) -> torch.Tensor:
    """TASE loss (paper 000, Eq. 6).

    ``l_i = -log( S(v_i, v_i', tau_i) / (S(v_i, v_i', tau_i) + sum_{v_j in B_i^-} S(v_i, v_j, tau_i) / sqrt(|D_j|)) )``
    with ``S(a, b, tau) = exp(cos(a, b) / tau)`` (Eq. 2) and ``L = mean_i l_i``.

    Following Eq. 6 literally: the positive term *does* appear in the denominator and it is
    **not** weighted; only the negatives are multiplied by the weight of the sample they come
    from. The 2N views (z1 and z2 stacked) are the anchors; the positive of a view is the other
    view of the same sample; the negatives ``B_i^-`` are the 2N - 2 views of the other samples
    (both views of every other sample j, each multiplied by ``weight[j]``). Anchor i uses the
    temperature of its sample. With ``tau`` a constant and ``weight`` all ones this is exactly
    SimCLR's NT-Xent (the warm-up phase of Algorithm 1).

    Args:
        z1: (N, d) first view, L2-normalised inside.
        z2: (N, d) second view (row i is the same sample as row i of z1), normalised inside.
        tau: temperature per sample, shape (N,), or a scalar; > 0.
        weight: negative weight per sample, shape (N,), or a scalar, >= 0
            (see :func:`tase_negative_weights`); None means all ones.

    Returns:
        Scalar loss, the mean over the 2N anchors.
    """
    _check_views(z1, "z1")
    _check_views(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    tau_s = _per_sample(tau, n, z1, "tau", positive=True)
    w_s = _per_sample(weight, n, z1, "weight", positive=False, default=1.0)

    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    tau_v = torch.cat([tau_s, tau_s])
    logits = (z @ z.T) / tau_v[:, None]  # row a: anchor a with its own temperature
    idx = torch.arange(2 * n, device=z.device)
    partner = (idx + n) % (2 * n)
    pos = logits[idx, partner]

    # log(w_j) added to the negatives' logits == multiplying exp(.) by w_j (w = 0 -> -inf, dropped).
    neg = logits + torch.log(torch.cat([w_s, w_s]))[None, :]
    excluded = torch.zeros(2 * n, 2 * n, dtype=torch.bool, device=z.device)
    excluded[idx, idx] = True
    excluded[idx, partner] = True
    neg = neg.masked_fill(excluded, float("-inf"))
    denom = torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1)
    return (denom - pos).mean()


def tase_negative_weights(cluster_sizes_of_samples: torch.Tensor,
                          normalize: Literal["none", "mean"] = "none") -> torch.Tensor:
    """Negative weights ``w_j = 1 / sqrt(|D_j|)`` (paper 000, Sec. 3.4 and Eq. 6).

    ``|D_j|`` is the number of samples in sample j's pseudo-class. The paper uses the plain
    inverse square root, without any normalisation (``normalize="none"``, the default). Note
    that this shrinks every negative term (head-cluster negatives by ~1/sqrt(4500) on CIFAR-10-LT),
    i.e. it also changes the balance between the positive and the negatives.
    ``normalize="mean"`` is an option not in the paper: the weights are divided by their mean
    over the given tensor (so they average to 1 over, e.g., the batch or the dataset) and only
    the *relative* weighting between clusters remains.

    Args:
        cluster_sizes_of_samples: (N,) size of the pseudo-class of each sample, every entry >= 1.
        normalize: ``"none"`` (paper) or ``"mean"``.

    Returns:
        (N,) float tensor of weights (float32 unless the input is already floating point).
    """
    if normalize not in _WEIGHT_NORMS:
        raise ValueError(f"normalize must be one of {_WEIGHT_NORMS}, got {normalize!r}")
    sizes = _as_sizes(cluster_sizes_of_samples)
    w = sizes.rsqrt()
    if normalize == "mean":
        w = w / w.mean()
    return w


def _as_sizes(cluster_sizes_of_samples) -> torch.Tensor:
    sizes = torch.as_tensor(cluster_sizes_of_samples)
    if not sizes.is_floating_point():
        sizes = sizes.to(torch.get_default_dtype())
    if sizes.dim() != 1 or sizes.numel() == 0:
        raise ValueError(f"cluster_sizes_of_samples must be a non-empty 1-D tensor, got shape {tuple(sizes.shape)}")
    if not torch.isfinite(sizes).all() or not (sizes >= 1).all():
        raise ValueError("cluster_sizes_of_samples must hold cluster sizes >= 1")
    return sizes


def tase_progress(epoch: float, start_epoch: float, full_epoch: float) -> float:
    """Progressive factor of Algorithm 1 / Sec. 3.5 (paper 000): 0 before B, 1 from S on.

    ``lambda(e) = clip((e - B) / (S - B), 0, 1)`` with ``B = start_epoch`` (end of the SimCLR
    warm-up) and ``S = full_epoch``; a step at B when ``S == B``.
    """
    if full_epoch < start_epoch:
        raise ValueError(f"full_epoch (S={full_epoch}) must be >= start_epoch (B={start_epoch})")
    if epoch < start_epoch:
        return 0.0
    if epoch >= full_epoch:
        return 1.0
    return float((epoch - start_epoch) / (full_epoch - start_epoch))


def tase_temperatures(cluster_sizes_of_samples: torch.Tensor, tau_min: float, tau_max: float,
                      epoch: float, start_epoch: float, full_epoch: float,
                      mapping: Literal["linear", "log"], *,
                      base_tau: Optional[float] = None,
                      size_range: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Per-sample temperature from the size of the sample's pseudo-class (paper 000, Sec. 3.3, 3.5, Alg. 1).

    Target (full) mapping: large pseudo-class -> high tau, small -> low tau (Sec. 3.3),
    ``tau* = tau_min + (tau_max - tau_min) * u`` with

    * ``mapping="linear"``: ``u = (n - n_min) / (n_max - n_min)``,
    * ``mapping="log"``: ``u = (log n - log n_min) / (log n_max - log n_min)``.

    The paper gives neither the range nor the shape of this mapping; both are choices exposed
    here. ``n_min`` / ``n_max`` default to the min / max of ``cluster_sizes_of_samples``, so pass
    the sizes of *all* training samples once per epoch (Algorithm 1, lines 4 and 6) and index
    the result per batch, or pass ``size_range=(n_min, n_max)`` (e.g. the smallest / largest
    cluster; sizes outside the range are clamped into it). If all clusters have the same
    size, ``u = 1`` (every sample gets ``tau_max``).

    Progressive introduction (Sec. 3.5): before ``start_epoch`` (B, the SimCLR warm-up) every
    sample uses ``base_tau``; from B to ``full_epoch`` (S) the temperature moves linearly from
    ``base_tau`` to ``tau*`` (:func:`tase_progress`); from S on it is exactly ``tau*``.
    ``base_tau`` should be the SimCLR temperature of the warm-up (the paper's warm-up is
    "original SimCLR"); if None, ``tau_max`` is used.

    Returns:
        (N,) tensor of temperatures (dtype of the sizes if floating, else the default dtype).
    """
    if mapping not in _MAPPINGS:
        raise ValueError(f"mapping must be one of {_MAPPINGS}, got {mapping!r}")
    if not (0.0 < tau_min <= tau_max) or not math.isfinite(tau_max):
        raise ValueError(f"need 0 < tau_min <= tau_max < inf, got tau_min={tau_min}, tau_max={tau_max}")
    base = float(tau_max if base_tau is None else base_tau)
    if not (base > 0.0 and math.isfinite(base)):
        raise ValueError(f"base_tau must be a finite number > 0, got {base_tau}")
    sizes = _as_sizes(cluster_sizes_of_samples)
    lam = tase_progress(epoch, start_epoch, full_epoch)
    if lam == 0.0:
        return torch.full_like(sizes, base)

    if size_range is None:
        n_min, n_max = sizes.min(), sizes.max()
    else:
        if len(size_range) != 2 or not (1 <= size_range[0] <= size_range[1]):
            raise ValueError(f"size_range must be (n_min, n_max) with 1 <= n_min <= n_max, got {size_range}")
        n_min = torch.as_tensor(float(size_range[0]), dtype=sizes.dtype, device=sizes.device)
        n_max = torch.as_tensor(float(size_range[1]), dtype=sizes.dtype, device=sizes.device)
    s = sizes.clamp(n_min, n_max)
    if mapping == "log":
        s, n_min, n_max = s.log(), n_min.log(), n_max.log()
    if bool(n_max > n_min):
        u = (s - n_min) / (n_max - n_min)
    else:
        u = torch.ones_like(s)
    target = tau_min + (tau_max - tau_min) * u
    if lam == 1.0:
        return target
    return (1.0 - lam) * base + lam * target

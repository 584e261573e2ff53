"""Feature-space geometry metrics of paper 001 (GloCo/ProCo), Sec. 4 "Analysis".

For L2-normalised features ``v`` grouped by class (``F_i`` = features of class i, ``c_i`` = their
mean, the class center):

* class variance   ``variance_i = 1/|F_i| sum_{v in F_i} ||v - c_i||^2``, ``Variance = mean_i variance_i``
* Intra alignment  ``Intra = 1/C sum_i 1/|F_i|^2 sum_{v_j, v_k in F_i} ||v_j - v_k||^2``
* Inter uniformity ``Inter = 1/(C(C-1)) sum_i sum_{j != i} ||c_i - c_j||^2``
* improved Inter   ``Inter_improve = 2/(C(C-1)) sum_i sum_{j != i} ||c_i - c_j||^2 / |variance_i + variance_j|``

Notes on choices the paper leaves open:

* The double sum of Intra runs over all ordered pairs (j = k included, contributing 0), so
  algebraically ``Intra_i = 2 * variance_i``; it is computed in O(n) with the identity
  ``sum_{j,k} ||v_j - v_k||^2 = 2 n sum_j ||v_j||^2 - 2 ||sum_j v_j||^2``. (Table 1 of the paper
  does not show a factor 2 between its Intra and Variance rows; the definitions are followed here.)
* Centers are the plain means of the normalised features (not re-normalised).
* Per group G (many / medium / few): Variance and Intra average over the classes of G; Inter
  and improved Inter average over the ordered pairs (i in G, j any other class), i.e. how far
  the group's classes are from all other classes. For G = all classes this is exactly the
  paper's formula. Improved Inter is twice the mean of the ratio over those pairs; pairs with
  ``variance_i + variance_j = 0`` (two single-sample classes) are left out.
* Classes with no sample in ``features`` are left out; an empty group gives NaN.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["class_geometry", "GEOMETRY_METRICS"]

GEOMETRY_METRICS: tuple[str, ...] = ("variance", "intra_alignment", "inter_uniformity",
                                     "inter_uniformity_improved")
_GROUPS: tuple[str, ...] = ("many", "medium", "few")
ArrayLike = Union[np.ndarray, torch.Tensor]


def _per_class_stats(f: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Counts (C,), centers (C, d), variance (C,), intra (C,) - float64; absent classes count 0."""
    counts = torch.bincount(labels, minlength=num_classes).to(f.dtype)
    sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype).index_add_(0, labels, f)
    sq_norms = torch.zeros(num_classes, dtype=f.dtype).index_add_(0, labels, (f * f).sum(dim=1))
    safe = counts.clamp(min=1)
    centers = sums / safe[:, None]
    # variance_i = mean ||v||^2 - ||c_i||^2 (population variance around the mean).
    variance = (sq_norms / safe - (centers * centers).sum(dim=1)).clamp(min=0.0)
    # Intra_i = 1/n^2 * (2 n sum ||v||^2 - 2 ||sum v||^2)
    intra = (2.0 * safe * sq_norms - 2.0 * (sums * sums).sum(dim=1)) / (safe * safe)
    return counts, centers, variance, intra.clamp(min=0.0)


def class_geometry(features: ArrayLike, labels: ArrayLike, class_groups: ArrayLike,
                   normalize: bool = True) -> dict[str, float]:
    """Variance, Intra alignment, Inter uniformity and improved Inter uniformity (paper 001, Sec. 4).

    Args:
        features: (N, d) features (numpy or torch); L2-normalised here when ``normalize``
            (the paper measures the normalised contrastive feature space).
        labels: (N,) class index in [0, C) of each feature.
        class_groups: (C,) group name of every class, "many" / "medium" / "few" (case-insensitive).
        normalize: L2-normalise the features first (default True).

    Returns:
        Flat dict ``{"<metric>.<group>": float}`` for metric in :data:`GEOMETRY_METRICS` and group
        in many / medium / few / all, e.g. ``{"intra_alignment.many": ..., "inter_uniformity.all": ...}``.
    """
    f = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    f = f.detach().to("cpu", torch.float64)
    if f.dim() != 2 or f.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, d) array, got shape {tuple(f.shape)}")
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach().cpu()
    if y.shape != (f.shape[0],) or y.is_floating_point():
        raise ValueError(f"labels must be an integer array of shape ({f.shape[0]},)")
    groups = np.array([str(g).lower() for g in np.asarray(class_groups).ravel()])
    num_classes = groups.size
    if num_classes == 0 or not set(groups.tolist()) <= set(_GROUPS):
        raise ValueError(f"class_groups must be a non-empty (C,) array of {_GROUPS}, got {sorted(set(groups.tolist()))}")
    y = y.long()
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) (C = len(class_groups))")
    if normalize:
        f = F.normalize(f, dim=1)

    counts, centers, variance, intra = _per_class_stats(f, y, num_classes)
    present = counts > 0
    dist2 = torch.cdist(centers, centers).pow(2)
    var_sum = variance[:, None] + variance[None, :]
    pair = present[:, None] & present[None, :] & ~torch.eye(num_classes, dtype=torch.bool)
    pair_improved = pair & (var_sum.abs() > 0)
    ratio = torch.where(pair_improved, dist2 / torch.where(pair_improved, var_sum.abs(), torch.ones_like(var_sum)),
                        torch.zeros_like(dist2))

    out: dict[str, float] = {}
    group_masks = {g: torch.as_tensor(groups == g) for g in _GROUPS}
    group_masks["all"] = torch.ones(num_classes, dtype=torch.bool)
    nan = float("nan")
    for name, gmask in group_masks.items():
        cls = gmask & present
        rows = cls[:, None]
        n_pairs = (pair & rows).sum()
        n_pairs_imp = (pair_improved & rows).sum()
        out[f"variance.{name}"] = float(variance[cls].mean()) if cls.any() else nan
        out[f"intra_alignment.{name}"] = float(intra[cls].mean()) if cls.any() else nan
        out[f"inter_uniformity.{name}"] = float(dist2[pair & rows].sum() / n_pairs) if n_pairs > 0 else nan
        out[f"inter_uniformity_improved.{name}"] = (float(2.0 * ratio[pair_improved & rows].sum() / n_pairs_imp)
                                                    if n_pairs_imp > 0 else nan)
    return out

"""GloCo: global (k-global positive) contrastive learning with adaptive temperature (paper 001).

* :func:`gloco_loss` - the unsupervised contrastive loss of Eq. 1 for a set of queries, each with
  its own positives (augmented view + k global positives) and a shared negative set.
* :func:`gloco_simclr_loss` - Eq. 1 wired for a SimCLR two-view batch (in-batch negatives).
* :func:`adaptive_temperature` - per-class temperature of Eq. 13.
* :func:`sample_global_positive_indices` - k-global positive selection (Sec. 3.1): for each
  anchor, k random training samples of its class drawn from the whole training set.

Pure torch: no parameters, no state.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

__all__ = ["adaptive_temperature", "gloco_loss", "gloco_simclr_loss", "sample_global_positive_indices"]

TauLike = Union[float, torch.Tensor]


def _check_matrix(x: torch.Tensor, name: str, ndim: int = 2) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != ndim or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point {ndim}-D tensor, got {getattr(x, 'shape', type(x))}")


def _per_anchor_tau(tau: TauLike, n: int, ref: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(tau, dtype=ref.dtype, device=ref.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"tau must be a scalar or a tensor of shape ({n},), got {tuple(t.shape)}")
    if not (torch.isfinite(t).all() and (t > 0).all()):
        raise ValueError("tau must be finite and > 0")
    return t


def adaptive_temperature(class_counts: torch.Tensor, gamma: float, tau_max: float) -> torch.Tensor:
    """Adaptive temperature (paper 001, Eq. 13): ``tau_c = gamma + (1 - gamma) * n_c / n_max``.

    Head classes get a high temperature (up to 1 for the largest class), tail classes a low one
    (down to ``gamma``). ``tau_max`` generalises the upper end,
    ``tau_c = gamma + (tau_max - gamma) * n_c / n_max``; the default 1.0 is the paper's formula.
    A class with count 0 gets ``gamma``.

    Args:
        class_counts: (C,) number of training samples per class, >= 0, at least one > 0.
        gamma: minimum temperature, 0 < gamma <= tau_max.
        tau_max: temperature of the largest class (1.0 in the paper).

    Returns:
        (C,) tensor of temperatures (float dtype of the counts, else the default dtype).
    """
    counts = torch.as_tensor(class_counts)
    if not counts.is_floating_point():
        counts = counts.to(torch.get_default_dtype())
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D tensor, got shape {tuple(counts.shape)}")
    if not torch.isfinite(counts).all() or (counts < 0).any() or counts.max() <= 0:
        raise ValueError("class_counts must be finite, >= 0, with at least one positive count")
    if not (0.0 < gamma <= tau_max) or not math.isfinite(tau_max):
        raise ValueError(f"need 0 < gamma <= tau_max < inf, got gamma={gamma}, tau_max={tau_max}")
    return gamma + (tau_max - gamma) * counts / counts.max()


def gloco_loss(query: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, tau: TauLike,
               negative_mask: Optional[torch.Tensor] = None,
               positive_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """GloCo contrastive loss with k-global positives (paper 001, Eq. 1).

    ``L = -1 / (N (k+1)) sum_i sum_{v_j^+ in {v_i^+} U P_{i,k}^+} l(i, j)``,
    ``l(i, j) = log( exp(v_i . v_j^+ / tau) / (exp(v_i . v_j^+ / tau) + sum_{v in V_i} exp(v_i . v / tau)) )``.

    Every positive gets its own term, with only itself and the negatives ``V_i`` in the
    denominator (the other positives are *not* in it) - the "unsupervised" form the paper uses
    by default (Table 5), not SupCon's. With adaptive temperature (Eq. 13), ``tau`` is the
    per-anchor temperature of the anchor's class.

    Shapes (features are L2-normalised inside):
        query: (N, d) anchors v_i.
        positives: (N, P, d) positives of each anchor, P = k + 1 (by convention the augmented
            view v_i^+ first, then the k global positives; the loss treats them alike).
        negatives: (M, d) candidate negatives, shared by all anchors.
        tau: scalar or (N,) per-anchor temperature, > 0.
        negative_mask: optional (N, M) bool, True where negatives[m] is in V_i (default: all).
        positive_mask: optional (N, P) bool, True for the positives that exist (default: all);
            the mean then runs over the valid (i, j) pairs, which is 1 / (N (k+1)) when all are.

    Returns:
        Scalar loss.
    """
    _check_matrix(query, "query")
    _check_matrix(positives, "positives", ndim=3)
    _check_matrix(negatives, "negatives")
    n, d = query.shape
    if positives.shape[0] != n or positives.shape[2] != d or positives.shape[1] < 1:
        raise ValueError(f"positives must have shape ({n}, P>=1, {d}), got {tuple(positives.shape)}")
    if negatives.shape[1] != d:
        raise ValueError(f"negatives must have feature dimension {d}, got {negatives.shape[1]}")
    t = _per_anchor_tau(tau, n, query)

    q = F.normalize(query, dim=1)
    p = F.normalize(positives, dim=2)
    neg = F.normalize(negatives, dim=1)
    pos_logits = torch.einsum("nd,npd->np", q, p) / t[:, None]
    neg_logits = (q @ neg.T) / t[:, None]
    if negative_mask is not None:
        if negative_mask.shape != neg_logits.shape or negative_mask.dtype != torch.bool:
            raise ValueError(f"negative_mask must be a bool tensor of shape {tuple(neg_logits.shape)}")
        neg_logits = neg_logits.masked_fill(~negative_mask, float("-inf"))
    neg_lse = torch.logsumexp(neg_logits, dim=1, keepdim=True)  # -inf if an anchor has no negatives
    log_prob = pos_logits - torch.logaddexp(pos_logits, neg_lse)
    if positive_mask is None:
        return -log_prob.mean()
    if positive_mask.shape != pos_logits.shape or positive_mask.dtype != torch.bool:
        raise ValueError(f"positive_mask must be a bool tensor of shape {tuple(pos_logits.shape)}")
    if not positive_mask.any():
        raise ValueError("positive_mask must keep at least one positive")
    return -(log_prob * positive_mask).sum() / positive_mask.sum()


def gloco_simclr_loss(z1: torch.Tensor, z2: torch.Tensor, global_positives: Optional[torch.Tensor],
                      tau: TauLike) -> torch.Tensor:
    """Eq. 1 of paper 001 on a SimCLR two-view batch (the framework is "adaptable to SimCLR", Sec. 3).

    The 2N views are the queries. For the view-1 query of sample i the positives are
    ``[z2_i, g_i1, ..., g_ik]`` and for the view-2 query ``[z1_i, g_i1, ..., g_ik]`` (the k global
    positives of sample i are shared by its two views). ``V_i`` = the 2N - 2 in-batch views of
    the other samples: the paper's "examples in the current batch excluding v_i", minus the
    query's own augmented view, which is already the first positive (so the j = v_i^+ term
    is exactly SimCLR's NT-Xent). Global positives are not used as negatives of other queries.

    Args:
        z1, z2: (N, d) two views of the batch (normalised inside).
        global_positives: (N, k, d) features of the k global positives of each sample, or None
            (k = 0: plain NT-Xent).
        tau: scalar or (N,) per-sample temperature (e.g. ``adaptive_temperature(...)[labels]``).

    Returns:
        Scalar loss, mean over the 2N queries and their k + 1 positives.
    """
    _check_matrix(z1, "z1")
    _check_matrix(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n, d = z1.shape
    t = _per_anchor_tau(tau, n, z1)
    own_view = torch.cat([z2, z1]).unsqueeze(1)  # (2N, 1, d): the other view of each query
    if global_positives is None:
        pos = own_view
    else:
        _check_matrix(global_positives, "global_positives", ndim=3)
        if global_positives.shape[0] != n or global_positives.shape[2] != d:
            raise ValueError(f"global_positives must have shape ({n}, k, {d}), got {tuple(global_positives.shape)}")
        pos = torch.cat([own_view, torch.cat([global_positives, global_positives])], dim=1)
    queries = torch.cat([z1, z2])
    idx = torch.arange(2 * n, device=z1.device)
    mask = torch.ones(2 * n, 2 * n, dtype=torch.bool, device=z1.device)
    mask[idx, idx] = False
    mask[idx, (idx + n) % (2 * n)] = False
    return gloco_loss(queries, pos, queries, torch.cat([t, t]), negative_mask=mask)


def sample_global_positive_indices(anchor_indices: torch.Tensor, dataset_labels: torch.Tensor, k: int,
                                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """k-global positive selection (paper 001, Sec. 3.1).

    For each anchor, draw k training samples of the anchor's class uniformly from the *whole*
    training set (not only the batch), excluding the anchor itself, independently with
    replacement (so a class with fewer than k other samples still yields k positives). An anchor
    that is the only sample of its class gets itself (its positives are then further
    augmentations of the same image).

    Args:
        anchor_indices: (B,) dataset indices of the anchors.
        dataset_labels: (N,) label of every training sample (entries < 0, e.g. OOD images, are
            never drawn).
        k: number of global positives per anchor, >= 1.
        generator: optional torch.Generator (on ``dataset_labels``' device) for reproducibility.

    Returns:
        (B, k) long tensor of dataset indices.
    """
    labels = torch.as_tensor(dataset_labels)
    anchors = torch.as_tensor(anchor_indices, device=labels.device).long()
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("dataset_labels must be a 1-D integer tensor")
    if anchors.dim() != 1:
        raise ValueError("anchor_indices must be a 1-D tensor")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if anchors.numel() and (anchors.min() < 0 or anchors.max() >= labels.numel()):
        raise ValueError("anchor_indices must index dataset_labels")
    y = labels[anchors]
    if (y < 0).any():
        raise ValueError("every anchor must have a class label >= 0 to draw global positives")
    labels = labels.long()
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    start = torch.searchsorted(sorted_labels, y, right=False)
    count = torch.searchsorted(sorted_labels, y, right=True) - start
    own = (rank[anchors] - start)[:, None]  # anchor's position inside its class block
    u = torch.rand(anchors.numel(), k, generator=generator, device=labels.device)
    others = (count - 1).clamp(min=1)[:, None]
    r = torch.minimum((u * others).long(), others - 1)
    r = r + (r >= own).long()  # skip the anchor itself
    r = torch.where((count == 1)[:, None], own.expand_as(r), r)
    return order[start[:, None] + r]

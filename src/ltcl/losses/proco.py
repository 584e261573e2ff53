"""ProCo: prototype learning via coreset selection (paper 001, Sec. 3.3).

* :func:`kcenter_greedy` - k-center greedy coreset selection (Sener & Savarese 2018).
* :func:`kcenter_greedy_per_class` - the same inside every class (so every class keeps a prototype).
* :func:`class_prototypes` - per-class mean of the L2-normalised coreset features.
* :func:`proco_loss` - the symmetric prototype loss of Sec. 3.3 (views x coreset prototype sets).

Pure torch: no parameters, no state. The coreset indices and the two prototype sets (one per
augmented view of the coreset, refreshed at the start of every epoch) are the method's state.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

__all__ = ["kcenter_greedy", "kcenter_greedy_per_class", "class_prototypes", "proco_loss"]

TauLike = Union[float, torch.Tensor]


def _check_2d(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point (N, d) tensor, got {getattr(x, 'shape', type(x))}")


def kcenter_greedy(features: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """k-center greedy coreset (Sener & Savarese 2018, Algorithm 1; paper 001 Sec. 3.3).

    Starts from one point drawn uniformly at random (``seed``), then repeatedly adds the point
    whose Euclidean distance to its nearest already-selected point is largest. Hand-written
    because none of the available libraries (faiss, scikit-learn, kornia) provides it; each
    step is one vectorised distance update (a mat-vec), O(N d), so the selection is O(n N d).
    Ties are broken by the lowest index. Features are used as given (normalise them first if
    the selection should happen on the hypersphere).

    Args:
        features: (N, d) features.
        n: number of points to select, 1 <= n <= N.
        seed: seed of the random first point.

    Returns:
        (n,) long tensor of distinct indices, in selection order.
    """
    _check_2d(features, "features")
    num = features.shape[0]
    if not isinstance(n, int) or not (1 <= n <= num):
        raise ValueError(f"n must be an int in [1, {num}] (number of features), got {n!r}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    first = int(torch.randint(num, (1,), generator=gen))
    x = features.detach()
    sq_norms = (x * x).sum(dim=1)
    selected = torch.empty(n, dtype=torch.long, device=x.device)
    selected[0] = first
    min_dist = torch.full((num,), float("inf"), dtype=x.dtype, device=x.device)
    last = first
    for step in range(1, n):
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: one mat-vec per step (much faster than x - c).
        dist = (sq_norms - 2.0 * (x @ x[last]) + sq_norms[last]).clamp(min=0.0)
        min_dist = torch.minimum(min_dist, dist)
        min_dist[last] = -1.0  # selected points stay at -1 (minimum keeps it): never re-picked
        last = int(torch.argmax(min_dist))
        selected[step] = last
    return selected


def kcenter_greedy_per_class(features: torch.Tensor, labels: torch.Tensor, fraction: float,
                             seed: int, min_per_class: int = 1) -> torch.Tensor:
    """k-center greedy run separately inside each class (labels < 0 are ignored).

    Class c keeps ``min(n_c, max(min_per_class, round(fraction * n_c)))`` samples, so every
    class present in ``labels`` has at least one coreset sample and hence a prototype.

    Returns:
        Sorted (n_coreset,) long tensor of indices into ``features``.
    """
    _check_2d(features, "features")
    labels = torch.as_tensor(labels, device=features.device)
    if labels.shape != (features.shape[0],) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({features.shape[0]},)")
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not isinstance(min_per_class, int) or min_per_class < 1:
        raise ValueError(f"min_per_class must be an int >= 1, got {min_per_class!r}")
    chosen = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        members = torch.nonzero(labels == c).flatten()
        budget = min(members.numel(), max(min_per_class, int(round(fraction * members.numel()))))
        chosen.append(members[kcenter_greedy(features[members], budget, seed=seed + int(c))])
    if not chosen:
        raise ValueError("labels must contain at least one class label >= 0")
    return torch.sort(torch.cat(chosen)).values


def class_prototypes(features: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class prototypes: the mean of the L2-normalised features of each class (paper 001, Sec. 3.3).

    Args:
        features: (N, d) coreset features of one augmented view (normalised inside).
        labels: (N,) class labels in [0, num_classes).
        num_classes: C.

    Returns:
        (prototypes (C, d), present (C,) bool). A class without samples has a zero prototype and
        ``present = False``; pass ``present`` as ``prototype_mask`` to :func:`proco_loss`.
    """
    _check_2d(features, "features")
    labels = torch.as_tensor(labels, device=features.device).long()
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},)")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    f = F.normalize(features, dim=1)
    sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, labels, f)
    counts = torch.bincount(labels, minlength=num_classes)
    protos = sums / counts.clamp(min=1)[:, None].to(f.dtype)
    return protos, counts > 0


def proco_loss(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, tau: TauLike,
               prototype_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Symmetric prototype loss of ProCo (paper 001, Sec. 3.3, "Prototype loss function").

    ``L = -1/(4N) sum_i sum_{v+ in {v_i1, v_i2}} sum_{q in {1,2}}
    log( exp(v+ . c_{i,q} / tau) / (exp(v+ . c_{i,q} / tau) + sum_{c in C_q^-} exp(v+ . c / tau)) )``

    where ``c_{i,q}`` is the prototype of sample i's class computed from augmented coreset view q
    and ``C_q^-`` are the other prototypes of set q. For each (view, prototype set) pair this is
    the cross-entropy of the logits ``v . c / tau`` over the classes. "Symmetric" in the paper
    means every query view against every coreset-view prototype set (2 x 2 terms); there is no
    separate prototype-to-sample term in the paper's formula. Features and prototypes are
    L2-normalised inside (``v . c`` is a cosine, as in the paper's contrastive losses).

    Args:
        features: (N, d) one view, or (V, N, d) V views (V = 2 in the paper).
        labels: (N,) class labels in [0, C).
        prototypes: (C, d) one prototype set, or (Q, C, d) Q sets (Q = 2 in the paper).
        tau: scalar or (N,) per-sample temperature, > 0.
        prototype_mask: optional (C,) or (Q, C) bool, True for classes that have a prototype;
            the others are left out of the denominators. Every sample's own class must have one.

    Returns:
        Scalar loss, the mean over views, prototype sets and samples (1 / (V Q N)).
    """
    feats = features.unsqueeze(0) if isinstance(features, torch.Tensor) and features.dim() == 2 else features
    protos = prototypes.unsqueeze(0) if isinstance(prototypes, torch.Tensor) and prototypes.dim() == 2 else prototypes
    if not isinstance(feats, torch.Tensor) or feats.dim() != 3 or not feats.is_floating_point():
        raise ValueError("features must be a floating-point (N, d) or (V, N, d) tensor")
    if not isinstance(protos, torch.Tensor) or protos.dim() != 3 or not protos.is_floating_point():
        raise ValueError("prototypes must be a floating-point (C, d) or (Q, C, d) tensor")
    _, n, d = feats.shape
    q_sets, num_classes, d_p = protos.shape
    if d_p != d:
        raise ValueError(f"prototypes must have feature dimension {d}, got {d_p}")
    labels = torch.as_tensor(labels, device=feats.device).long()
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    t = torch.as_tensor(tau, dtype=feats.dtype, device=feats.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,) or not (torch.isfinite(t).all() and (t > 0).all()):
        raise ValueError(f"tau must be a finite scalar or ({n},) tensor > 0")

    f = F.normalize(feats, dim=-1)
    p = F.normalize(protos, dim=-1)
    logits = torch.einsum("vnd,qcd->vqnc", f, p) / t[None, None, :, None]
    if prototype_mask is not None:
        mask = torch.as_tensor(prototype_mask, device=feats.device)
        if mask.dim() == 1:
            mask = mask.unsqueeze(0).expand(q_sets, -1)
        if mask.shape != (q_sets, num_classes) or mask.dtype != torch.bool:
            raise ValueError(f"prototype_mask must be a bool tensor of shape ({num_classes},) or ({q_sets}, {num_classes})")
        if not mask[:, labels].all():
            raise ValueError("every sample's class must have a prototype in every prototype set")
        logits = logits.masked_fill(~mask[None, :, None, :], float("-inf"))
    target = labels.expand(logits.shape[0], q_sets, n)
    return F.cross_entropy(logits.reshape(-1, num_classes), target.reshape(-1))

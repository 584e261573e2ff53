"""GML: Gaussian-mixture-likelihood loss with logit adjustment (paper 002).

* :func:`gml_loss` - L_GML of Eq. 5, with the alpha-scaled logit adjustment of Eq. 11.
* :func:`gml_logits` - the per-class logits inside Eq. 5 / 11.
* :func:`gml_queue_lengths` - class-wise queue lengths of Eq. 6.
* :func:`ClassQueues` - fixed-length class-wise FIFO queues of contrast (teacher) features (Sec. 3.3).
* :func:`logit_adjusted_cosine_logits` - cosine classifier logits of Eq. 7 (+ alpha of Eq. 11).
* :func:`log_prior_from_counts` - ``eta_c = log p(c)`` from class counts (Sec. 3.2).

Only torch. :class:`ClassQueues` is the one stateful helper (a ring buffer per class).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["gml_loss", "gml_logits", "gml_queue_lengths", "ClassQueues",
           "logit_adjusted_cosine_logits", "log_prior_from_counts"]


def _check_2d(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point (N, d) tensor, got {getattr(x, 'shape', type(x))}")


def _check_positive(value: float, name: str) -> float:
    v = float(value)
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_log_prior(log_prior: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    lp = torch.as_tensor(log_prior, dtype=ref.dtype, device=ref.device)
    if lp.dim() != 1 or lp.numel() == 0:
        raise ValueError(f"log_prior must be a non-empty 1-D tensor (C,), got shape {tuple(lp.shape)}")
    if torch.isnan(lp).any() or (lp == float("inf")).any():
        raise ValueError("log_prior must not contain NaN or +inf")
    return lp


def log_prior_from_counts(class_counts: torch.Tensor) -> torch.Tensor:
    """``eta_c = log p(c)`` with ``p(c) = n_c / sum n`` (paper 002, Sec. 3.2). A zero count gives -inf."""
    counts = torch.as_tensor(class_counts)
    if not counts.is_floating_point():
        counts = counts.to(torch.get_default_dtype())
    if counts.dim() != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("class_counts must be a 1-D tensor of counts >= 0 with a positive sum")
    return torch.log(counts / counts.sum())


def gml_logits(q: torch.Tensor, contrast: torch.Tensor, contrast_labels: torch.Tensor,
               log_prior: torch.Tensor, temperature: float, alpha: float,
               contrast_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-class logits of Eq. 5 / Eq. 11 (paper 002).

    ``logit_c(x) = log( 1/|Z_c| sum_{z in Z_c} exp(z_x . z / tau_g) ) + alpha * eta_c``, computed as
    ``logsumexp_{z in Z_c}(z_x . z / tau_g) - log |Z_c| + alpha * log_prior[c]`` with a per-class
    max shift (exact and stable for any temperature). A class with no contrast feature gets
    logit -inf (it drops out of the softmax). ``q`` and ``contrast`` are L2-normalised inside.

    Args:
        q: (B, d) query (student) features.
        contrast: (K, d) contrast (teacher / queue) features.
        contrast_labels: (K,) class of each contrast feature, in [0, C).
        log_prior: (C,) ``eta_c = log p(c)``; C is taken from its length.
        temperature: tau_g > 0 (float, or a one-element tensor that may require grad).
        alpha: scale of the logit adjustment (Eq. 11); 1 is Eq. 5.
        contrast_mask: optional (B, K) bool, False to leave contrast k out for query b (e.g. the
            query's own teacher feature, as the paper does when training tau_g, Sec. 3.3).

    Returns:
        (B, C) logits.
    """
    _check_2d(q, "q")
    _check_2d(contrast, "contrast")
    if contrast.shape[1] != q.shape[1]:
        raise ValueError(f"contrast must have feature dimension {q.shape[1]}, got {contrast.shape[1]}")
    if isinstance(temperature, torch.Tensor):  # a trainable tau_g (Sec. 4.9): keep its graph
        if temperature.numel() != 1 or not (temperature.detach() > 0).all():
            raise ValueError("a tensor temperature must hold one value > 0")
        t = temperature.reshape(())
    else:
        t = _check_positive(temperature, "temperature")
    lp = _check_log_prior(log_prior, q)
    num_classes = lp.numel()
    cl = torch.as_tensor(contrast_labels, device=q.device).long()
    if cl.shape != (contrast.shape[0],):
        raise ValueError(f"contrast_labels must have shape ({contrast.shape[0]},), got {tuple(cl.shape)}")
    if cl.numel() and (cl.min() < 0 or cl.max() >= num_classes):
        raise ValueError(f"contrast_labels must lie in [0, {num_classes}) (C = len(log_prior))")

    b = q.shape[0]
    sim = (F.normalize(q, dim=1) @ F.normalize(contrast, dim=1).T) / t  # (B, K)
    onehot = F.one_hot(cl, num_classes).to(sim.dtype)  # (K, C)
    if contrast_mask is not None:
        if contrast_mask.shape != sim.shape or contrast_mask.dtype != torch.bool:
            raise ValueError(f"contrast_mask must be a bool tensor of shape {tuple(sim.shape)}")
        sim = sim.masked_fill(~contrast_mask, float("-inf"))
        counts = contrast_mask.to(sim.dtype) @ onehot  # (B, C)
    else:
        counts = onehot.sum(dim=0).expand(b, num_classes)
    index = cl.expand(b, -1)
    class_max = torch.full((b, num_classes), float("-inf"), dtype=sim.dtype, device=sim.device)
    class_max = class_max.scatter_reduce(1, index, sim, reduce="amax", include_self=True)
    shift = torch.where(torch.isfinite(class_max), class_max, torch.zeros_like(class_max)).detach()
    sums = torch.exp(sim - shift.gather(1, index)) @ onehot  # (B, C); masked entries contribute 0
    present = counts > 0
    # Empty classes: compute on 1s (no NaN in the backward pass), then set the logit to -inf.
    ones = torch.ones_like(sums)
    log_mean = torch.log(torch.where(present, sums, ones)) + shift - torch.log(torch.where(present, counts, ones))
    log_mean = log_mean.masked_fill(~present, float("-inf"))
    if alpha == 0:
        return log_mean
    return log_mean + alpha * lp


def gml_loss(q: torch.Tensor, contrast: torch.Tensor, contrast_labels: torch.Tensor, labels: torch.Tensor,
             log_prior: torch.Tensor, temperature: float, alpha: float,
             contrast_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gaussian Mixture Likelihood loss L_GML (paper 002, Eq. 5; Eq. 11 with ``alpha``).

    ``-L_GML = log( exp(l_y) / sum_c exp(l_c) )`` with ``l_c`` from :func:`gml_logits`: the log
    of the mean of ``exp(z_x . z / tau_g)`` over the contrast features of class c, plus
    ``alpha * eta_c``. Cross-entropy with the true label, mean over the queries. Classes with no
    contrast features get logit -inf; a query whose own class has none raises ValueError
    (include the teacher features of the current batch in ``contrast`` to guarantee one).

    Args: as :func:`gml_logits`, plus ``labels`` (B,) the true class of each query.

    Returns:
        Scalar loss.
    """
    logits = gml_logits(q, contrast, contrast_labels, log_prior, temperature, alpha, contrast_mask)
    y = torch.as_tensor(labels, device=q.device).long()
    if y.shape != (q.shape[0],):
        raise ValueError(f"labels must have shape ({q.shape[0]},), got {tuple(y.shape)}")
    if y.numel() and (y.min() < 0 or y.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    own = logits.gather(1, y[:, None]).squeeze(1)
    if torch.isneginf(own).any():
        raise ValueError("every query's class must have at least one contrast feature "
                         "(and a finite log_prior entry)")
    return F.cross_entropy(logits, y)


def gml_queue_lengths(class_prior: torch.Tensor, k: int, k_m: int) -> torch.Tensor:
    """Class-wise queue lengths (paper 002, Eq. 6): ``|Z_c| = k_m + (k - k_m |C|) p(c)``.

    ``class_prior`` may be probabilities or counts; it is normalised to sum to 1. The real-valued
    lengths are rounded with the largest-remainder method: floor every length, then give one
    extra slot to the classes with the largest fractional parts (ties: lower class index) until
    the lengths sum to exactly ``k``. Every class gets at least ``k_m``.

    Returns:
        (C,) long tensor of lengths, summing to k.
    """
    prior = torch.as_tensor(class_prior, dtype=torch.float64)
    if prior.dim() != 1 or prior.numel() == 0 or (prior < 0).any() or not prior.sum() > 0:
        raise ValueError("class_prior must be a non-empty 1-D tensor of non-negative values with a positive sum")
    if not isinstance(k_m, int) or k_m < 0:
        raise ValueError(f"k_m must be an int >= 0, got {k_m!r}")
    num_classes = prior.numel()
    if not isinstance(k, int) or k < k_m * num_classes:
        raise ValueError(f"k must be an int >= k_m * |C| = {k_m * num_classes}, got {k!r}")
    p = prior / prior.sum()
    raw = k_m + (k - k_m * num_classes) * p
    lengths = torch.floor(raw).long()
    remainder = k - int(lengths.sum())
    if remainder > 0:
        frac = raw - lengths.to(torch.float64)
        order = sorted(range(num_classes), key=lambda c: (-float(frac[c]), c))
        lengths[order[:remainder]] += 1
    return lengths.to(prior.device)


class ClassQueues:
    """Class-wise FIFO queues of contrast features (paper 002, Sec. 3.3, lengths from Eq. 6).

    One ring buffer per class inside a single (sum of lengths, d) tensor. ``push`` adds features
    (the oldest of a class are overwritten once its queue is full); ``contents`` returns the
    filled slots and their labels, ready for :func:`gml_loss`. Features are stored detached.
    """

    def __init__(self, lengths: torch.Tensor, dim: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        lengths = torch.as_tensor(lengths).long().cpu()
        if lengths.dim() != 1 or (lengths < 1).any():
            raise ValueError("lengths must be a 1-D tensor of queue lengths >= 1")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self.lengths = lengths
        self.offsets = torch.cumsum(lengths, 0) - lengths
        self.num_classes = int(lengths.numel())
        self.features = torch.zeros(int(lengths.sum()), dim, device=device, dtype=dtype)
        self.labels = torch.repeat_interleave(torch.arange(self.num_classes), lengths).to(device)
        self.filled = torch.zeros(int(lengths.sum()), dtype=torch.bool, device=device)
        self.pointer = [0] * self.num_classes

    @torch.no_grad()
    def push(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Enqueue ``features`` (n, d) of classes ``labels`` (n,); only the newest fit per class."""
        _check_2d(features, "features")
        labels = torch.as_tensor(labels).long()
        if labels.shape != (features.shape[0],):
            raise ValueError(f"labels must have shape ({features.shape[0]},)")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        feats = features.detach().to(self.features.device, self.features.dtype)
        labels_dev = labels.to(self.features.device)
        for c in torch.unique(labels).tolist():
            new = feats[labels_dev == c]
            length, start = int(self.lengths[c]), int(self.offsets[c])
            new = new[-length:]
            slots = (self.pointer[c] + torch.arange(new.shape[0])) % length + start
            slots = slots.to(self.features.device)
            self.features[slots] = new
            self.filled[slots] = True
            self.pointer[c] = (self.pointer[c] + new.shape[0]) % length

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (K', d), labels (K',)) of the filled slots."""
        return self.features[self.filled], self.labels[self.filled]


def logit_adjusted_cosine_logits(features: torch.Tensor, weight: torch.Tensor, log_prior: torch.Tensor,
                                 alpha: float, scale: float) -> torch.Tensor:
    """Cosine-classifier logits with logit adjustment (paper 002, Eq. 7; alpha as in Eq. 11).

    ``logit_c = scale * (m_x . m_c) + alpha * eta_c`` with ``m_x = x / |x|``, ``m_c = w_c / |w_c|``,
    ``scale = 1 / tau_s`` (30 in the paper) and ``eta_c = log p(c)``. The adjustment is *added*
    (Eq. 7, Balanced-Softmax / logit-adjusted loss): use these logits with
    ``F.cross_entropy`` for training (L_cls, alpha = 1 in Eq. 7) and predict with ``alpha = 0``
    (the plain cosine logits, i.e. the balanced posterior).

    Args:
        features: (B, d) backbone features x (normalised inside).
        weight: (C, d) classifier weights w_c (normalised inside; trainable parameter).
        log_prior: (C,) eta_c.
        alpha: scale of the adjustment (1 = Eq. 7, 0 = no adjustment).
        scale: 1 / tau_s > 0.

    Returns:
        (B, C) logits.
    """
    _check_2d(features, "features")
    _check_2d(weight, "weight")
    if weight.shape[1] != features.shape[1]:
        raise ValueError(f"weight must have feature dimension {features.shape[1]}, got {weight.shape[1]}")
    s = _check_positive(scale, "scale")
    lp = _check_log_prior(log_prior, features)
    if lp.numel() != weight.shape[0]:
        raise ValueError(f"log_prior must have length C = {weight.shape[0]}, got {lp.numel()}")
    cos = F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T
    if alpha == 0:
        return s * cos
    return s * cos + alpha * lp

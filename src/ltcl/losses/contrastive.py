"""Generic contrastive building blocks shared by the method losses.

* :func:`cosine_matrix` - pairwise cosine similarities.
* :func:`nt_xent` - SimCLR NT-Xent loss (Chen et al. 2020), the baseline objective.
* :func:`nt_xent_per_sample` - its loss per sample (BCL's memory, MAK's ECLE).

Pure torch: no parameters, no state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_matrix", "nt_xent", "nt_xent_logits", "nt_xent_per_sample"]


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """Return ``temperature`` as a float, raising ValueError unless it is a finite number > 0."""
    try:
        value = float(temperature)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a positive number, got {temperature!r}") from exc
    if not value > 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return value


def check_embeddings(x: torch.Tensor, name: str, min_rows: int = 1) -> None:
    """Raise ValueError unless ``x`` is a floating 2-D tensor (rows = samples) with >= ``min_rows`` rows."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows, got {x.shape[0]}")


def cosine_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise cosine similarities ``S[i, j] = cos(a_i, b_j)``.

    Args:
        a: (N, d) tensor.
        b: (M, d) tensor; defaults to ``a`` (then S is the (N, N) self-similarity matrix).

    Returns:
        (N, M) tensor of cosine similarities in [-1, 1]. Rows are L2-normalised with
        ``F.normalize`` (eps 1e-12), so a zero row gives similarity 0 rather than NaN.
    """
    check_embeddings(a, "a")
    a_n = F.normalize(a, dim=1)
    if b is None:
        return a_n @ a_n.T
    check_embeddings(b, "b")
    if b.shape[1] != a.shape[1]:
        raise ValueError(f"a and b must have the same feature dimension, got {a.shape[1]} and {b.shape[1]}")
    return a_n @ F.normalize(b, dim=1).T


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR NT-Xent loss (Chen et al. 2020, Eq. 1 of that paper).

    The two views are L2-normalised inside. Each of the 2N views is an anchor; its positive is
    the other view of the same sample and its denominator holds all 2N-1 other views
    (positive included). The loss is the mean over all 2N anchors of
    ``-log( exp(s_ip / t) / sum_{k != i} exp(s_ik / t) )`` with ``s`` the cosine similarity.

    Implemented as ``F.cross_entropy`` over the similarity matrix with the self-similarity
    masked out, which is numerically stable (log-sum-exp inside).

    Args:
        z1: (N, d) embeddings of the first view.
        z2: (N, d) embeddings of the second view (row i is the same sample as row i of z1).
        temperature: softmax temperature t > 0.

    Returns:
        Scalar loss tensor.
    """
    return F.cross_entropy(*nt_xent_logits(z1, z2, temperature))


def nt_xent_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent as a classification of the 2N anchors: (logits (2N, 2N), targets (2N,)).

    Row a holds s_ak / t for every view k with the anchor's own similarity masked out; its target
    is the anchor's other view (view-1 anchors first, then view-2).  :func:`nt_xent` is their mean
    cross-entropy; :func:`nt_xent_per_sample` the per-anchor one."""
    check_embeddings(z1, "z1")
    check_embeddings(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    t = check_temperature(temperature)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    logits = (z @ z.T) / t
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    # A finite very negative value (not -inf) keeps every intermediate of the backward pass finite.
    logits = logits.masked_fill(self_mask, torch.finfo(logits.dtype).min)
    idx = torch.arange(n, device=z.device)
    return logits, torch.cat([idx + n, idx])


def nt_xent_per_sample(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent per sample, as BCL's ``nt_xent(..., average=False)`` (MediaBrain-SJTU/BCL@a2342f8,
    losses/nt_xent.py:14-49) and MAK's ``nt_xent(..., sampleWiseLoss=True)`` (VITA-Group/MAK@75d2b9f,
    utils.py:116-137, whose denominator subtracts exactly exp(1 / t) for the self-similarity where
    this masks it: the two differ by the rounding of cos(z_i, z_i) = 1, below 1e-6 of the loss).

    Every one of the 2N views is an anchor with loss ``-log(pos / (pos + Ng))``
    (losses/nt_xent.py:43): pos = exp(s_ip / t) with its other view, Ng = the sum of exp(s_ik / t)
    over the 2N - 2 other samples' views (both views of every other sample;
    ``get_negative_mask``, losses/nt_xent.py:5-12), so the denominator is every view but the
    anchor. The loss of sample i is the mean of its two views' anchor losses,
    ``loss.view(2, N).mean(0)`` (losses/nt_xent.py:44): (l(z1_i) + l(z2_i)) / 2. Its mean over the
    N samples is therefore the mean over the 2N anchors, :func:`nt_xent`
    (the released ``average=True`` branch, losses/nt_xent.py:46-47, and train.py:156's
    ``loss.mean()``).

    Args:
        z1: (N, d) embeddings of the first view; L2-normalised inside.
        z2: (N, d) embeddings of the second view (row i = the same sample as row i of z1).
        temperature: t > 0 (released default 0.2, train.py:37).

    Returns:
        (N,) per-sample losses, differentiable.
    """
    logits, targets = nt_xent_logits(z1, z2, temperature)
    per_anchor = F.cross_entropy(logits, targets, reduction="none")  # (2N,): view-1 anchors, then view-2
    return per_anchor.view(2, -1).mean(0)

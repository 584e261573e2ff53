"""Losses of KDUP (paper 003: "Unsupervised Contrastive Learning Using Out-Of-Distribution Data
for Long-Tailed Dataset").

Pre-training with ID + sampled OOD data (Sec. 3.1.2):
    * :func:`psd_loss`            - pseudo semantic discrimination loss, Eq. 8
    * :func:`domain_loss`         - domain discrimination loss (from COLT, Bai et al. 2023), Eq. 9
    * :func:`domain_loss_colt`    - the same term as COLT's released code computes it

L_CPT = L_PSD + alpha * L_DD (Eq. 10) is the PSD method's step (``ltcl.methods.contrastive``,
``add_domain_loss``: alpha * L_DD whenever the batch spans both domains, with the L_DD that
``pretrain.domain_loss`` picks); tests/test_losses_colt.py checks it against these two terms.

Knowledge distillation with the frozen guiding network f (Sec. 3.2):
    * :func:`guided_contrastive_loss`       - L_GCL, Eq. 11
    * :func:`similarity_distillation_loss`  - L_DL, Eq. 12
    * :func:`guided_learning_loss`          - L_GL = L_GCL + beta * L_DL, Eq. 13

All functions are pure torch and vectorised; embeddings are L2-normalised inside, so callers may
pass raw projection-head outputs. The returned ``parts`` dicts hold *detached* scalar tensors,
meant for logging (the differentiable value is the returned total).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .contrastive import check_embeddings, check_temperature, cosine_matrix

__all__ = [
    "psd_loss",
    "domain_loss",
    "domain_loss_colt",
    "guided_contrastive_loss",
    "similarity_distillation_loss",
    "guided_learning_loss",
]


def _zero_with_grad(z: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that is still attached to ``z``'s graph (so ``.backward()`` works and gives zero grads)."""
    return z.sum() * 0.0


def _masked_logsumexp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise ``log(sum_{j: mask[i, j]} exp(logits[i, j]))``.

    Masked-out entries are filled with the dtype's most negative *finite* value rather than -inf,
    so an all-masked row gives a huge negative number instead of -inf and neither the forward nor
    the backward pass ever produces NaN. Callers drop such rows (or rely on them vanishing).
    """
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.logsumexp(filled, dim=1)


def psd_loss(z: torch.Tensor, pos_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Pseudo semantic discrimination loss, KDUP (paper 003, Eq. 8).

    ``L_PSD = -1/|Z^B| sum_i log( sum_{j in S_i^pos} exp(z_i.z_j/t) / sum_{j in S_i^neg} exp(z_i.z_j/t) )``

    Exactly as in Eq. 8 the denominator holds the negatives only (unlike InfoNCE / SupCon,
    where the positives are also in the denominator).

    Args:
        z: (N, d) embeddings of the minibatch (ID and sampled OOD, all views); L2-normalised inside,
            so ``z_i.z_j`` is the cosine similarity.
        pos_mask: (N, N) bool; ``pos_mask[i, j]`` marks j as a positive of anchor i (its other
            augmented view and its K^pos nearest neighbours in its own domain). The diagonal is
            ignored. It need not be symmetric.
        temperature: t > 0.

    Returns:
        Scalar loss. S_i^neg = every j != i not marked positive. The mean runs over the anchors
        that have at least one positive *and* at least one negative: an anchor without positives
        has an empty numerator (log 0) and one whose every other sample is positive has an empty
        denominator (log of x/0); neither term is defined, so such anchors are skipped and
        |Z^B| counts the remaining anchors. If no anchor qualifies, a zero still attached to
        ``z``'s graph is returned.
    """
    check_embeddings(z, "z")
    n = z.shape[0]
    if not isinstance(pos_mask, torch.Tensor) or pos_mask.dtype != torch.bool:
        raise ValueError("pos_mask must be a bool torch.Tensor of shape (N, N)")
    if pos_mask.shape != (n, n):
        raise ValueError(f"pos_mask must have shape ({n}, {n}) to match z, got {tuple(pos_mask.shape)}")
    t = check_temperature(temperature)

    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    pos = pos_mask.to(z.device) & not_self
    neg = ~pos_mask.to(z.device) & not_self
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not bool(valid.any()):
        return _zero_with_grad(z)

    logits = cosine_matrix(z) / t
    lse_pos = _masked_logsumexp(logits, pos)
    lse_neg = _masked_logsumexp(logits, neg)
    return (lse_neg - lse_pos)[valid].mean()


def domain_loss(z: torch.Tensor, domain: torch.Tensor, temperature: float) -> torch.Tensor:
    """Domain discrimination loss, KDUP (paper 003, Eq. 9), taken from COLT (Bai et al. 2023).

    ``L_DD = -1/|Z^B| sum_i 1/|S_i^s| sum_{p in S_i^s} log( exp(z_i.z_p/t) / (exp(z_i.z_p/t) + sum_{n in S_i^d} exp(z_i.z_n/t)) )``

    S_i^s = the *other* samples (j != i) of i's domain, S_i^d = the samples of every other domain.
    Per (i, p) pair, ``log(exp(s_ip) + sum_n exp(s_in)) = logaddexp(s_ip, logsumexp_n s_in)``.

    Args:
        z: (N, d) embeddings; L2-normalised inside.
        domain: (N,) integer domain labels (e.g. 0 = in-distribution, 1 = sampled OOD; more than
            two domains are allowed).
        temperature: t > 0.

    Returns:
        Scalar loss. Anchors alone in their domain (|S_i^s| = 0, so the inner mean is 0/0) are
        excluded from the outer mean, i.e. |Z^B| counts anchors with at least one same-domain
        partner. If no anchor has one, a zero still attached to ``z``'s graph is returned.
        If the batch holds a single domain (S_i^d empty), every term is log(1) = 0.
    """
    check_embeddings(z, "z")
    _check_domain(z, domain)
    t = check_temperature(temperature)

    n = z.shape[0]
    domain = domain.to(z.device)
    same_domain = domain[:, None] == domain[None, :]
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    pos = same_domain & not_self  # S_i^s
    neg = ~same_domain  # S_i^d (self is always in its own domain)
    n_pos = pos.sum(dim=1)
    valid = n_pos > 0
    if not bool(valid.any()):
        return _zero_with_grad(z)

    logits = cosine_matrix(z) / t
    # Rows without negatives give a huge negative finite value, and logaddexp(s, that) == s.
    lse_neg = _masked_logsumexp(logits, neg)
    log_prob = logits - torch.logaddexp(logits, lse_neg[:, None])  # (N, N): log term of every (i, p)
    per_anchor = (log_prob * pos).sum(dim=1)[valid] / n_pos[valid].to(log_prob.dtype)
    return -per_anchor.mean()


def _check_domain(z: torch.Tensor, domain: torch.Tensor) -> None:
    n = z.shape[0]
    if not isinstance(domain, torch.Tensor) or domain.shape != (n,):
        raise ValueError(f"domain must be a tensor of shape ({n},) to match z, got {getattr(domain, 'shape', domain)!r}")
    if domain.is_floating_point() or domain.is_complex() or domain.dtype == torch.bool:
        raise ValueError(f"domain must hold integer labels, got dtype {domain.dtype}")


def domain_loss_colt(z: torch.Tensor, domain: torch.Tensor, temperature: float) -> torch.Tensor:
    """Domain discrimination loss as COLT's released code computes it (Bai et al. 2023,
    github.com/JianhongBai/COLT, ``utils.py``: ``nt_xent(..., sup_weight, args)`` with ``args.COLT``).

    ``L_DD^COLT = -1/|Z^B| sum_i 1/|S_i^s| sum_{p in S_i^s} log( exp(z_i.z_p/t) / sum_{j != i} exp(z_i.z_j/t) )``

    S_i^s = the other samples (j != i) of i's domain, the anchor's own other augmented view
    included. It differs from Eq. 9 (:func:`domain_loss`) only in the denominator: COLT divides by
    ``pos_i + Ng_i``, the full NT-Xent denominator of anchor i (every sample but the anchor,
    both domains), where Eq. 9 has the positive plus the other domain's samples. Each term is
    therefore a log-softmax over all j != i, so the value is >= Eq. 9's and is not 0 for a
    single-domain batch. The weight (COLT's ``sup_weight``, ltcl's ``pretrain.alpha``) is
    applied by the caller.

    Args:
        z: (N, d) embeddings; L2-normalised inside.
        domain: (N,) integer domain labels (COLT: ID vs sampled OOD; more domains are allowed).
        temperature: t > 0.

    Returns:
        Scalar loss. As in :func:`domain_loss`, anchors alone in their domain (|S_i^s| = 0; COLT's
        code would divide by 0 there) are excluded from the outer mean, and if no anchor has a
        same-domain partner a zero still attached to ``z``'s graph is returned.
    """
    check_embeddings(z, "z")
    _check_domain(z, domain)
    t = check_temperature(temperature)

    n = z.shape[0]
    domain = domain.to(z.device)
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (domain[:, None] == domain[None, :]) & not_self  # S_i^s
    n_pos = pos.sum(dim=1)
    valid = n_pos > 0
    if not bool(valid.any()):
        return _zero_with_grad(z)

    logits = cosine_matrix(z) / t
    log_prob = logits - _masked_logsumexp(logits, not_self)[:, None]  # log softmax over j != i
    per_anchor = (log_prob * pos).sum(dim=1)[valid] / n_pos[valid].to(log_prob.dtype)
    return -per_anchor.mean()


def _check_same_shape(named: dict[str, torch.Tensor]) -> None:
    """Raise ValueError unless every tensor is a floating 2-D (B, d) tensor of one common shape."""
    shape = None
    for name, x in named.items():
        check_embeddings(x, name)
        if shape is None:
            shape = x.shape
        elif x.shape != shape:
            names = ", ".join(named)
            raise ValueError(f"{names} must all have the same shape (B, d); {name} has {tuple(x.shape)}, expected {tuple(shape)}")


def guided_contrastive_loss(
    y: torch.Tensor,
    y_pos: torch.Tensor,
    y_neg: torch.Tensor,
    z: torch.Tensor,
    z_pos: torch.Tensor,
    z_neg: torch.Tensor,
    weighted: bool = True,
) -> torch.Tensor:
    """Guided contrastive loss, KDUP (paper 003, Eq. 11).

    ``L_GCL = 1/B sum_i [ (1 + w_i^pos)(1 - cos(y_i, y_i^p)) + (1 - w_i^neg)(1 + cos(y_i, y_i^n)) ]``
    with ``w_i^pos = cos(z_i, z_i^p)`` and ``w_i^neg = cos(z_i, z_i^n)`` from the guiding network.

    Args:
        y, y_pos, y_neg: (B, d) embeddings of anchor / positive / negative from the trained network g.
        z, z_pos, z_neg: (B, d) embeddings of the same three images from the frozen guiding network f.
            The weights are computed from them under ``detach`` - f is frozen, so no gradient ever
            reaches z*.
        weighted: False sets w^pos = w^neg = 0 (both factors 1). This is the "+ Guided Sampling"
            row of Table 6 (f still selects the positive / negative, but the attractive / repulsive
            strengths are not controlled); True is "+ Guided Weighting". The row "KD with typical
            loss" (random in-batch negative) differs in how negatives are *sampled*, not in this loss.

    Returns:
        Scalar loss (mean over the B anchors).
    """
    _check_same_shape({"y": y, "y_pos": y_pos, "y_neg": y_neg})
    _check_same_shape({"z": z, "z_pos": z_pos, "z_neg": z_neg})
    if z.shape[0] != y.shape[0]:
        raise ValueError(f"z* and y* must have the same batch size, got {z.shape[0]} and {y.shape[0]}")
    cos_pos = F.cosine_similarity(y, y_pos, dim=1)
    cos_neg = F.cosine_similarity(y, y_neg, dim=1)
    if weighted:
        with torch.no_grad():
            w_pos = F.cosine_similarity(z, z_pos, dim=1).to(cos_pos.dtype)
            w_neg = F.cosine_similarity(z, z_neg, dim=1).to(cos_neg.dtype)
    else:
        w_pos = torch.zeros_like(cos_pos)
        w_neg = torch.zeros_like(cos_neg)
    per_sample = (1.0 + w_pos) * (1.0 - cos_pos) + (1.0 - w_neg) * (1.0 + cos_neg)
    return per_sample.mean()


def similarity_distillation_loss(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Similarity distillation loss, KDUP (paper 003, Eq. 12).

    ``L_DL = 1/(B(B-1)) sum_i sum_{j != i} (cos(z_i, z_j) - cos(y_i, y_j))^2``

    Args:
        y: (B, d) embeddings from the trained network g (receives the gradient).
        z: (B, d) embeddings of the same images from the frozen guiding network f (detached).

    Returns:
        Scalar loss, the mean squared difference over the B(B-1) ordered pairs i != j.
    """
    check_embeddings(y, "y", min_rows=2)
    check_embeddings(z, "z", min_rows=2)
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"y and z must have the same batch size, got {y.shape[0]} and {z.shape[0]}")
    b = y.shape[0]
    sim_y = cosine_matrix(y)
    with torch.no_grad():
        sim_z = cosine_matrix(z).to(sim_y.dtype)
    off_diag = ~torch.eye(b, dtype=torch.bool, device=y.device)
    sq = (sim_z - sim_y).pow(2)
    return sq[off_diag].sum() / (b * (b - 1))


def guided_learning_loss(
    y: torch.Tensor,
    y_pos: torch.Tensor,
    y_neg: torch.Tensor,
    z: torch.Tensor,
    z_pos: torch.Tensor,
    z_neg: torch.Tensor,
    beta: float,
    weighted: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Guided learning loss, KDUP (paper 003, Eq. 13): ``L_GL = L_GCL + beta * L_DL``.

    L_GCL is :func:`guided_contrastive_loss` (Eq. 11); L_DL is :func:`similarity_distillation_loss`
    (Eq. 12) on the batch of anchors, y (network g) vs z (guiding network f).

    Args:
        y, y_pos, y_neg: (B, d) embeddings from g.
        z, z_pos, z_neg: (B, d) embeddings from the frozen f.
        beta: weight of the distillation term (paper: 0.4).
        weighted: see :func:`guided_contrastive_loss`.

    Returns:
        ``(total, {"gcl": L_GCL, "dl": L_DL})``; the parts are detached (for logging).
    """
    gcl = guided_contrastive_loss(y, y_pos, y_neg, z, z_pos, z_neg, weighted=weighted)
    dl = similarity_distillation_loss(y, z)
    total = gcl + float(beta) * dl
    return total, {"gcl": gcl.detach(), "dl": dl.detach()}

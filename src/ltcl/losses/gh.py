"""Losses of GH, Geometric Harmonization ("Combating Representation Learning Disparity with
Geometric Harmonization", Zhou et al., NeurIPS 2023), as the authors' released code computes them:
github.com/MediaBrain-SJTU/Geometric-Harmonization, commit 9f7057c (below "gen_target.py",
"utils.py", "train_cifar.py" are files of that commit; "train_cifar.py" is the reference
training loop, "train_imagenet_places.py" its ImageNet-LT / Places-LT variant). The paper is not
among /work/shared/papers, so the docstrings cite the released code only, not equation numbers.

GH adds to a contrastive loss (SimCLR, focal, SDCLR, BCL) a term that pulls the embeddings
towards a fixed, geometrically uniform set of K class directions, with surrogate labels
assigned by Sinkhorn-Knopp under a class prior estimated from the data:

    * :func:`simplex_etf`            - the fixed target geometry M (K x d simplex ETF), gen_target.py:5-10
    * :func:`target_logits`          - t = normalize(z M^T), train_cifar.py:160-161, 249
    * :func:`sinkhorn`               - surrogate labels, utils.py:32-58 (eps 0.05, 300 iterations)
    * :func:`gh_loss`                - L_GH, the swapped cross-entropy of GHLoss, utils.py:14-30
    * :func:`moving_average_update`  - per-sample moving average of the target logits, train_cifar.py:249-257
    * :func:`ema_beta`               - its momentum, 0.9 during warm-up, 0.999 after, train_cifar.py:125-130
    * :func:`prior_from_argmax`      - class prior pi from the argmax of the averaged logits, train_cifar.py:287-290
    * :func:`prior_refresh_due`      - when pi is recomputed, train_cifar.py:284-286
    * :func:`gh_weight`              - the linear ramp of L_GH's weight, train_cifar.py:163-166

The training step of train_cifar.py (simclr_GH, epochs 0-indexed, warm-up W = 500, K = 100):
    epochs e < W (``e + 1 <= W``): loss = L_CL only (train_cifar.py:150-153);
    epochs e >= W: loss = L_CL + gh_weight(e) * gh_loss(t1, t2, pi) (train_cifar.py:158-167),
    with t1, t2 = target_logits(z1, M), target_logits(z2, M) of the two views' projections;
    every step, after the loss: moving_average_update(memory, index, target_logits(z1.detach(), M),
    ema_beta(e), first_epoch=(e == 0)) (view 1 only, train_cifar.py:247-257); then, when
    prior_refresh_due(e, W), pi = prior_from_argmax(memory) (train_cifar.py:284-290). Note that
    the refresh runs after *every* iteration of such an epoch (it sits inside the batch loop),
    so within a refresh epoch each batch uses the prior of the memory as it stood after the
    previous batch, and the next 19 epochs use the prior of the memory at the end of it.

All functions are pure torch functions of tensors, except :func:`moving_average_update`, which
updates the memory bank in place (as the released code does) and returns it.

Deviations from the released code:
    1. :func:`simplex_etf` draws its Gaussian matrix from a seeded ``torch.Generator``;
       gen_target.py:7 calls ``np.random.randn`` unseeded, so the released target
       (target/100_128_target.npy, float64, a valid ETF) cannot be regenerated bit for bit. It
       requires K <= d (gen_target.py:6 asserts K <= d + 1, but for K = d + 1 the polar factor
       no longer has orthonormal rows and the result is not an ETF; that line, ``assert ..., ``
       with nothing after the comma, is also a syntax error, so the released script does not run).
       The released code loads ``target/{K}_128_approximate_target.npy`` for K > 128
       (train_cifar.py:111-112); that file is not in the repository and is not reproduced here.
    2. :func:`sinkhorn` subtracts the global maximum of the scores before ``exp``. It multiplies
       the kernel by one constant, which every iterate's ``r`` absorbs exactly, so the result is
       mathematically identical (at every iteration count); it only keeps ``exp`` finite for
       scores that are not the unit-norm target logits. The compute dtype is a parameter
       (default float32, the released code's: its ``r``, ``c`` are ``torch.ones`` and the
       prior is cast with ``.float()``, utils.py:40-45); the released code runs on CUDA only.
    3. The moving-average memory starts at zeros: train_cifar.py:114 allocates it with
       ``torch.empty`` and epoch 0 *adds* the logits to that uninitialised memory
       (train_cifar.py:251-252); on zeros the add is the intended copy.
       :func:`moving_average_update` rejects repeated indices in one batch (the released
       per-sample loop would apply them one after another; a shuffled DataLoader never repeats).
    4. :func:`prior_from_argmax` breaks ties in the argmax by the lowest index (``torch.argmax``);
       the released ``torch.max(..., 1)`` on CUDA does not document its tie rule. It returns the
       memory's floating dtype; the released pi is float64 (numpy), cast to float32 inside
       ``sinkhorn`` (utils.py:45), which gives the same float32 values.
    5. train_imagenet_places.py differs from train_cifar.py and is not followed: it averages a
       per-epoch snapshot of the logits (all-reduced over ranks) once per epoch, starting at epoch
       10 (train_imagenet_places.py:160, 174-175, 327-340), uses 1-indexed epochs and
       GH_warm_up 30 (train_imagenet_places.py:35, 144, 192-193; its sdclr_GH branch, lines
       253-254, uses ``epoch + 1`` there, one epoch off the others). :func:`gh_weight` takes the
       ramp length as a parameter, so ``gh_weight(e - 1, W, 30)`` is that schedule.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "simplex_etf",
    "target_logits",
    "sinkhorn",
    "gh_loss",
    "moving_average_update",
    "ema_beta",
    "prior_from_argmax",
    "prior_refresh_due",
    "gh_weight",
]

SINKHORN_EPS = 0.05  # train_cifar.py:107, GHLoss(0.05, ...)
SINKHORN_ITERS = 300  # train_cifar.py:38, --sinkhorn_iter
GH_TEMPERATURE = 0.1  # utils.py:21, gamma
BETA_WARM_UP = 0.9  # train_cifar.py:125
BETA = 0.999  # train_cifar.py:39, --beta
GH_WARM_UP = 10  # train_cifar.py:36, --GH_warm_up
PRIOR_EVERY = 20  # train_cifar.py:285


def _check_2d(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point 2-D tensor, got {getattr(x, 'shape', type(x))}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")


def simplex_etf(num_classes: int, dim: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The fixed target geometry: a K x d simplex equiangular tight frame (gen_target.py:5-10).

    ``M = sqrt(K / (K - 1)) * (I_K - 1 1^T / K) @ U`` with ``U`` the polar factor of a K x d
    standard Gaussian matrix A (``scipy.linalg.polar(A)[0]`` in gen_target.py:8; here
    ``U = W V^T`` from the reduced SVD ``A = W S V^T``, the same matrix). ``U`` has orthonormal
    rows when K <= d, so ``M M^T = K/(K-1) (I - 1 1^T / K)``: unit-norm rows, pairwise cosine
    ``-1/(K-1)``, rows summing to the zero vector. The released run uses K = 100, d = 128
    (target/100_128_target.npy, train_cifar.py:109-113, cast to float32 there).

    Args:
        num_classes: K >= 2, the number of target directions (``--target_dim``).
        dim: d >= K, the embedding dimension (128 in the released code).
        seed: seed of the ``torch.Generator`` that draws A (the released script is unseeded).
        dtype: floating dtype of the result (float64, as the released .npy file).

    Returns:
        (K, d) tensor M; row k is the target direction of surrogate class k.
    """
    k, d = int(num_classes), int(dim)
    if k < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if d < k:
        raise ValueError(f"a simplex ETF of {k} directions by a polar factor needs dim >= num_classes, got dim={d}")
    gen = torch.Generator().manual_seed(int(seed))
    a = torch.randn(k, d, generator=gen, dtype=torch.float64)
    w, _, vh = torch.linalg.svd(a, full_matrices=False)
    u = w @ vh
    centre = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    m = math.sqrt(k / (k - 1)) * centre @ u
    return m.to(dtype)


def target_logits(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Target logits ``t = normalize(z M^T)`` (train_cifar.py:160-161 for the loss, 249 for the memory).

    The released code multiplies the raw projection-head output by M^T and L2-normalises each
    row of the result (``F.normalize(..., dim=1)``), so every entry lies in [-1, 1]. Because of
    that row normalisation, scaling z (e.g. L2-normalising it first) does not change t.

    Args:
        z: (N, d) projection-head outputs.
        target: (K, d) target geometry M (:func:`simplex_etf`); cast to z's dtype.

    Returns:
        (N, K) tensor t, differentiable in z.
    """
    _check_2d(z, "z")
    _check_2d(target, "target")
    if target.shape[1] != z.shape[1]:
        raise ValueError(f"target must have shape (K, {z.shape[1]}) to match z, got {tuple(target.shape)}")
    return F.normalize(z.mm(target.to(device=z.device, dtype=z.dtype).t()), dim=1)


def _prior_vector(prior: Optional[torch.Tensor], k: int, dtype: torch.dtype, device) -> torch.Tensor:
    if prior is None:
        return torch.full((k, 1), 1.0 / k, dtype=dtype, device=device)
    p = torch.as_tensor(prior).detach()
    if p.numel() != k:
        raise ValueError(f"prior must hold {k} entries (one per target class), got shape {tuple(p.shape)}")
    p = p.reshape(k, 1).to(device=device, dtype=dtype)
    if not torch.isfinite(p).all() or (p < 0).any() or not (p.sum() > 0):
        raise ValueError("prior must be finite, >= 0 and not all zero")
    return p / p.sum()


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    prior: Optional[torch.Tensor] = None,
    eps: float = SINKHORN_EPS,
    iters: int = SINKHORN_ITERS,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Surrogate-label assignment by Sinkhorn-Knopp (utils.py:32-58; eps 0.05 from train_cifar.py:107,
    300 iterations from train_cifar.py:38), without gradient.

    With ``Q = exp(scores / eps)^T`` (K x N), ``pi = prior / sum(prior)`` (uniform 1/K if None,
    utils.py:42-46) and ``c = 1/N`` to start, each of the ``iters`` iterations does
    ``r = pi / (Q c)`` then ``c = (1/N) / (Q^T r)`` (utils.py:49-51); the result is
    ``N * (r Q c^T)^T`` (utils.py:53-56). Because ``c`` is updated last, every row of the result
    sums to exactly 1 (a distribution over the K classes per sample); the columns sum to
    ``N * pi_k`` once the iteration has converged. A class with ``pi_k = 0`` gets no mass.
    Normalising the prior (utils.py:46) does not change the result in exact arithmetic (a factor
    s on pi scales r by s^t and c by s^-t after t iterations, which cancel in r Q c^T);
    it keeps r and c from over- or underflowing.

    Args:
        scores: (N, K) scores, in the released code the target logits of one view
            (:func:`target_logits`, entries in [-1, 1]).
        prior: (K,) class prior pi (any shape with K entries, >= 0, normalised here), or None.
        eps: entropic regularisation (the released ``l``), > 0.
        iters: number of Sinkhorn iterations, >= 1.
        dtype: compute dtype (float32 as the released code; float64 for tests).

    Returns:
        (N, K) tensor q in ``dtype``, detached.
    """
    _check_2d(scores, "scores")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    if int(iters) < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    s = scores.detach().to(dtype)
    n, k = s.shape
    # outside autocast: under a training step's bf16 / fp16 autocast the matrix products below
    # would otherwise run in the lower precision
    with torch.autocast(device_type=s.device.type, enabled=False):
        q = torch.exp((s - s.max()) / eps).t()  # (K, N); the constant factor is absorbed by r (Deviation 2)
        inv_k = _prior_vector(prior, k, dtype, s.device)
        inv_n = 1.0 / n
        c = torch.full((n, 1), 1.0 / n, dtype=dtype, device=s.device)
        for _ in range(int(iters)):
            r = inv_k / (q @ c)
            c = inv_n / (q.t() @ r)
        q = (r * q * c.t()).t()
    return q * n


def gh_loss(
    t1: torch.Tensor,
    t2: torch.Tensor,
    prior: Optional[torch.Tensor] = None,
    eps: float = SINKHORN_EPS,
    iters: int = SINKHORN_ITERS,
    gamma: float = GH_TEMPERATURE,
    sinkhorn_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The GH loss L_GH, GHLoss of utils.py:14-30 (gamma 0.1 at utils.py:21).

    ``L_GH = -1/N sum_i sum_k q1_ik log softmax(t2_i / gamma)_k - 1/N sum_i sum_k q2_ik log softmax(t1_i / gamma)_k``
    with ``q1 = sinkhorn(t1, pi)``, ``q2 = sinkhorn(t2, pi)`` (utils.py:22-25): each view's
    surrogate labels supervise the other view's softened target logits (a swapped prediction).
    The two terms are summed, not averaged. The labels carry no gradient; the gradient flows
    through both log-softmaxes. The released total is ``L_CL.mean() + w * L_GH``
    (train_cifar.py:167, w from :func:`gh_weight`).

    Args:
        t1, t2: (N, K) target logits of the two views (:func:`target_logits`).
        prior: (K,) class prior pi (:func:`prior_from_argmax`), or None for uniform.
        eps, iters: Sinkhorn parameters (:func:`sinkhorn`).
        gamma: temperature of the log-softmax, > 0.
        sinkhorn_dtype: compute dtype of the Sinkhorn step (float32 as released).

    Returns:
        Scalar loss in t1's dtype.
    """
    _check_2d(t1, "t1")
    _check_2d(t2, "t2")
    if t1.shape != t2.shape:
        raise ValueError(f"t1 and t2 must have the same shape, got {tuple(t1.shape)} and {tuple(t2.shape)}")
    if not (gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be a finite number > 0, got {gamma}")
    q1 = sinkhorn(t1, prior, eps, iters, dtype=sinkhorn_dtype)
    q2 = sinkhorn(t2, prior, eps, iters, dtype=sinkhorn_dtype)
    logp1 = F.log_softmax(t1 / gamma, dim=1)
    logp2 = F.log_softmax(t2 / gamma, dim=1)
    term1 = -(q1.to(logp2.dtype) * logp2).sum(dim=1).mean()
    term2 = -(q2.to(logp1.dtype) * logp1).sum(dim=1).mean()
    return term1 + term2


@torch.no_grad()
def moving_average_update(
    memory: torch.Tensor,
    index: torch.Tensor,
    logits: torch.Tensor,
    beta: float,
    first_epoch: bool,
) -> torch.Tensor:
    """Per-sample moving average of the target logits, in place (train_cifar.py:249-257).

    For each sample i of the batch (dataset index ``index[i]``):
    in the first epoch (epoch 0) ``memory[index[i]] += logits[i]`` (train_cifar.py:251-252),
    afterwards ``memory[index[i]] = beta * memory[index[i]] + (1 - beta) * logits[i]``
    (train_cifar.py:255-257). The released logits are ``target_logits(z1.detach(), M)`` of the
    first view only (train_cifar.py:247-249), taken every step after the forward pass.

    The released memory is ``torch.empty`` (train_cifar.py:114), i.e. uninitialised, and epoch 0
    adds to it; start ``memory`` at zeros (``torch.zeros(num_samples, K)``), on which the
    epoch-0 add is a copy (module Deviation 3).

    Args:
        memory: (num_samples, K) floating tensor, updated in place.
        index: (B,) integer dataset indices of the batch, all distinct.
        logits: (B, K) target logits of the batch (detached here).
        beta: momentum in [0, 1] (:func:`ema_beta`); unused when ``first_epoch``.
        first_epoch: True in epoch 0 (the released ``epoch == 0``).

    Returns:
        ``memory`` (the same tensor).
    """
    _check_2d(memory, "memory")
    _check_2d(logits, "logits")
    if logits.shape[1] != memory.shape[1]:
        raise ValueError(f"logits must have {memory.shape[1]} columns to match memory, got {tuple(logits.shape)}")
    if not isinstance(index, torch.Tensor) or index.shape != (logits.shape[0],) or index.is_floating_point() \
            or index.dtype == torch.bool:
        raise ValueError(f"index must be an integer tensor of shape ({logits.shape[0]},)")
    index = index.to(device=memory.device, dtype=torch.long)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= memory.shape[0]):
        raise ValueError(f"index must lie in [0, {memory.shape[0]})")
    if torch.unique(index).numel() != index.numel():
        raise ValueError("index must not repeat within a batch")
    new = logits.detach().to(device=memory.device, dtype=memory.dtype)
    if first_epoch:
        memory.index_add_(0, index, new)
    else:
        b = float(beta)
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        memory[index] = b * memory[index] + (1.0 - b) * new
    return memory


def ema_beta(epoch: int, warm_up: int, beta_warm_up: float = BETA_WARM_UP, beta: float = BETA) -> float:
    """Momentum of :func:`moving_average_update` in 0-indexed ``epoch`` (train_cifar.py:125-130).

    ``beta_warm_up`` (0.9) until the warm-up ends, ``beta`` (``--beta``, 0.999) for
    ``epoch >= warm_up``. As released, with ``warm_up == 0`` the momentum stays 0.9 throughout
    (the switch sits in the ``if args.warm_up > 0`` branch, train_cifar.py:127-132).
    """
    if warm_up > 0 and epoch >= warm_up:
        return float(beta)
    return float(beta_warm_up)


@torch.no_grad()
def prior_from_argmax(memory: torch.Tensor, num_classes: Optional[int] = None) -> torch.Tensor:
    """Class prior pi from the argmax of the averaged logits (train_cifar.py:287-290).

    ``pi_k = #{i : argmax_j memory[i, j] = k} / num_samples`` over every row of the memory bank
    (the whole training set), classes that win no row getting 0. Ties go to the lowest index
    (module Deviation 4).

    Args:
        memory: (num_samples, K) averaged target logits.
        num_classes: K; defaults to ``memory.shape[1]`` (the released ``args.target_dim``).

    Returns:
        (K,) tensor summing to 1, in memory's dtype.
    """
    _check_2d(memory, "memory")
    k = memory.shape[1] if num_classes is None else int(num_classes)
    if k != memory.shape[1]:
        raise ValueError(f"num_classes={k} does not match memory's {memory.shape[1]} columns")
    counts = torch.bincount(memory.argmax(dim=1), minlength=k).to(memory.dtype)
    return counts / counts.sum()


def prior_refresh_due(epoch: int, warm_up: int, every: int = PRIOR_EVERY) -> bool:
    """Whether the prior is recomputed in 0-indexed ``epoch`` (train_cifar.py:284-286).

    True when ``(epoch + 1) % every == 0 or epoch + 1 == warm_up``, and ``epoch + 1 >= warm_up``:
    the last warm-up epoch and every 20th epoch after it. The released check runs after every
    iteration of such an epoch (inside the batch loop), after the memory update.
    """
    e = int(epoch) + 1
    return (e % int(every) == 0 or e == int(warm_up)) and e >= int(warm_up)


def gh_weight(epoch: int, warm_up: int, gh_warm_up: int = GH_WARM_UP) -> float:
    """Weight w of L_GH in 0-indexed ``epoch`` (train_cifar.py:150, 158, 163-166).

    0 while ``epoch + 1 <= warm_up`` (no GH term); then ``(epoch + 1 - warm_up) / gh_warm_up``
    while ``epoch + 1 <= warm_up + gh_warm_up`` (1/10, 2/10, ..., 1 with the default 10); then 1.
    """
    e = int(epoch) + 1
    if e <= warm_up:
        return 0.0
    if e <= warm_up + gh_warm_up:
        return (e - warm_up) / gh_warm_up
    return 1.0

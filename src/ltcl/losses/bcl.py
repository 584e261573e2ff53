"""Pieces of BCL-I, Boosted Contrastive Learning ("Contrastive Learning with Boosted
Memorization", Zhou et al., ICML 2022), as the authors' released code computes them:
github.com/MediaBrain-SJTU/BCL, commit a2342f8 (below "train.py", "losses/nt_xent.py",
"data/memoboosted_cifar100.py", "data/randaug.py" are files of that commit). The paper is not
among /work/shared/papers, so the docstrings cite the released code only.

BCL-I trains plain SimCLR (the gradient is the mean NT-Xent, train.py:156) and boosts the
*augmentation* of the samples the network memorises least, measured by a momentum average of
each sample's contrastive loss:

    * :func:`nt_xent_per_sample`    - NT-Xent per sample (``average=False``), losses/nt_xent.py:14-49
    * :func:`momentum_loss_update`  - the momentum loss memory m_i, train.py:146-153
    * :func:`momentum_weights`      - memory -> weights w_i in [0, 1],
                                      data/memoboosted_cifar100.py:6-11
    * :func:`randaugment_strength`  - the per-sample RandAugment strength from w_i,
                                      data/memoboosted_cifar100.py:37-57
    * :func:`randaugment_draws`     - what RandAugment_prob draws per sample and view,
                                      data/randaug.py:199-213 (ops: data/randaug.py:9-182)
    * :data:`AUGMENT_OPS`           - the released op table (name, min, max), data/randaug.py:159-182

The released loop (train.py, epochs 1-indexed, train.py:110; BCL-I is ``--bcl --rand_k 1``,
README.md:107; BCL-D, SDCLR-based, is ``--rand_k 2``, README.md:117):
    before epoch 1 every weight is 0 (data/memoboosted_cifar100.py:26-27), so epoch 1 applies no
    RandAugment op at all; each ``__getitem__`` builds the base SimCLR augmentation followed by
    ``RandAugment_prob(k, strength_i, w_i)`` and applies that one Compose twice, once per view
    (data/memoboosted_cifar100.py:40-59: the two views share the strength, including BCL-D's
    random factor, but draw their ops independently); every step the per-sample loss updates the
    memory (train.py:144-153); after epoch e, ``update_momentum_weight(momentum_loss, e)`` maps
    the memory to the weights used in epoch e + 1 (train.py:113-115).

Deviations from the released code:
    1. RNG: :func:`randaugment_draws` draws from a ``torch.Generator`` passed in, vectorised,
       instead of python ``random`` (op choice, apply test, sign flips; data/randaug.py:207, 209,
       11/17/25/40/55) and numpy's global state (BCL-D's strength factor,
       data/memoboosted_cifar100.py:55), all seeded by train.py:58 (utils.py:11-15). The draws
       have the released distribution, not its stream. The released code draws a sign only when
       a signed op is applied; here every slot gets one (ignore it where not applied / unsigned).
       Cutout's centre (data/randaug.py:130-131) is image-dependent and not drawn here (see
       :data:`AUGMENT_OPS`).
    2. :func:`nt_xent_per_sample` computes ``-log(pos / (pos + Ng))`` (losses/nt_xent.py:30-43)
       as a log-softmax (``F.cross_entropy``, the self-similarity masked), the same expression
       as :func:`ltcl.losses.contrastive.nt_xent`; the released code takes ``exp`` then ``log``,
       which overflows for small temperatures, and needs CUDA (``.cuda()``, losses/nt_xent.py:32).
       It takes the two views as z1, z2 (the released ``features2`` form); train.py:141-144
       passes them interleaved (row 2i, 2i+1 = sample i), which losses/nt_xent.py:20-22 splits.
    3. :func:`momentum_loss_update` takes a per-sample ``seen`` mask where the released loop
       tests ``epoch > 1`` (train.py:147). They agree whenever epoch 1 visits every sample, as
       the released DataLoader does (shuffle=True, no drop_last, train.py:81). On a sample
       epoch 1 skipped, the released code would start from the zero-initialised shadow
       (train.py:106), i.e. m_i = (1 - beta) * loss. It is pure (returns new tensors; the
       released loop writes in place) and rejects repeated indices within one batch.
    4. :func:`momentum_weights` takes the memory (the shadow). The released code standardises
       the row ``momentum_loss[epoch - 1]`` (data/memoboosted_cifar100.py:8), which equals the
       shadow for every sample visited in that epoch and holds 0 for one not visited; with the
       released DataLoader every sample is visited every epoch. It returns a torch tensor
       (released: a float32 numpy array) and raises where the released code returns NaN (a
       constant memory, std 0, or a single sample: the unbiased std of one value is NaN).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ltcl.data.randaugment import AUGMENT_LIST, SIGN_FLIP

from .contrastive import nt_xent_per_sample  # the per-sample NT-Xent of BCL's memory (and MAK's ECLE)

__all__ = [
    "AugmentOp",
    "AUGMENT_OPS",
    "SIGNED_OPS",
    "MAX_STRENGTH",
    "MOMENTUM_LOSS_BETA",
    "min_strength",
    "nt_xent_per_sample",
    "momentum_loss_update",
    "momentum_weights",
    "randaugment_strength",
    "RandAugmentDraws",
    "randaugment_draws",
]

MOMENTUM_LOSS_BETA = 0.97  # train.py:39, --momentum_loss_beta
MAX_STRENGTH = 30  # data/randaug.py:188, 194, 210: the magnitude scale m in [0, 30], val = m / 30 * (max - min) + min


class AugmentOp(NamedTuple):
    """One RandAugment op of the released table: its name and the magnitude range [min, max]."""

    name: str
    min: float
    max: float


# data/randaug.py:159-182, ``augment_list()``, in the released order: the table of
# :mod:`ltcl.data.randaugment` (which holds the ops themselves and how each uses its value; the
# released Cutout centre is numpy's ``uniform(w)``, a point in (1, w], see ``cutout_centres``)
AUGMENT_OPS: tuple[AugmentOp, ...] = tuple(AugmentOp(*row) for row in AUGMENT_LIST)
# the ops of the table that negate their magnitude with probability 1/2 inside the op (data/randaug.py:11-57)
SIGNED_OPS: frozenset[str] = frozenset(o.name for o in AUGMENT_OPS if o.name in SIGN_FLIP)


def min_strength(k: int) -> int:
    """The released floor of the RandAugment strength: 10 for k = 1, 5 for any other k
    (data/memoboosted_cifar100.py:37-39 and 48-49, "training stability")."""
    k = _check_k(k)
    return 10 if k == 1 else 5


def _check_index(index: torch.Tensor, size: int, num: int) -> torch.Tensor:
    if not isinstance(index, torch.Tensor) or index.shape != (size,) or index.is_floating_point() \
            or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"index must be an integer tensor of shape ({size},)")
    index = index.to(torch.long)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num):
        raise ValueError(f"index must lie in [0, {num})")
    if torch.unique(index).numel() != index.numel():
        raise ValueError("index must not repeat within a batch")
    return index


def momentum_loss_update(
    memory: torch.Tensor,
    seen: torch.Tensor,
    index: torch.Tensor,
    loss: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The momentum loss memory of BCL (train.py:146-153), one batch.

    For each sample b of the batch (dataset index ``index[b]``, loss ``loss[b]`` from
    :func:`nt_xent_per_sample`, detached): at its first sight ``m = loss[b]``
    (train.py:149-150, the released ``epoch == 1``), afterwards
    ``m = (1 - beta) * loss[b] + beta * m`` (train.py:147-148). See module Deviation 3 for
    ``seen`` vs the released epoch test.

    Args:
        memory: (num_samples,) floating tensor, m (start: zeros, train.py:106).
        seen: (num_samples,) bool tensor, True where the sample has a memory (start: all False).
        index: (B,) integer dataset indices of the batch, all distinct.
        loss: (B,) per-sample losses of the batch.
        beta: momentum in [0, 1] (released 0.97, :data:`MOMENTUM_LOSS_BETA`).

    Returns:
        ``(new_memory, new_seen)``, new tensors (the inputs are not modified).
    """
    if not isinstance(memory, torch.Tensor) or memory.dim() != 1 or not memory.is_floating_point():
        raise ValueError("memory must be a 1-D floating tensor (num_samples,)")
    num = memory.shape[0]
    if not isinstance(seen, torch.Tensor) or seen.dtype != torch.bool or seen.shape != (num,):
        raise ValueError(f"seen must be a bool tensor of shape ({num},)")
    if not isinstance(loss, torch.Tensor) or loss.dim() != 1 or not loss.is_floating_point():
        raise ValueError("loss must be a 1-D floating tensor (B,)")
    b = float(beta)
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
    index = _check_index(index, loss.shape[0], num).to(memory.device)
    new_loss = loss.detach().to(device=memory.device, dtype=memory.dtype)
    seen = seen.to(memory.device)
    old = memory[index]
    was_seen = seen[index]
    value = torch.where(was_seen, (1.0 - b) * new_loss + b * old, new_loss)
    new_memory = memory.detach().clone()
    new_memory[index] = value
    new_seen = seen.clone()
    new_seen[index] = True
    return new_memory, new_seen


def momentum_weights(memory: torch.Tensor) -> torch.Tensor:
    """Memory -> augmentation weights, ``calculate_momentum_weight`` (data/memoboosted_cifar100.py:6-11).

    ``u = (m - mean(m)) / std(m)`` with torch's *unbiased* std (N - 1), then
    ``w = u / max|u| / 2 + 1/2``: w lies in [0, 1], 1/2 at the mean memory, and the sample
    farthest from the mean sits at 0 or 1. A high loss (poorly memorised sample) gives a
    high weight, i.e. a stronger and likelier RandAugment. The std cancels in ``u / max|u|``
    (w = (m - mean) / max|m - mean| / 2 + 1/2), so the unbiased-vs-biased choice changes w only
    by rounding; it matters only for N = 1, where the unbiased std is NaN.

    Args:
        memory: (N,) floating tensor, N >= 2, not constant (see module Deviation 4).

    Returns:
        (N,) weights, the memory's dtype and device (no gradient).
    """
    if not isinstance(memory, torch.Tensor) or memory.dim() != 1 or not memory.is_floating_point():
        raise ValueError("memory must be a 1-D floating tensor (N,)")
    if memory.shape[0] < 2:
        raise ValueError("memory must hold at least 2 samples (the unbiased std of one value is NaN)")
    m = memory.detach()
    u = (m - torch.mean(m)) / torch.std(m)
    w = (u / torch.max(torch.abs(u))) / 2 + 1 / 2
    if not bool(torch.isfinite(w).all()):
        raise ValueError("memory must be finite and not constant (the released weights would be NaN)")
    return w


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or int(k) < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _check_weights(weights: torch.Tensor) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor) or weights.dim() != 1 or not weights.is_floating_point():
        raise ValueError("weights must be a 1-D floating tensor (N,)")
    w = weights.detach()
    if not bool(torch.isfinite(w).all()) or (w.numel() and (float(w.min()) < 0.0 or float(w.max()) > 1.0)):
        raise ValueError("weights must be finite and lie in [0, 1]")
    return w


def _check_strength(rand_strength: float) -> float:
    s = float(rand_strength)
    if not 0.0 <= s <= MAX_STRENGTH:
        # Contrast/Color/Brightness/Sharpness assert 0.1 <= v <= 1.9, i.e. m in [0, 30] (data/randaug.py:97-112)
        raise ValueError(f"rand_strength must lie in [0, {MAX_STRENGTH}], got {rand_strength!r}")
    return s


def randaugment_strength(
    weights: torch.Tensor, k: int, rand_strength: float, factor: torch.Tensor | None = None
) -> torch.Tensor:
    """The RandAugment strength m_i of each sample (data/memoboosted_cifar100.py:45, 55).

    k = 1: ``m_i = 10 + (rand_strength - 10) * w_i``; any other k:
    ``m_i = 5 + (rand_strength - 5) * w_i * u_i`` with u_i ~ U[0, 1) drawn once per sample per
    ``__getitem__`` (``np.random.rand(1)``), so shared by its two views (:func:`min_strength`).
    The released m is then a 1-element numpy array, and ``float(self.m)`` (data/randaug.py:210)
    of it is a TypeError under numpy >= 2 (deprecated since 1.25): the released k != 1 path runs
    only with the older numpy it was written for (README.md:30, Python 3.7).

    Args:
        weights: (N,) weights in [0, 1] (:func:`momentum_weights`; zeros before the first update).
        k: RandAugment's number of ops (released ``--rand_k``, BCL-I 1, BCL-D 2).
        rand_strength: the strength at w = 1 (``--rand_strength``, released 30, in [0, 30]).
        factor: (N,) the u_i, required for k != 1 and ignored for k = 1.

    Returns:
        (N,) float64 strengths.
    """
    w = _check_weights(weights).to(torch.float64)
    k = _check_k(k)
    s = _check_strength(rand_strength)
    lo = float(min_strength(k))
    if k == 1:
        return lo + (s - lo) * w
    if not isinstance(factor, torch.Tensor) or factor.shape != w.shape:
        raise ValueError(f"factor must be a tensor of shape {tuple(w.shape)} for k != 1")
    return lo + (s - lo) * w * factor.to(device=w.device, dtype=torch.float64)


class RandAugmentDraws(NamedTuple):
    """What ``RandAugment_prob(k, m_i, w_i)`` draws for each sample i and view v (data/randaug.py:206-211).

    Fields (shapes (N,) and (N, V, k), V views, k op slots):
        strength: (N,) m_i, float64, shared by the views (:func:`randaugment_strength`).
        op: (N, V, k) long, the drawn op's index into :data:`AUGMENT_OPS` (with replacement).
        applied: (N, V, k) bool, whether that op is applied (``uniform(0, 1) < w_i``, per op).
        magnitude: (N, V, k) float64, ``m_i / 30 * (max - min) + min`` of the drawn op, the
            ``val`` RandAugment_prob passes (computed in every slot; used where ``applied``).
        sign: (N, V, k) float64 +-1, the op-internal sign flip of :data:`SIGNED_OPS`
            (-1 with probability 1/2); +1 for the other ops.
    """

    strength: torch.Tensor
    op: torch.Tensor
    applied: torch.Tensor
    magnitude: torch.Tensor
    sign: torch.Tensor

    @property
    def value(self) -> torch.Tensor:
        """(N, V, k) the argument the op finally uses, ``sign * magnitude`` (before any op's own
        pixel / int conversion, see :data:`AUGMENT_OPS`)."""
        return self.sign * self.magnitude


def randaugment_draws(
    weights: torch.Tensor,
    k: int,
    rand_strength: float,
    generator: torch.Generator,
    views: int = 2,
) -> RandAugmentDraws:
    """Draw BCL's boosted RandAugment for a batch of samples (data/memoboosted_cifar100.py:37-59,
    data/randaug.py:199-213).

    Per sample i: the strength m_i (:func:`randaugment_strength`; for k != 1 its factor
    u_i ~ U[0, 1) is drawn here), then per view (the released two calls of the same Compose,
    data/memoboosted_cifar100.py:59): ``random.choices(augment_list, k=k)``, i.e. k ops uniform
    over the 15 of :data:`AUGMENT_OPS` *with* replacement (data/randaug.py:207); for each op in
    turn, independently, it is applied iff ``random.uniform(0, 1) < w_i`` (data/randaug.py:209),
    so w_i = 0 never applies one and w_i = 1 always does; ``val = m_i / 30 * (max - min) + min``
    (data/randaug.py:210); inside the op, ShearX/ShearY/TranslateX/TranslateY/Rotate negate val
    with probability 1/2 (data/randaug.py:11, 17, 25, 40, 55). RandAugment_prob follows the base
    SimCLR augmentation (crop, flip, jitter, grayscale) and precedes ToTensor
    (data/memoboosted_cifar100.py:40-46).

    Args:
        weights: (N,) weights in [0, 1] (:func:`momentum_weights`; zeros in the first epoch).
        k: number of ops per view (``--rand_k``).
        rand_strength: the strength at w = 1 (``--rand_strength``, in [0, 30]).
        generator: the ``torch.Generator`` every draw comes from (module Deviation 1); the draws
            are made on its device.
        views: views per sample (released 2).

    Returns:
        :class:`RandAugmentDraws`, on ``weights``' device.
    """
    w = _check_weights(weights)
    k = _check_k(k)
    _check_strength(rand_strength)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(views, bool) or int(views) != views or int(views) < 1:
        raise ValueError(f"views must be an integer >= 1, got {views!r}")
    views = int(views)
    n = w.shape[0]
    dev = generator.device
    w64 = w.to(device=dev, dtype=torch.float64)
    factor = torch.rand(n, generator=generator, device=dev, dtype=torch.float64) if k != 1 else None
    strength = randaugment_strength(w64, k, rand_strength, factor)
    shape = (n, views, k)
    op = torch.randint(len(AUGMENT_OPS), shape, generator=generator, device=dev)
    applied = torch.rand(shape, generator=generator, device=dev, dtype=torch.float64) < w64[:, None, None]
    flip = torch.rand(shape, generator=generator, device=dev, dtype=torch.float64) > 0.5
    lo = torch.tensor([o.min for o in AUGMENT_OPS], dtype=torch.float64, device=dev)
    hi = torch.tensor([o.max for o in AUGMENT_OPS], dtype=torch.float64, device=dev)
    signed = torch.tensor([o.name in SIGNED_OPS for o in AUGMENT_OPS], device=dev)
    magnitude = (strength / MAX_STRENGTH)[:, None, None] * (hi - lo)[op] + lo[op]
    sign = torch.where(signed[op] & flip, -1.0, 1.0).to(torch.float64)
    out = weights.device
    return RandAugmentDraws(strength.to(out), op.to(out), applied.to(out), magnitude.to(out), sign.to(out))

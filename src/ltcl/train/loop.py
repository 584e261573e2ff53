"""The training loop: epochs, warm-up + cosine learning rate, AMP, progress and logging.

It serves every method through the ``ltcl.methods.base.Method`` interface and knows
nothing about any of them.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from tqdm import tqdm

from ltcl import collectives
from ltcl.errors import UserError
from ltcl.methods.base import Method
from ltcl.runtime import Runtime
from ltcl.train import distributed


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or inf loss; the message names epoch, step and loss term."""


@dataclass
class EpochLog:
    epoch: int
    loss: float
    lr: float
    images_per_s: float
    seconds: float
    steps: int
    parts: dict[str, float] = field(default_factory=dict)


def build_optimizer(params, cfg) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scaler(runtime: Runtime):
    """fp16 autocast needs a gradient scaler; bf16 and fp32 do not (None)."""
    return torch.amp.GradScaler(runtime.device.type) if runtime.needs_grad_scaler else None


def _cosine(start: float, end: float, t: float) -> float:
    """From ``start`` at t = 0 to ``end`` at t = 1 along half a cosine (t clamped to [0, 1])."""
    t = min(max(t, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_at(progress_epochs: float, cfg) -> float:
    """Linear warm-up for ``cfg.warmup_epochs``, then ``cfg.lr_schedule``: ``cosine``, a cosine
    decay to 0 at ``cfg.epochs``; or ``two-stage``, GH's ``lr_scheduler_warm``
    (Geometric-Harmonization utils.py:432-443): a cosine from lr to ``lr_stage1_min`` x lr until
    ``lr_split`` x epochs, then a cosine from ``lr_stage2_max`` x lr to 0 at ``cfg.epochs``.

    Written as a function of fractional epochs rather than a torch LR scheduler because the
    number of steps per epoch changes when OOD images are re-sampled and must stay exact
    across resumes; a step-counting scheduler would drift in both cases.  (GH's code sets the
    rate once per epoch and decays to 1e-6; here it moves every step and ends at 0, as ltcl's
    cosine does: docs/deviations.md.)"""
    warm = min(cfg.warmup_epochs, cfg.epochs - 1) if cfg.epochs > 1 else 0
    if warm > 0 and progress_epochs < warm:
        return cfg.lr * (progress_epochs + 1e-8) / warm
    if cfg.lr_schedule == "two-stage":
        split = max(cfg.lr_split * cfg.epochs, warm)
        if progress_epochs < split:
            return _cosine(cfg.lr, cfg.lr_stage1_min * cfg.lr, (progress_epochs - warm) / max(split - warm, 1e-8))
        return _cosine(cfg.lr_stage2_max * cfg.lr, 0.0, (progress_epochs - split) / max(cfg.epochs - split, 1e-8))
    return _cosine(cfg.lr, 0.0, (progress_epochs - warm) / max(cfg.epochs - warm, 1e-8))


def optimizer_step(loss: torch.Tensor, optimizer, scaler=None) -> None:
    """Backward and one optimiser step; through the loss scaler when training in fp16."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; the last incomplete batch is dropped unless it is the only one
    (BatchNorm and contrastive losses need more than one sample per batch)."""
    if n < 2:
        raise UserError(f"a training set needs at least 2 images, got {n}")
    perm = torch.randperm(n, generator=generator)
    bs = min(batch_size, n)
    steps = n // bs
    return [perm[i * bs: (i + 1) * bs] for i in range(steps)]


def run_epoch(method: Method, optimizer, cfg, runtime: Runtime, epoch: int,
                generator: torch.Generator, scaler=None, desc: str = "train",
                end_epoch: Optional[int] = None) -> EpochLog:
    """One epoch (0-based ``epoch``) of the schedule that spans ``cfg.epochs``; the progress bar
    reads ``<desc> <epoch + 1>/<end_epoch>``: the end of the range being trained (the warm-up's
    ``ood.warmup_epochs``), ``cfg.epochs`` when None.  Only the bar uses ``end_epoch``."""
    method.model.train()
    batches = epoch_batches(method.num_samples(), cfg.batch_size, generator)
    world = collectives.world_size()
    if world > 1:
        # the distributed sampler: every rank holds the same global batches (same seeded
        # permutation) and trains on its own disjoint slice of each; augmentations are drawn
        # from a per-rank seed so the ranks' slices do not share crop / jitter parameters
        batches = distributed.shard_batches(batches, collectives.rank(), world)
        rng = distributed.rank_rng(int(torch.randint(2 ** 62, (1,), generator=generator)), method.data.x.device)
    else:
        rng = contextlib.nullcontext()
    with rng:
        of = cfg.epochs if end_epoch is None else end_epoch
        return _run_steps(method, optimizer, cfg, epoch, batches, scaler, f"{desc} {epoch + 1}/{of}", desc, world)


def _run_steps(method: Method, optimizer, cfg, epoch: int, batches: list[torch.Tensor], scaler, bar_desc: str,
               desc: str, world: int) -> EpochLog:
    device = method.data.x.device
    total, n_img, sums = 0.0, 0, {}
    t0 = time.perf_counter()
    bar = tqdm(batches, desc=bar_desc, leave=False, mininterval=2.0,
               disable=not collectives.is_main())
    for step, idx in enumerate(bar):
        lr = lr_at(epoch + step / len(batches), cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        out = method.step(idx.to(device, non_blocking=True))
        if not torch.isfinite(out.loss):
            bad = [k for k, v in out.parts.items() if not math.isfinite(v)] or ["total"]
            raise NonFiniteLossError(
                f"{desc}: non-finite loss at epoch {epoch + 1}, step {step + 1}: "
                f"term(s) {', '.join(bad)} = {out.parts}"
            )
        optimizer_step(out.loss, optimizer, scaler)
        total += float(out.loss.detach())  # under DDP: the global batch's loss, the same on every rank
        n_img += out.images * world  # every rank forwards as many images
        for k, v in out.parts.items():
            sums[k] = sums.get(k, 0.0) + v
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    steps = len(batches)
    return EpochLog(
        epoch=epoch + 1,
        loss=total / steps,
        lr=lr_at(epoch + 1, cfg),
        images_per_s=n_img / max(secs, 1e-9),
        seconds=secs,
        steps=steps,
        parts={k: v / steps for k, v in sums.items()},
    )


def fit(method: Method, cfg, runtime: Runtime, *, start_epoch: int = 0, end_epoch: Optional[int] = None,
        optimizer=None, scaler=None,
        before_epoch: Optional[Callable[[int], None]] = None,
        after_epoch: Optional[Callable[[EpochLog], None]] = None,
        desc: str = "train", seed: Optional[int] = None) -> list[EpochLog]:
    """Train ``method`` from ``start_epoch`` to ``end_epoch`` (default ``cfg.epochs``); the
    learning-rate schedule always spans ``cfg.epochs`` (a warm-up phase is its first part), the
    progress bar counts to the end of the range (``ood warm-up 1/3`` for a 3-epoch warm-up).

    ``before_epoch(epoch)`` runs before the method's own ``on_epoch_start`` (the OOD sampler
    re-samples there); ``after_epoch(log)`` receives each epoch's log (dvclive, checkpoints).
    ``seed`` seeds each epoch's batch order (None: the stage's ``cfg.seed``).

    In a process group of several ranks (torchrun) the method's step runs through
    DistributedDataParallel for the duration of the call (``ltcl.train.distributed.prepare``).
    """
    optimizer = optimizer or build_optimizer(method.parameters(), cfg)
    if scaler is None:
        scaler = make_scaler(runtime)
    wrapped = method.ddp is None
    if wrapped:
        distributed.prepare(method, cfg, runtime)
    logs = []
    end = cfg.epochs if end_epoch is None else end_epoch
    seed = cfg.seed if seed is None else seed
    try:
        for epoch in range(start_epoch, end):
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            if before_epoch is not None:
                before_epoch(epoch)
            method.on_epoch_start(epoch)
            log = run_epoch(method, optimizer, cfg, runtime, epoch, gen, scaler, desc, end_epoch=end)
            logs.append(log)
            if after_epoch is not None:
                after_epoch(log)
    finally:
        if wrapped:
            distributed.release(method)
    return logs

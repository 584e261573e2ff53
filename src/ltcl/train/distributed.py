"""Multi-process (multi-GPU / multi-node) training with ``torch.distributed``: DDP, NCCL on
GPUs and gloo on CPU.

A stage runs distributed when it was started by ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment) or, through ``ltcl.launch.maybe_torchrun``, when ``runtime.nproc`` > 1 (the stage script
then re-launches itself under ``python -m torch.distributed.run``, so ``dvc repro`` just works).

How a step works with R processes (ranks) and a global batch of B images:

* Every rank builds the same shuffled global batch (``epoch_batches`` is seeded per epoch
  identically everywhere) and takes its own contiguous slice of B / R indices
  (:func:`shard`): the distributed sampler.
* Each rank embeds its slice; the methods all-gather the embeddings *with gradients*
  (:func:`all_gather_with_grad`) so the contrastive loss of every rank is the loss of the
  whole global batch, exactly as one process computing B images would get.
* The trainable modules are wrapped in ``DistributedDataParallel``, which averages gradients
  over ranks.  Why no rescaling is needed: every rank computes the *same* global loss L.  The
  backward of ``torch.distributed.nn.functional.all_gather`` sums the incoming gradients of
  all ranks (reduce-scatter), so rank r's local embeddings receive sum_k dL/dz_r = R dL/dz_r,
  and its parameter gradient is R g_r, with g_r the part of the single-process gradient that
  flows through rank r's images.  DDP's average then gives (1/R) sum_r R g_r = sum_r g_r, the
  single-process gradient (``tests/test_ddp.py`` checks this numerically).  A hand-written
  gather that passes back only the local slice of the gradient would need a factor R instead.
* Batch norm: on CUDA the model's BatchNorms become ``SyncBatchNorm`` (statistics over the
  global batch); on CPU (gloo) statistics stay per rank, as SyncBatchNorm is GPU-only.
* Rank 0 alone writes checkpoints, metrics and curves; the stage ends with a barrier.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

from ltcl.collectives import env_world_size, is_distributed, is_initialized, rank, rank_seed, world_size
from ltcl.errors import UserError
from ltcl.registry import entry, entry_of


def init_from_env(runtime_cfg) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT); returns ``(rank, world_size)``, ``(0, 1)`` when not
    launched by torchrun.  NCCL when the runtime device (``runtime_cfg.device``, the params'
    ``runtime.device``) is CUDA (each rank then takes the GPU of its LOCAL_RANK), gloo otherwise.
    Idempotent."""
    if is_initialized():
        return rank(), world_size()
    world = env_world_size()
    if world <= 1:
        return 0, 1
    from ltcl.runtime import resolve_device

    name = runtime_cfg.device
    device = resolve_device(name)
    backend = "gloo"
    if device.type == "cuda":
        if ":" in name:
            raise UserError(f"runtime.device={name!r} pins every rank to one GPU; with torchrun / runtime.nproc > 1 "
                             "use runtime.device: cuda (or auto): each rank takes the GPU of its LOCAL_RANK")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    dist.init_process_group(backend=backend, init_method="env://")
    return rank(), world_size()


# -- the distributed sampler ------------------------------------------------------------
def shard(idx: torch.Tensor, rank_: Optional[int] = None, world: Optional[int] = None) -> torch.Tensor:
    """Rank ``rank_``'s contiguous slice of a global batch of indices (``len(idx) / world``
    of them; the slices of all ranks are disjoint and cover the batch)."""
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    if world == 1:
        return idx
    if len(idx) % world:
        raise UserError(f"a global batch of {len(idx)} images cannot be split evenly over {world} processes; "
                         f"make batch_size a multiple of runtime.nproc")
    b = len(idx) // world
    return idx[rank_ * b: (rank_ + 1) * b]


def shard_batches(batches: list[torch.Tensor], rank_: int, world: int) -> list[torch.Tensor]:
    """:func:`shard` applied to every global batch of an epoch."""
    return [shard(b, rank_, world) for b in batches]


@contextmanager
def rank_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Inside, the global torch RNG (augmentation) is seeded from ``seed`` and the rank, so
    ranks draw different augmentations; on exit the previous (rank-identical) state returns."""
    if not is_distributed():
        yield
        return
    devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(rank_seed(seed))
        yield


# -- DDP ---------------------------------------------------------------------------
class StepModule(nn.Module):
    """Makes one training step of a method a module's forward, so that DDP wraps every
    trainable tensor of the method (encoder plus extra ones: SDCLR's pruned-branch norms, ...)
    and hooks their gradients.  ``forward(idx)`` returns the loss; the full ``StepOutput`` is
    kept in ``self.last``."""

    def __init__(self, method) -> None:
        super().__init__()
        object.__setattr__(self, "method", method)  # not a submodule: the method is no nn.Module
        self.model = method.model
        own = {id(p) for p in self.model.parameters()}
        self.extra = nn.ParameterList([p for p in method.parameters() if id(p) not in own])
        self.last = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.last = self.method.training_step(idx)
        return self.last.loss


def unsupported(name: str) -> str:
    return (f"method {name!r} does not support DDP yet (runtime.nproc > 1 or torchrun); "
            "run it in one process (runtime.nproc: 1)")


def check_stage(stage: str, params, world: int) -> None:
    """UserError, before any work, when ``stage`` ("pretrain" or "distill") cannot run in
    ``world`` processes with these params (method without DDP support, indivisible batch)."""
    if world <= 1:
        return
    if stage == "pretrain":
        cfg, name = params.pretrain, params.pretrain.method
    elif stage == "distill":
        cfg, name = params.distill, params.distill.method
        if not cfg.enabled:
            return
    else:
        return
    if not entry(stage, name).ddp:
        raise UserError(unsupported(name))
    if cfg.batch_size % world:
        raise UserError(f"{stage}.batch_size={cfg.batch_size} must be a multiple of the number of processes "
                        f"({world}): each process takes an equal slice of the global batch")


def prepare(method, cfg, runtime) -> None:
    """Under a process group of more than one rank, check the method supports it, convert its
    BatchNorms to SyncBatchNorm on CUDA and wrap its step in DistributedDataParallel
    (``method.ddp``; the loop calls ``method.step``).  No-op in a single process."""
    if not is_distributed():
        return
    registered = entry_of(type(method))
    if registered is None or not registered.ddp:
        raise UserError(unsupported(method.name))
    world = world_size()
    if cfg.batch_size % world:
        raise UserError(f"batch_size={cfg.batch_size} must be a multiple of the number of processes ({world}): "
                         "each process takes an equal slice of the global batch")
    from torch.nn.parallel import DistributedDataParallel as DDP

    if runtime.device.type == "cuda":
        # SyncBatchNorm keeps the same Parameter objects, so the optimiser needs no rebuild.
        method.model = nn.SyncBatchNorm.convert_sync_batchnorm(method.model)
        dev = runtime.device.index if runtime.device.index is not None else torch.cuda.current_device()
        method.ddp = DDP(StepModule(method), device_ids=[dev], output_device=dev)
    else:
        method.ddp = DDP(StepModule(method))


def release(method) -> None:
    """Drop the DDP wrapper after training (the method and its model stay usable)."""
    method.ddp = None

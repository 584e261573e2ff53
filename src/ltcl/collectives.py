"""Process-group queries and collectives (rank, world size, all-gather, broadcast).

A leaf module: methods gather embeddings over ranks through it and stages ask it whether they
are rank 0, without importing the training layer (``ltcl.train.distributed`` launches and wraps
DDP on top of it).  Every function is the identity / a no-op in a single process.  Why the
all-gather needs no gradient rescaling is explained in ``ltcl.train.distributed``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import torch
import torch.distributed as dist

# torch 2.14 marks torch.distributed.nn.functional.all_gather deprecated in favour of a private
# module (_functional_collectives); the public autograd-aware function is kept on purpose.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")


def env_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_distributed() -> bool:
    return world_size() > 1


def rank_seed(seed: int) -> int:
    """A seed of this rank's own random stream from ``seed``, which every rank holds alike (the
    augmentation's, ``ltcl.train.distributed.rank_rng``; BCL's RandAugment draws)."""
    return (int(seed) * 1_000_003 + rank()) % (2 ** 63 - 1)


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the one process that writes outputs.
    Before the process group exists, falls back to torchrun's ``RANK``."""
    return rank() == 0 if is_initialized() else env_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Barrier, then leave the process group (end of a distributed stage)."""
    if is_initialized():
        if world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (same shape on every rank) over ranks along dim 0, in rank order,
    keeping the autograd graph: gradients reach every rank's local rows (the backward sums
    the gradients of all ranks; see the module docstring for why no rescaling follows).
    Identity in a single process."""
    if not is_distributed():
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()), dim=0)


@torch.no_grad()
def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` over ranks along dim 0 without gradients (indices, labels, domains)."""
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; move tensors to the CPU first)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and hand its (picklable, CPU) result to every rank: for
    work whose result must be identical everywhere (k-means, kNN, OOD sampling)."""
    if not is_distributed():
        return fn()
    return broadcast_object(fn() if rank() == 0 else None)

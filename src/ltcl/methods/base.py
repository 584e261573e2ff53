"""What every pre-training method offers the training loop.

The loop (``ltcl.train.loop``) knows nothing about any method: it asks the method for the
size of an epoch, calls ``on_epoch_start`` between epochs (methods refresh pseudo-labels,
neighbours, prototypes or queues there) and ``training_step`` per batch of indices.
Methods are looked up by name in one registry (``ltcl.registry``) so a new method is one
module plus one line there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from ltcl.data.rows import DiskRows
from ltcl.errors import UserError
from ltcl.runtime import Runtime

LAZY_MIN_BYTES = 512 << 20  # split files from this size on are read by rows on the CPU, not loaded


@dataclass
class TrainSet:
    """Images a method trains on, kept as uint8 NHWC on the training device (or, for a
    paper-scale split on the CPU, read from its file by rows: ``x`` is then a ``DiskRows``).

    ``domain`` is 0 for in-distribution (ID) images and 1 for sampled OOD images;
    ``labels`` holds the long-tailed split's labels (-1 for OOD) and is only read by the
    supervised methods (GloCo, ProCo, GML).
    """

    x: torch.Tensor
    domain: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_id(self) -> int:
        return int((self.domain == 0).sum())

    @property
    def has_ood(self) -> bool:
        return bool((self.domain != 0).any())

    @classmethod
    def from_numpy(cls, x, y, num_classes: int, device: torch.device) -> "TrainSet":
        """A training set of images ``x`` (array or memory map of a split file) on ``device``.

        A split file of at least :data:`LAZY_MIN_BYTES` stays on disk when training on the CPU
        (:class:`~ltcl.data.rows.DiskRows` reads the rows of each batch); on an accelerator it is
        streamed into device memory once. Smaller splits are read into memory."""
        if isinstance(x, np.memmap) and x.nbytes >= LAZY_MIN_BYTES:
            xt = DiskRows(x.filename).to(device)
        else:
            xt = torch.from_numpy(np.array(x, dtype=np.uint8)).to(device)
        yt = torch.as_tensor(y, dtype=torch.long).to(device)
        return cls(x=xt, domain=torch.zeros(len(xt), dtype=torch.long, device=device), labels=yt,
                   num_classes=num_classes)

    def with_extra(self, x_extra: torch.Tensor, domain_value: int = 1) -> "TrainSet":
        """ID images followed by extra images (sampled OOD, or augmented ID copies)."""
        n = int(x_extra.shape[0])
        dev = self.x.device
        return TrainSet(
            x=self.x.concat(x_extra) if isinstance(self.x, DiskRows) else torch.cat([self.x, x_extra.to(dev)]),
            domain=torch.cat([self.domain, torch.full((n,), domain_value, dtype=torch.long, device=dev)]),
            labels=torch.cat([self.labels, torch.full((n,), -1, dtype=torch.long, device=dev)]),
            num_classes=self.num_classes,
        )


@dataclass
class StepOutput:
    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)
    images: int = 0  # images forwarded through the encoder in this step (for images/s)


class Method:
    """Base class of pre-training methods (SimCLR-like two-view contrastive learning).

    Distributed training (``ltcl.train.distributed``): a method that computes its loss on
    embeddings gathered over ranks (:meth:`gather`, :meth:`gather_ids`), so that every rank's
    loss is the global batch's, says ``ddp=True`` in its registry entry (``ltcl.registry``).  An
    entry's flag defaults to False, so a new method that subclasses one with DDP support must be
    checked and opt in again, otherwise training under torchrun stops with "method X does not
    support DDP yet" instead of silently computing a per-rank loss.  Whether it reads labels is
    its entry's ``supervised``.
    """

    name = "base"

    def __init__(self, model: nn.Module, data: TrainSet, cfg, runtime: Runtime, augment: nn.Module,
                 refresh_every: Optional[int] = None):
        # epochs between refreshes of method state (PSD's neighbours): the pretrain stage passes
        # ood.interval; None refreshes only when the training set changes (set_data)
        self.refresh_every = None if refresh_every is None else max(1, int(refresh_every))
        self.model = runtime.maybe_compile(model)
        self.data = data
        self.cfg = cfg
        self.runtime = runtime
        self.augment = augment
        self.epoch = 0

    # -- the loop's interface -------------------------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def num_samples(self) -> int:
        return len(self.data)

    def set_data(self, data: TrainSet) -> None:
        """Replace the training set (the OOD sampler calls this every T epochs)."""
        self.data = data

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def training_step(self, idx: torch.Tensor) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def ddp(self) -> Optional[nn.Module]:
        """The DistributedDataParallel step set by ``ltcl.train.distributed.prepare`` (None in
        one process).  Kept in a tuple, not as a module attribute, so that the resume
        checkpoint (which saves every module attribute of a method) never stores the wrapper."""
        return self.__dict__.get("_ddp_holder", (None,))[0]

    @ddp.setter
    def ddp(self, module: Optional[nn.Module]) -> None:
        self.__dict__["_ddp_holder"] = (module,)

    def step(self, idx: torch.Tensor) -> StepOutput:
        """What the loop calls: ``training_step`` on this rank's indices, through
        DistributedDataParallel when training runs in several processes."""
        if self.ddp is None:
            return self.training_step(idx)
        loss = self.ddp(idx)
        out = self.ddp.module.last
        out.loss = loss
        return out

    def state_dict(self) -> dict:
        return {}

    # -- what a stage reports of the method (ltcl.pipeline.distill) -----------
    setup_seconds: Optional[float] = None  # seconds its from_stage spent preparing (KDUP: f's guidance)

    def stage_metrics(self) -> dict:
        """What the stage's metrics report of this run besides the session's summary."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    # -- shared helpers ---------------------------------------------------------
    def embed(self, x: torch.Tensor, forward: Optional[Callable] = None) -> torch.Tensor:
        """Projection output (float32) of a float NCHW batch under the runtime's autocast."""
        with self.runtime.autocast():
            if forward is None:
                _, z = self.model(x)
            else:
                z = forward(x)
        return z.float()

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s rows of every rank, concatenated in rank order, with gradients (identity in
        one process): contrastive losses then see the global batch."""
        from ltcl.collectives import all_gather_with_grad

        return all_gather_with_grad(t)

    def gather_ids(self, t: torch.Tensor) -> torch.Tensor:
        """Like :meth:`gather` for tensors without gradients (indices, domains, labels)."""
        from ltcl.collectives import all_gather_tensor

        return all_gather_tensor(t)

    def norm_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) the augmentation normalises with, for un-augmented passes."""
        return self.augment.mean.flatten().tolist(), self.augment.std.flatten().tolist()

    def embed_all(self):
        """L2-normalised projections (numpy, N x d) of every training image, no augmentation."""
        from ltcl.models.features import embed_images

        return embed_images(self.model, self.data.x, *self.norm_stats(), self.runtime)

    def views(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views of the images at ``idx``."""
        x = self.data.x[idx]
        return self.augment(x), self.augment(x)


def keep_id_rows(state: torch.Tensor, num_id: int, num_samples: int) -> torch.Tensor:
    """A per-sample state (BCL's loss memory, GH's logit average, their seen masks) for a new
    training set of ``num_samples`` rows: its ID rows (the first ``num_id``) kept, the new rows zero."""
    out = torch.zeros((num_samples, *state.shape[1:]), dtype=state.dtype, device=state.device)
    keep = min(int(num_id), len(state))
    out[:keep] = state[:keep]
    return out


def labelled_counts(data: TrainSet) -> torch.Tensor:
    """Per-class counts of the labelled (ID) images; refuses a training set with OOD images."""
    if data.has_ood or bool((data.labels < 0).any()):
        raise UserError("supervised methods train on the labelled long-tailed split only; "
                         "set ood.strategy: none")
    return torch.bincount(data.labels, minlength=data.num_classes)

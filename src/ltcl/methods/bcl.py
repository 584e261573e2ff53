"""BCL-I, Boosted Contrastive Learning (Zhou et al., ICML 2022, "Contrastive Learning with Boosted
Memorization"; released code MediaBrain-SJTU/BCL@a2342f8): SimCLR whose views get RandAugment ops
with a probability w_i and a strength that grow with how badly the network memorises sample i,
measured by a momentum average of its contrastive loss.

The step (train.py:137-156 of the released code):

* the gradient is SimCLR's, the mean NT-Xent of the two views (``nt_xent``, train.py:156), plus
  alpha * L_DD with OOD images as every SimCLR-family method here;
* each view is SimCLR's augmentation (``SimCLRAugment.unnormalised``), then, for the samples whose
  drawn ops are applied, the drawn RandAugment ops on the uint8 image
  (:mod:`ltcl.data.randaugment`, bit-exact against the PIL calls of data/randaug.py), then the
  normalisation (data/memoboosted_cifar100.py:40-46);
* after the step, each sample's loss of this step (:func:`ltcl.losses.bcl.nt_xent_per_sample`, the
  mean of its two views' anchor losses) updates the memory m_i (first sight: m_i = loss; then
  m_i = (1 - beta) loss + beta m_i; train.py:146-153);
* at the start of every epoch after the first, the weights w = :func:`~ltcl.losses.bcl.momentum_weights`
  of the memory (train.py:113-115, data/memoboosted_cifar100.py:6-11); in the first epoch w = 0,
  so no RandAugment op is applied.

The RandAugment draws (op, applied, sign, magnitude; :func:`ltcl.losses.bcl.randaugment_draws`) come
from the method's own ``torch.Generator``, seeded by ``pretrain.seed`` and saved for resume, so the
SimCLR augmentation (torch's global generator) draws the same parameters as SimCLR does: with
w = 0 the views are bit-identical to SimCLR's.

Deviations from the released code (docs/deviations.md):

1. The images are quantised to uint8 (``round(255 x)``) only where an op is applied, after ltcl's
   float SimCLR augmentation; the released pipeline is PIL throughout (uint8 after every op).
2. A sample that an epoch's batches leave out (ltcl drops the last incomplete batch) keeps its
   memory; the released loader visits every sample every epoch.
3. OOD rows (KDUP's sampled images, paper 003) start a fresh memory after every re-sampling; the
   released code has no OOD images.
4. Under DDP (torchrun) the per-sample losses are those of the gathered global batch and update
   the memory at the gathered indices, so every rank holds the same memory; each rank's
   RandAugment draws come from a per-step generator seeded by one draw of the shared generator
   and the rank (ranks draw different ops, the shared generator stays rank-identical and is what
   the resume state saves).  The released code trains in one process (train.py).
5. Random draws from a ``torch.Generator`` instead of Python's ``random`` (the distribution, not the
   stream, of data/randaug.py:199-213).
"""

from __future__ import annotations

import torch

from ltcl.collectives import is_distributed, rank_seed
from ltcl.data.randaugment import OPS, cutout_centres
from ltcl.errors import UserError
from ltcl.losses.bcl import (
    AUGMENT_OPS,
    momentum_loss_update,
    momentum_weights,
    nt_xent_per_sample,
    randaugment_draws,
)
from ltcl.methods.base import StepOutput, keep_id_rows
from ltcl.methods.contrastive import SimCLR

SEED_STREAM = 0xBC1  # the method's generator: seeded by (pretrain.seed, this), apart from torch's global one


def apply_randaugment(x01: torch.Tensor, op: torch.Tensor, applied: torch.Tensor, value: torch.Tensor,
                      generator: torch.Generator) -> torch.Tensor:
    """RandAugment's drawn ops on a float NCHW batch in [0, 1] (one view): for each of the k slots
    in turn, the rows whose op is applied are quantised to uint8, transformed by their op with their
    value (:data:`ltcl.data.randaugment.OPS`; Cutout's centre drawn from ``generator``) and put back
    as ``uint8 / 255``; rows with no applied op are returned unchanged (bit for bit).

    ``op``, ``applied``, ``value``: (N, k) of :func:`ltcl.losses.bcl.randaugment_draws` for this view."""
    out = x01.clone()
    n, _, h, w = x01.shape
    for slot in range(op.shape[1]):
        for o in torch.unique(op[:, slot][applied[:, slot]]).tolist():
            rows = torch.nonzero(applied[:, slot] & (op[:, slot] == o)).flatten()
            name = AUGMENT_OPS[o].name
            img = (out[rows] * 255.0).round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            v = value[rows, slot].to(device=img.device)
            if name == "Cutout":
                cx, cy = cutout_centres(len(rows), h, w, generator=generator)
                img = OPS[name](img, v, cx.to(img.device), cy.to(img.device))
            else:
                img = OPS[name](img, v)
            out[rows] = img.permute(0, 3, 1, 2).to(out.dtype) / 255.0
    return out.contiguous(memory_format=torch.channels_last)


class BCL(SimCLR):
    name = "bcl"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not hasattr(self.augment, "unnormalised"):
            raise UserError("pretrain.method=bcl applies RandAugment between SimCLR's augmentation and its "
                            "normalisation: it needs ltcl's SimCLRAugment")
        n, dev = len(self.data), self.data.x.device
        self.memory = torch.zeros(n, dtype=torch.float64, device=dev)
        self.seen = torch.zeros(n, dtype=torch.bool, device=dev)
        self.weights = torch.zeros(n, dtype=torch.float64, device=dev)
        self.generator = torch.Generator().manual_seed(int(self.cfg.seed) * 65536 + SEED_STREAM)

    # -- memory across training sets and epochs ------------------------------------------------
    def set_data(self, data) -> None:
        """A new training set (an OOD re-sampling): the ID rows keep their memory, the new OOD
        rows start unseen."""
        dev = data.x.device
        self.memory = keep_id_rows(self.memory.to(dev), data.num_id, len(data))
        self.seen = keep_id_rows(self.seen.to(dev), data.num_id, len(data))
        self.weights = self._weights()
        super().set_data(data)

    def _weights(self) -> torch.Tensor:
        """w of the memory over the samples seen so far (zeros while fewer than two have a memory or
        all memories are equal, where the released formula divides by zero; unseen rows 0)."""
        if int(self.seen.sum()) < 2 or bool((self.memory[self.seen] == self.memory[self.seen][0]).all()):
            return torch.zeros_like(self.memory)
        w = torch.zeros_like(self.memory)
        w[self.seen] = momentum_weights(self.memory[self.seen])
        return w

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.weights = self._weights()  # epoch 0: nothing seen, w = 0 (released: weights start at 0)

    # -- the step ----------------------------------------------------------------------------------
    def step_generator(self) -> torch.Generator:
        """The generator of this step's RandAugment draws: the method's own in one process; under DDP
        one seeded by a draw of it and the rank (every rank advances the shared one alike)."""
        if not is_distributed():
            return self.generator
        shared = int(torch.randint(2 ** 62, (1,), generator=self.generator))
        return torch.Generator().manual_seed(rank_seed(shared))

    def views(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.data.x[idx]
        own = self.cfg.own
        gen = self.step_generator()
        draws = randaugment_draws(self.weights[idx], own.rand_k, own.rand_strength, gen, views=2)
        value = draws.value
        out = []
        for view in range(2):
            x01 = self.augment.unnormalised(x)
            if bool(draws.applied[:, view].any()):
                x01 = apply_randaugment(x01, draws.op[:, view], draws.applied[:, view], value[:, view], gen)
            out.append(self.augment.normalise(x01))
        return out[0], out[1]

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        out, z1, z2 = self.contrastive_step(idx)  # SimCLR's step on this method's views (the global batch)
        with torch.no_grad():
            per_sample = nt_xent_per_sample(z1.detach().double(), z2.detach().double(), self.temperature())
            ids = self.gather_ids(idx)  # the global batch's indices, in the order of z1, z2 (idx in one process)
            self.memory, self.seen = momentum_loss_update(self.memory, self.seen, ids, per_sample, self.cfg.own.beta)
        return out

    # -- resume (the generator is saved with every generator a method holds: ltcl.train.resume) ---
    def state_dict(self) -> dict:
        return {**super().state_dict(), "memory": self.memory.cpu(), "seen": self.seen.cpu()}  # GH's with pretrain.gh

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "memory" in state:
            dev = self.data.x.device
            self.memory, self.seen = state["memory"].to(dev), state["seen"].to(dev)
            self.weights = self._weights()

"""Two-view contrastive pre-training: SimCLR, SDCLR and KDUP's pseudo semantic discrimination.

* ``simclr``  NT-Xent between two augmented views (Chen et al. 2020).
* ``sdclr``   SimCLR whose second view goes through a globally magnitude-pruned copy of the
              backbone, re-pruned every epoch (Jiang et al. 2021, "Self-Damaging Contrastive
              Learning").  ``pretrain.pruned_branch: true`` adds the same pruned branch to ``psd``.
* ``psd``     KDUP's pre-training loss (paper 003, Sec. 3.1.2, Eq. 8-10): positives of an
              instance are its other view plus its ``pretrain.psd.k_pos`` nearest neighbours within its own
              domain (ID or OOD), found by cosine on the current embeddings every ``interval``
              epochs and brought into the batch; negatives are the other samples of the batch.

Whenever the training set holds sampled OOD images (domain 1) and ``alpha > 0``, every method
here adds alpha * L_DD, the domain discrimination loss (from COLT), so ``simclr`` +
``ood.strategy: colt`` is COLT and ``psd`` + ``kdup`` is KDUP (Eq. 10).  ``pretrain.domain_loss``
picks L_DD: ``eq9`` is paper 003's Eq. 9 (``ltcl.losses.kdup.domain_loss``), ``colt`` the term as
COLT's released code computes it (``domain_loss_colt``: the full NT-Xent denominator).

Under DDP (``ltcl.train.distributed``) each rank embeds its slice of the global batch and the
embeddings (with gradients), indices and domains are all-gathered before the losses, so every
rank computes the loss of the whole global batch, as a single process would.
"""

from __future__ import annotations

import torch

from ltcl.losses.contrastive import nt_xent
from ltcl.losses.kdup import domain_loss, domain_loss_colt, psd_loss
from ltcl.methods.base import Method, StepOutput
from ltcl.methods.gh import Harmonizer
from ltcl.models.pruning import PrunedBranchNorms, global_magnitude_masks, pruned_forward

# pretrain.domain_loss -> L_DD
DOMAIN_LOSSES = {"eq9": domain_loss, "colt": domain_loss_colt}


class SimCLR(Method):
    name = "simclr"
    pruned_branch = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.masks: dict | None = None
        # SDCLR keeps separate BatchNorms for the pruned branch (dual BN).
        self.pruned_norms = (PrunedBranchNorms(self.model).to(self.data.x.device)
                             if self.uses_pruning else None)
        # Geometric Harmonization on top of the loss (pretrain.gh; the methods whose entry says gh=True)
        self.gh = (Harmonizer(self.cfg, len(self.data), self.model.proj_dim, self.data.x.device)
                   if self.cfg.gh.enabled else None)

    def parameters(self):
        yield from self.model.parameters()
        if self.pruned_norms is not None:
            yield from self.pruned_norms.parameters()

    @property
    def uses_pruning(self) -> bool:
        return self.pruned_branch or self.cfg.pruned_branch

    def temperature(self) -> float:
        """Temperature of the contrastive term at the current epoch (TS overrides it)."""
        return float(self.cfg.temperature)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.uses_pruning:
            # SDCLR re-prunes the current dense weights at the start of every epoch.
            self.masks = global_magnitude_masks(self.model, self.cfg.prune_ratio)

    def _pruned(self, x: torch.Tensor) -> torch.Tensor:
        return pruned_forward(self.model, self.masks, x, norms=self.pruned_norms)[1]

    def encode_pair(self, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections of both views: one dense forward of the concatenated batch, or, with
        SDCLR, view 1 through the dense and view 2 through the pruned backbone."""
        if self.uses_pruning:
            return self.embed(v1), self.embed(v2, forward=self._pruned)
        z = self.embed(torch.cat([v1, v2]))
        return z[: len(v1)], z[len(v1):]

    def add_domain_loss(self, loss, parts, z, domain):
        """loss + alpha * L_DD (``pretrain.domain_loss``) when the rows span more than one domain;
        under DDP ``z`` and ``domain`` are the gathered global batch."""
        alpha = float(self.cfg.alpha)
        if alpha > 0 and bool((domain != domain[0]).any()):
            dd = DOMAIN_LOSSES[self.cfg.domain_loss](z, domain, self.temperature())
            parts["dd"] = float(dd.detach())
            loss = loss + alpha * dd
        return loss

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        return self.contrastive_step(idx)[0]

    def contrastive_step(self, idx: torch.Tensor) -> tuple[StepOutput, torch.Tensor, torch.Tensor]:
        """SimCLR's step and the projections of its two views (the global batch under DDP), for a
        method that also reads them (BCL's loss memory)."""
        v1, v2 = self.views(idx)
        z1, z2 = self.encode_pair(v1, v2)
        z1, z2 = self.gather(z1), self.gather(z2)  # the global batch under DDP (identity otherwise)
        loss = nt_xent(z1, z2, self.temperature())
        parts = {"contrastive": float(loss.detach())}
        dom = self.gather_ids(self.data.domain[idx])
        loss = self.add_domain_loss(loss, parts, torch.cat([z1, z2]), torch.cat([dom, dom]))
        if self.gh is not None:
            loss = self.add_gh(loss, parts, z1, z2, self.gather_ids(idx))
        return StepOutput(loss=loss, parts=parts, images=2 * len(idx)), z1, z2

    def add_gh(self, loss, parts, z1, z2, ids):
        """loss + w L_GH after GH's warm-up, then GH's per-step update (:mod:`ltcl.methods.gh`); under
        DDP ``z1``, ``z2`` and ``ids`` are the gathered global batch, so every rank keeps the same state."""
        term = self.gh.term(z1, z2, self.epoch)
        if term is not None:
            parts["gh"] = float(term.detach())
            loss = loss + term
        self.gh.after_step(z1, ids, self.epoch)
        return loss

    def set_data(self, data) -> None:
        if self.gh is not None:
            self.gh.set_data(data.num_id, len(data))
        super().set_data(data)

    def state_dict(self) -> dict:
        return {} if self.gh is None else {"gh": self.gh.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.gh is not None and "gh" in state:
            self.gh.load_state_dict(state["gh"])


class SDCLR(SimCLR):
    name = "sdclr"
    pruned_branch = True


class PseudoSemanticDiscrimination(SimCLR):
    """KDUP pre-training (paper 003 Eq. 8-10) with neighbour positives brought into the batch."""
    name = "psd"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.neighbours: torch.Tensor | None = None  # (N, k_pos) indices into self.data
        self._stale = True

    def set_data(self, data) -> None:
        super().set_data(data)
        self._stale = True

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        due = self.refresh_every is not None and epoch % self.refresh_every == 0
        if self.cfg.own.k_pos > 0 and (self._stale or due):
            from ltcl.collectives import on_main

            # under DDP rank 0 computes the neighbours and every rank uses the same ones
            self.neighbours = on_main(lambda: self.compute_neighbours().cpu()).to(self.data.x.device)
            self._stale = False

    @torch.no_grad()
    def compute_neighbours(self) -> torch.Tensor:
        from ltcl.sampling.neighbours import domain_knn  # local: sampling imports faiss

        z = self.embed_all()
        return domain_knn(z, self.data.domain.cpu(), self.cfg.own.k_pos).to(self.data.x.device)

    def positive_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """pos[a, b]: rows a and b show the same image, or one is among the other's K_pos
        nearest neighbours (symmetric); the diagonal is ignored by ``psd_loss``."""
        pos = ids[:, None] == ids[None, :]
        if self.neighbours is not None and self.neighbours.shape[1] > 0:
            nb = self.neighbours[ids]  # (M, K)
            near = (nb[:, :, None] == ids[None, None, :]).any(1)  # b in N(a)
            pos = pos | near | near.T
        return pos

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        v1, v2 = self.views(idx)
        ids = [idx, idx]
        if self.neighbours is not None and self.cfg.own.k_pos > 0:
            nb = self.neighbours[idx].reshape(-1)
            ids.append(nb)
            v1 = torch.cat([v1, self.augment(self.data.x[nb])])
        z1, z2 = self.encode_pair(v1, v2)
        # order rows as [anchors view 1, anchors view 2, neighbours]; under DDP each block is
        # gathered over ranks, which gives the single-process order of the global batch
        b = len(idx)
        blocks = [z1[:b], z2] + ([z1[b:]] if len(ids) > 2 else [])
        z = torch.cat([self.gather(t) for t in blocks])
        ids_all = torch.cat([self.gather_ids(i) for i in ids])
        loss = psd_loss(z, self.positive_mask(ids_all), self.temperature())
        parts = {"psd": float(loss.detach())}
        loss = self.add_domain_loss(loss, parts, z, self.data.domain[ids_all])
        return StepOutput(loss=loss, parts=parts, images=len(ids_all))

    def state_dict(self) -> dict:
        return {"neighbours": None if self.neighbours is None else self.neighbours.cpu()}

    def load_state_dict(self, state: dict) -> None:
        nb = state.get("neighbours")
        self.neighbours = None if nb is None else nb.to(self.data.x.device)
        self._stale = nb is None

"""GloCo and ProCo (paper 001), supervised: they read the labels of the long-tailed split
(their registry entries say ``supervised=True``; the report marks their rows) and train on labelled ID images only.

* ``gloco``       (paper 001, Sec. 3.1-3.2): every anchor gets k = ``pretrain.gloco.k`` global positives of
                  its class, drawn by :func:`~ltcl.losses.gloco.sample_global_positive_indices`
                  from the whole training set (not the batch), and augmented; the unsupervised
                  contrastive form of Eq. 1 (:func:`~ltcl.losses.gloco.gloco_simclr_loss`) with
                  the adaptive per-class temperature of Eq. 13
                  (tau_c = gamma + (tau_max - gamma) n_c / n_max, gamma = ``pretrain.gloco.gamma``).
* ``gloco-proco`` (Sec. 3.3): + a coreset of the training set chosen once, at the first epoch, by
                  k-center greedy (Sener & Savarese 2018; the paper uses GRAD-MATCH, Killamsetty
                  et al. 2021, which needs per-sample gradients) on the projections, per class
                  (``coreset`` of each class, at least one image); class prototypes from two
                  augmented views of the coreset recomputed at the start of every epoch; the
                  symmetric prototype loss (:func:`~ltcl.losses.proco.proco_loss`, temperature
                  ``pretrain.temperature``); L = a L_GloCo + (1 - a) L_ProCo, a = ``alpha``.
                  Its subsection ``pretrain.gloco-proco`` holds GloCo's keys (k, gamma, tau_max) and
                  ProCo's (alpha, coreset): the GloCo code below reads them from it (``cfg.own``).
"""

from __future__ import annotations

import torch

from ltcl.errors import UserError
from ltcl.losses.gloco import adaptive_temperature, gloco_simclr_loss, sample_global_positive_indices
from ltcl.losses.proco import class_prototypes, kcenter_greedy_per_class, proco_loss
from ltcl.methods.base import StepOutput, labelled_counts
from ltcl.methods.contrastive import SimCLR


class GloCo(SimCLR):
    name = "gloco"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.uses_pruning:
            raise UserError(f"pretrain.pruned_branch is not supported with pretrain.method={self.name}")
        counts = labelled_counts(self.data)
        self.class_tau = adaptive_temperature(counts.float(), self.cfg.own.gamma, self.cfg.own.tau_max) \
            .to(self.data.x.device)
        self.labels_cpu = self.data.labels.cpu()
        self.generator = torch.Generator().manual_seed(int(self.cfg.seed))

    def gloco_term(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L_GloCo (Eq. 1 with Eq. 13 temperatures) of the anchors ``idx``, and their two views' z."""
        k, b = int(self.cfg.own.k), len(idx)
        glob = sample_global_positive_indices(idx.cpu(), self.labels_cpu, k, generator=self.generator)
        x = self.data.x
        v1, v2 = self.views(idx)
        vg = self.augment(x[glob.reshape(-1).to(x.device)])
        z = self.embed(torch.cat([v1, v2, vg]))
        z1, z2, zg = z[:b], z[b:2 * b], z[2 * b:].reshape(b, k, -1)
        tau = self.class_tau[self.data.labels[idx]]
        return gloco_simclr_loss(z1, z2, zg, tau), z1, z2

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        loss, _, _ = self.gloco_term(idx)
        return StepOutput(loss=loss, parts={"gloco": float(loss.detach())},
                          images=(2 + int(self.cfg.own.k)) * len(idx))


class GloCoProCo(GloCo):
    name = "gloco-proco"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.coreset: torch.Tensor | None = None
        self.prototypes: torch.Tensor | None = None  # (2, C, d)
        self.present: torch.Tensor | None = None  # (2, C) bool

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.coreset is None:
            z = torch.from_numpy(self.embed_all())
            self.coreset = kcenter_greedy_per_class(z, self.labels_cpu, self.cfg.own.coreset,
                                                    seed=int(self.cfg.seed)).to(self.data.x.device)
        self.refresh_prototypes()

    @torch.no_grad()
    def refresh_prototypes(self) -> None:
        """Two prototype sets, one per augmented view of the coreset (Sec. 3.3)."""
        was = self.model.training
        self.model.eval()
        try:
            x, y = self.data.x[self.coreset], self.data.labels[self.coreset]
            sets = [class_prototypes(self.embed(self.augment(x)), y, self.data.num_classes) for _ in range(2)]
        finally:
            self.model.train(was)
        self.prototypes = torch.stack([p for p, _ in sets])
        self.present = torch.stack([m for _, m in sets])

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        a = float(self.cfg.own.alpha)
        l_gloco, z1, z2 = self.gloco_term(idx)
        l_proco = proco_loss(torch.stack([z1, z2]), self.data.labels[idx], self.prototypes,
                             float(self.cfg.temperature), prototype_mask=self.present)
        loss = a * l_gloco + (1 - a) * l_proco
        return StepOutput(loss=loss, parts={"gloco": float(l_gloco.detach()), "proco": float(l_proco.detach())},
                          images=(2 + int(self.cfg.own.k)) * len(idx))

    def state_dict(self) -> dict:
        return {"coreset": None if self.coreset is None else self.coreset.cpu()}

    def load_state_dict(self, state: dict) -> None:
        c = state.get("coreset")
        self.coreset = None if c is None else c.to(self.data.x.device)

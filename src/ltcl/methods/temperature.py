"""Temperature-based remedies for long-tailed contrastive learning.

* ``ts``   (Kukleva et al. 2023, baseline of paper 000): SimCLR with a cosine temperature
           schedule tau(e) = tau_min + (tau_max - tau_min)(1 + cos(2 pi e / T)) / 2, constant within
           an epoch, as TS's released code runs it (annusha/temperature_schedules@3ac1db6
           train_simCLR.py:395-399, ``cos(pi e / t_max)``: T = 2 t_max): e counts the epochs from 1
           (its loop, train_simCLR.py:319 and 349), so ltcl's epoch i (from 0) is TS's epoch i + 1;
           T = ``pretrain.ts.period_fraction`` x ``pretrain.epochs`` (TS's runs: t_max 200 of 2,000
           epochs, T = 400).
* ``tase`` (paper 000, Eq. 6, Algorithm 1): SimCLR warm-up for B epochs, then k-means
           pseudo-labels (faiss, K = number of classes unless ``pretrain.tase.clusters``) on the
           projections, refreshed every F epochs; each anchor's temperature grows with the
           size of its pseudo-class (mapping ``pretrain.tase.mapping`` between ``tau_min`` and
           ``tau_max``, introduced linearly from B to S), and each negative j is weighted by
           1/sqrt(|D_j|).  Before B the loss is SimCLR's with ``pretrain.temperature``.
"""

from __future__ import annotations

import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.losses.schedules import cosine_temperature
from ltcl.losses.tase import tase_loss, tase_negative_weights, tase_temperatures
from ltcl.methods.base import StepOutput
from ltcl.methods.contrastive import SimCLR


class TemperatureSchedule(SimCLR):
    name = "ts"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = 0.0

    def period(self) -> float:
        """T in epochs: ``pretrain.ts.period_fraction`` x ``pretrain.epochs`` (TS's runs: 0.2 x 2,000 = 400)."""
        return float(self.cfg.own.period_fraction) * float(self.cfg.epochs)

    def temperature(self) -> float:
        own = self.cfg.own
        # TS's epochs count from 1 (train_simCLR.py:319, 349): ltcl's epoch i is its epoch i + 1
        return cosine_temperature(self.progress + 1.0, own.tau_min, own.tau_max, self.period())

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        out = super().training_step(idx)
        out.parts["tau"] = self.temperature()
        return out

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.progress = float(epoch)


class TASE(SimCLR):
    name = "tase"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes: torch.Tensor | None = None  # |D_j| of every sample's pseudo-class
        self.pseudo: np.ndarray | None = None

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        b = self.cfg.own.warmup
        if epoch >= b and (self.sizes is None or (epoch - b) % self.cfg.own.refresh == 0):
            self.refresh_pseudo_labels()

    @torch.no_grad()
    def refresh_pseudo_labels(self) -> None:
        from ltcl.sampling.clustering import assign_nearest, kmeans

        z = self.embed_all()
        k = self.cfg.own.clusters or self.data.num_classes
        if k > len(z):
            raise UserError(f"pretrain.tase.clusters={k} is larger than the training set ({len(z)})")
        labels = assign_nearest(z, kmeans(z, k, seed=self.cfg.seed + self.epoch))
        self.pseudo = labels
        self.sizes = torch.as_tensor(np.bincount(labels, minlength=k)[labels], dtype=torch.float32,
                                     device=self.data.x.device)

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        own = self.cfg.own
        if self.sizes is None:  # warm-up: plain SimCLR
            return super().training_step(idx)
        v1, v2 = self.views(idx)
        z1, z2 = self.encode_pair(v1, v2)
        sizes = self.sizes
        tau = tase_temperatures(sizes, own.tau_min, own.tau_max, self.epoch, own.warmup, own.full,
                                own.mapping, base_tau=self.cfg.temperature,
                                size_range=(float(sizes.min()), float(sizes.max())))[idx]
        weight = tase_negative_weights(sizes[idx])
        loss = tase_loss(z1, z2, tau, weight)
        parts = {"tase": float(loss.detach()), "tau_mean": float(tau.mean())}
        dom = self.data.domain[idx]
        loss = self.add_domain_loss(loss, parts, torch.cat([z1, z2]), torch.cat([dom, dom]))
        return StepOutput(loss=loss, parts=parts, images=2 * len(idx))

    def state_dict(self) -> dict:
        return {"pseudo": None if self.pseudo is None else torch.as_tensor(self.pseudo)}

    def load_state_dict(self, state: dict) -> None:
        pseudo = state.get("pseudo")
        if pseudo is None:
            self.pseudo, self.sizes = None, None
            return
        self.pseudo = pseudo.numpy()
        k = max(int(self.pseudo.max()) + 1, self.cfg.own.clusters or self.data.num_classes)
        self.sizes = torch.as_tensor(np.bincount(self.pseudo, minlength=k)[self.pseudo], dtype=torch.float32,
                                     device=self.data.x.device)

"""Supervised long-tailed methods: they read the labels of the long-tailed split (``supervised =
True``; the report marks their rows) and train on labelled ID images only.

* ``gloco``       (paper 001, Sec. 3.1-3.2): every anchor gets k = ``gloco_k`` global positives of
                  its class, drawn by :func:`~ltcl.losses.gloco.sample_global_positive_indices`
                  from the whole training set (not the batch), and augmented; the unsupervised
                  contrastive form of Eq. 1 (:func:`~ltcl.losses.gloco.gloco_simclr_loss`) with
                  the adaptive per-class temperature of Eq. 13
                  (tau_c = gamma + (tau_max - gamma) n_c / n_max, gamma = ``gloco_gamma``).
* ``gloco+proco`` (Sec. 3.3): + a coreset of the training set chosen once, at the first epoch, by
                  k-center greedy (Sener & Savarese 2018; the paper uses GRAD-MATCH, Killamsetty
                  et al. 2021, which needs per-sample gradients) on the projections, per class
                  (``proco_coreset`` of each class, at least one image); class prototypes from two
                  augmented views of the coreset recomputed at the start of every epoch; the
                  symmetric prototype loss (:func:`~ltcl.losses.proco.proco_loss`, temperature
                  ``pretrain.temperature``); L = a L_GloCo + (1 - a) L_ProCo, a = ``proco_alpha``.
* ``gml``         (paper 002, Sec. 3.3 "Training procedure", first step): the teacher, a backbone
                  with a cosine classifier trained by the logit-adjusted loss of Eq. 7 alone
                  (scale 1/tau_s = ``gml_scale``).  The student is trained in the distill stage
                  (:class:`GMLStudent`, ``distill.method: gml``).

:class:`GMLStudent` (paper 002, Sec. 3.2-3.3): a new network with a cosine classifier trained by
gamma L_cls (Eq. 7) + beta L_GML (Eq. 5, or Eq. 11 with ``gml_alpha``).  Contrast features come
from the frozen teacher and wait in class-wise queues of lengths k_m + (k - k_m |C|) p(c) (Eq. 6).
Choice (the paper leaves it open: its teacher has no trained MLP): the queues hold the teacher's
*backbone* features and the student's projection MLP is applied to the whole queue at every step,
so z_x and z_y share one MLP (Eq. 8) and no queued feature is stale (the staleness the paper's
teacher exists to avoid).  With ``gml_train_tau`` tau_g is a trained parameter, fitted by the
same loss on detached features with each query's own-sample contrast features left out (Sec. 3.3,
"Trainable temperature"; the encoder is trained at the current tau_g, detached).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ltcl.losses.gloco import adaptive_temperature, gloco_simclr_loss, sample_global_positive_indices
from ltcl.losses.gml import ClassQueues, gml_loss, gml_queue_lengths, log_prior_from_counts, \
    logit_adjusted_cosine_logits
from ltcl.losses.proco import class_prototypes, kcenter_greedy_per_class, proco_loss
from ltcl.methods.base import Method, StepOutput, TrainSet, register
from ltcl.methods.contrastive import SimCLR


def labelled_counts(data: TrainSet) -> torch.Tensor:
    """Per-class counts of the labelled (ID) images; refuses a training set with OOD images."""
    if data.has_ood or bool((data.labels < 0).any()):
        raise ValueError("supervised methods train on the labelled long-tailed split only; "
                         "set ood.strategy: none")
    return torch.bincount(data.labels, minlength=data.num_classes)


class CosineClassifier(nn.Module):
    """Weights m_c of the cosine classifier of paper 002 Eq. 7 (logits computed by
    :func:`~ltcl.losses.gml.logit_adjusted_cosine_logits`)."""

    def __init__(self, num_classes: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        w = torch.randn(num_classes, dim, generator=generator) / math.sqrt(dim)
        self.weight = nn.Parameter(w)

    def forward(self, h: torch.Tensor, log_prior: torch.Tensor, alpha: float, scale: float) -> torch.Tensor:
        return logit_adjusted_cosine_logits(h.float(), self.weight, log_prior, alpha, scale)


@register("gloco")
class GloCo(SimCLR):
    supervised = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.uses_pruning:
            raise ValueError(f"pretrain.sdclr is not supported with pretrain.method={self.name}")
        counts = labelled_counts(self.data)
        self.class_tau = adaptive_temperature(counts.float(), self.cfg.gloco_gamma, self.cfg.tau_max) \
            .to(self.data.x.device)
        self.labels_cpu = self.data.labels.cpu()
        self.generator = torch.Generator().manual_seed(int(self.cfg.seed))

    def gloco_term(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L_GloCo (Eq. 1 with Eq. 13 temperatures) of the anchors ``idx``, and their two views' z."""
        k, b = int(self.cfg.gloco_k), len(idx)
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
                          images=(2 + int(self.cfg.gloco_k)) * len(idx))


@register("gloco+proco")
class GloCoProCo(GloCo):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.coreset: torch.Tensor | None = None
        self.prototypes: torch.Tensor | None = None  # (2, C, d)
        self.present: torch.Tensor | None = None  # (2, C) bool

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.coreset is None:
            z = torch.from_numpy(self.embed_all())
            self.coreset = kcenter_greedy_per_class(z, self.labels_cpu, self.cfg.proco_coreset,
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
        a = float(self.cfg.proco_alpha)
        l_gloco, z1, z2 = self.gloco_term(idx)
        l_proco = proco_loss(torch.stack([z1, z2]), self.data.labels[idx], self.prototypes,
                             float(self.cfg.temperature), prototype_mask=self.present)
        loss = a * l_gloco + (1 - a) * l_proco
        return StepOutput(loss=loss, parts={"gloco": float(l_gloco.detach()), "proco": float(l_proco.detach())},
                          images=(2 + int(self.cfg.gloco_k)) * len(idx))

    def state_dict(self) -> dict:
        return {"coreset": None if self.coreset is None else self.coreset.cpu()}

    def load_state_dict(self, state: dict) -> None:
        c = state.get("coreset")
        self.coreset = None if c is None else c.to(self.data.x.device)


class ClassifierMixin:
    """A method that trains a cosine classifier beside the encoder (paper 002 Eq. 7)."""

    classifier: CosineClassifier
    log_prior: torch.Tensor
    scale: float

    @torch.no_grad()
    def predict(self, x_uint8: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predicted classes of uint8 NHWC images, without the logit adjustment (the balanced
        posterior, alpha = 0 in Eq. 7); backbone features by the probe's own extractor."""
        from ltcl.eval.features import extract_features

        mean, std = self.norm_stats()
        h = extract_features(self.model.features, x_uint8, device=self.runtime.device, mean=mean, std=std,
                             amp=self.runtime.amp_dtype is not None)
        w = self.classifier.weight.detach().cpu()  # h comes back on the CPU
        return logit_adjusted_cosine_logits(h, w, self.log_prior.cpu(), 0.0, self.scale).argmax(1).numpy()


@register("gml")
class GMLTeacher(ClassifierMixin, Method):
    """The teacher of GML (paper 002): encoder + cosine classifier trained by L_cls (Eq. 7)."""

    supervised = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        counts = labelled_counts(self.data)
        dev = self.data.x.device
        self.log_prior = log_prior_from_counts(counts.float()).to(dev)
        self.scale = float(self.cfg.gml_scale)
        gen = torch.Generator().manual_seed(int(self.cfg.seed))
        self.classifier = CosineClassifier(self.data.num_classes, self.model.feature_dim, gen).to(dev)

    def parameters(self):
        yield from self.model.parameters()
        yield from self.classifier.parameters()

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        v = self.augment(self.data.x[idx])
        with self.runtime.autocast():
            h, _ = self.model(v)
        logits = self.classifier(h, self.log_prior, 1.0, self.scale)
        loss = torch.nn.functional.cross_entropy(logits, self.data.labels[idx])
        return StepOutput(loss=loss, parts={"cls": float(loss.detach())}, images=len(idx))

    def state_dict(self) -> dict:
        return {"classifier": self.classifier.weight.detach().cpu()}


class GMLStudent(ClassifierMixin, Method):
    """GML student (paper 002, Sec. 3.2-3.3): gamma L_cls (Eq. 7) + beta L_GML (Eq. 5 / Eq. 11)
    with teacher contrast features in class-wise queues (Eq. 6).  ``cfg`` is the distill section."""

    name = "gml-student"
    supervised = True

    def __init__(self, model, data, cfg, runtime, augment, *, teacher, **kwargs):
        super().__init__(model, data, cfg, runtime, augment, **kwargs)
        counts = labelled_counts(data)
        dev = data.x.device
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        if teacher.feature_dim != model.feature_dim:
            raise ValueError(f"the GML teacher's features have {teacher.feature_dim} dimensions, the student's "
                             f"{model.feature_dim}; the student's MLP reads both")
        self.log_prior = log_prior_from_counts(counts.float()).to(dev)
        self.scale = float(cfg.gml_scale)
        gen = torch.Generator().manual_seed(int(cfg.seed))
        self.classifier = CosineClassifier(data.num_classes, model.feature_dim, gen).to(dev)
        lengths = gml_queue_lengths(counts.double(), int(cfg.gml_k), int(cfg.gml_km))
        self.queue = ClassQueues(lengths, model.feature_dim, device=dev)
        self.queue_ids = ClassQueues(lengths, 1, device=dev)  # which image each slot came from
        self.log_tau = nn.Parameter(torch.tensor(math.log(cfg.gml_temperature), device=dev),
                                    requires_grad=bool(cfg.gml_train_tau))

    def parameters(self):
        yield from self.model.parameters()
        yield from self.classifier.parameters()
        if self.log_tau.requires_grad:
            yield self.log_tau

    @property
    def tau(self) -> float:
        return float(self.log_tau.detach().exp())

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        cfg, b = self.cfg, len(idx)
        y = self.data.labels[idx]
        v1, v2 = self.views(idx)
        v = torch.cat([v1, v2])
        with self.runtime.autocast():
            h, z = self.model(v)
            with torch.no_grad():
                h_t, _ = self.teacher(v)
        yy = torch.cat([y, y])
        # L_cls (Eq. 7) on both views
        l_cls = torch.nn.functional.cross_entropy(self.classifier(h, self.log_prior, 1.0, self.scale), yy)
        # the batch's teacher features join the queues first: every query's class has contrast features
        self.queue.push(h_t.float(), yy)
        self.queue_ids.push(torch.cat([idx, idx]).float()[:, None], yy)
        feats, labels = self.queue.contents()
        with self.runtime.autocast():
            contrast = self.model.head(feats)  # the student's MLP on the teacher's features (Eq. 8)
        contrast, z = contrast.float(), z.float()
        tau = self.log_tau.detach().exp()
        l_gml = gml_loss(z, contrast, labels, yy, self.log_prior, float(tau), alpha=float(cfg.gml_alpha))
        loss = cfg.gml_cls_weight * l_cls + cfg.gml_weight * l_gml
        parts = {"cls": float(l_cls.detach()), "gml": float(l_gml.detach()), "tau_g": float(tau)}
        if self.log_tau.requires_grad:
            ids, _ = self.queue_ids.contents()
            other = ids[:, 0].long()[None, :] != torch.cat([idx, idx])[:, None]  # own-sample slots left out
            l_tau = gml_loss(z.detach(), contrast.detach(), labels, yy, self.log_prior, self.log_tau.exp(),
                             alpha=float(cfg.gml_alpha), contrast_mask=self.tau_mask(labels, yy, other))
            loss = loss + l_tau
            parts["tau_loss"] = float(l_tau.detach())
        return StepOutput(loss=loss, parts=parts, images=4 * b)

    @staticmethod
    def tau_mask(labels: torch.Tensor, yy: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Contrast mask for fitting tau_g: own-sample slots left out (``other``), except for a
        query whose class has no other feature yet (Eq. 5 needs one of the query's class)."""
        same = labels[None, :] == yy[:, None]
        starved = ~(same & other).any(1)
        return other | (starved[:, None] & same)

    def state_dict(self) -> dict:
        q, qi = self.queue, self.queue_ids
        return {"classifier": self.classifier.weight.detach().cpu(), "tau_g": self.tau,
                "queue": {"features": q.features.cpu(), "filled": q.filled.cpu(), "pointer": list(q.pointer),
                          "ids": qi.features.cpu(), "ids_filled": qi.filled.cpu(), "ids_pointer": list(qi.pointer)}}

    def load_state_dict(self, state: dict) -> None:
        st = state.get("queue")
        if st is None:
            return
        dev = self.data.x.device
        self.queue.features.copy_(st["features"].to(dev))
        self.queue.filled.copy_(st["filled"].to(dev))
        self.queue.pointer = list(st["pointer"])
        self.queue_ids.features.copy_(st["ids"].to(dev))
        self.queue_ids.filled.copy_(st["ids_filled"].to(dev))
        self.queue_ids.pointer = list(st["ids_pointer"])

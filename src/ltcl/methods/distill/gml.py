"""GML's student (paper 002), a distillation: Sec. 3.2-3.3): a new network with a cosine classifier trained by
gamma L_cls (Eq. 7) + beta L_GML (Eq. 5, or Eq. 11 with ``distill.gml.alpha``).  Contrast features come
from the frozen teacher and wait in class-wise queues of lengths k_m + (k - k_m |C|) p(c) (Eq. 6).
Choice (the paper leaves it open: its teacher has no trained MLP): the queues hold the teacher's
*backbone* features and the student's projection MLP is applied to the whole queue at every step,
so z_x and z_y share one MLP (Eq. 8) and no queued feature is stale (the staleness the paper's
teacher exists to avoid).  With ``distill.gml.train_tau`` tau_g is a trained parameter, fitted by the
same loss on detached features with each query's own-sample contrast features left out (Sec. 3.3,
"Trainable temperature"; the encoder is trained at the current tau_g, detached).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ltcl.errors import UserError
from ltcl.losses.gml import ClassQueues, gml_loss, gml_queue_lengths, log_prior_from_counts
from ltcl.methods.base import Method, StepOutput, labelled_counts
from ltcl.methods.gml import ClassifierMixin, CosineClassifier


class GMLStudent(ClassifierMixin, Method):
    """GML student (paper 002, Sec. 3.2-3.3): gamma L_cls (Eq. 7) + beta L_GML (Eq. 5 / Eq. 11)
    with teacher contrast features in class-wise queues (Eq. 6).  ``cfg`` is the distill section; its
    own keys are ``cfg.own`` (``distill.gml``)."""

    name = "gml-student"

    @classmethod
    def from_stage(cls, ctx) -> "GMLStudent":
        """A freshly initialised network of the teacher's architecture (ltcl.methods.context)."""
        from ltcl.methods.base import TrainSet
        from ltcl.models.checkpoint import build_from_spec

        own, n_classes = ctx.cfg.own, len(ctx.manifest["class_names"])
        if own.k < own.km * n_classes:
            raise UserError(f"distill.gml.k={own.k} must be >= distill.gml.km * classes = {own.km * n_classes} (Eq. 6)")
        runtime = ctx.runtime
        student = build_from_spec(ctx.spec).to(runtime.device, memory_format=runtime.memory_format()).train()
        teacher = ctx.teacher.to(memory_format=runtime.memory_format())
        data = TrainSet.from_numpy(ctx.x, ctx.y, n_classes, runtime.device)
        return cls(student, data, ctx.cfg, runtime, ctx.make_augment(), teacher=teacher)

    def stage_metrics(self) -> dict:
        return {"tau_g": self.tau}

    def __init__(self, model, data, cfg, runtime, augment, *, teacher, **kwargs):
        super().__init__(model, data, cfg, runtime, augment, **kwargs)
        counts = labelled_counts(data)
        dev = data.x.device
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        if teacher.feature_dim != model.feature_dim:
            raise UserError(f"the GML teacher's features have {teacher.feature_dim} dimensions, the student's "
                             f"{model.feature_dim}; the student's MLP reads both")
        self.log_prior = log_prior_from_counts(counts.float()).to(dev)
        own = cfg.own
        self.scale = float(own.scale)
        gen = torch.Generator().manual_seed(int(cfg.seed))
        self.classifier = CosineClassifier(data.num_classes, model.feature_dim, gen).to(dev)
        lengths = gml_queue_lengths(counts.double(), int(own.k), int(own.km))
        self.queue = ClassQueues(lengths, model.feature_dim, device=dev)
        self.queue_ids = ClassQueues(lengths, 1, device=dev)  # which image each slot came from
        self.log_tau = nn.Parameter(torch.tensor(math.log(own.temperature), device=dev),
                                    requires_grad=bool(own.train_tau))

    def parameters(self):
        yield from self.model.parameters()
        yield from self.classifier.parameters()
        if self.log_tau.requires_grad:
            yield self.log_tau

    @property
    def tau(self) -> float:
        return float(self.log_tau.detach().exp())

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        own, b = self.cfg.own, len(idx)
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
        l_gml = gml_loss(z, contrast, labels, yy, self.log_prior, float(tau), alpha=float(own.alpha))
        loss = own.cls_weight * l_cls + own.weight * l_gml
        parts = {"cls": float(l_cls.detach()), "gml": float(l_gml.detach()), "tau_g": float(tau)}
        if self.log_tau.requires_grad:
            ids, _ = self.queue_ids.contents()
            other = ids[:, 0].long()[None, :] != torch.cat([idx, idx])[:, None]  # own-sample slots left out
            l_tau = gml_loss(z.detach(), contrast.detach(), labels, yy, self.log_prior, self.log_tau.exp(),
                             alpha=float(own.alpha), contrast_mask=self.tau_mask(labels, yy, other))
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

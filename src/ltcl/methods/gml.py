"""GML's teacher (paper 002), supervised: it reads the labels of the long-tailed split
(its registry entry says ``supervised=True``) and trains on labelled ID images only.

* ``gml``         (paper 002, Sec. 3.3 "Training procedure", first step): the teacher, a backbone
                  with a cosine classifier trained by the logit-adjusted loss of Eq. 7 alone
                  (scale 1/tau_s = ``pretrain.gml.scale``).  The student is trained in the distill stage
                  (:class:`GMLStudent`, ``distill.method: gml``).

The student (:class:`ltcl.methods.distill.gml.GMLStudent`) shares the cosine classifier and the
classifier mixin defined here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ltcl.losses.gml import log_prior_from_counts, logit_adjusted_cosine_logits
from ltcl.methods.base import Method, StepOutput, labelled_counts


class CosineClassifier(nn.Module):
    """Weights m_c of the cosine classifier of paper 002 Eq. 7 (logits computed by
    :func:`~ltcl.losses.gml.logit_adjusted_cosine_logits`)."""

    def __init__(self, num_classes: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        w = torch.randn(num_classes, dim, generator=generator) / math.sqrt(dim)
        self.weight = nn.Parameter(w)

    def forward(self, h: torch.Tensor, log_prior: torch.Tensor, alpha: float, scale: float) -> torch.Tensor:
        return logit_adjusted_cosine_logits(h.float(), self.weight, log_prior, alpha, scale)


class ClassifierMixin:
    """A method that trains a cosine classifier beside the encoder (paper 002 Eq. 7)."""

    classifier: CosineClassifier
    log_prior: torch.Tensor
    scale: float

    @torch.no_grad()
    def predict(self, x_uint8: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predicted classes of uint8 NHWC images, without the logit adjustment (the balanced
        posterior, alpha = 0 in Eq. 7); backbone features by the probe's own extractor."""
        from ltcl.models.features import extract_features

        mean, std = self.norm_stats()
        h = extract_features(self.model.features, x_uint8, device=self.runtime.device, mean=mean, std=std,
                             amp=self.runtime.amp_dtype is not None)
        w = self.classifier.weight.detach().cpu()  # h comes back on the CPU
        return logit_adjusted_cosine_logits(h, w, self.log_prior.cpu(), 0.0, self.scale).argmax(1).numpy()


class GMLTeacher(ClassifierMixin, Method):
    """The teacher of GML (paper 002): encoder + cosine classifier trained by L_cls (Eq. 7)."""
    name = "gml"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        counts = labelled_counts(self.data)
        dev = self.data.x.device
        self.log_prior = log_prior_from_counts(counts.float()).to(dev)
        self.scale = float(self.cfg.own.scale)
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

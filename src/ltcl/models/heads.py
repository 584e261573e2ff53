"""Projection head and the backbone + head encoder used by every contrastive method.

The head is the one the methods' authors ran (``model.proj_layers``; read from their released code):

* 2 layers, ``Linear(in, hidden) - BN - ReLU - Linear(hidden, out, no bias) - BN``: the ``proj_head`` of
  SDCLR's plain SimCLR runs (VITA-Group/SDCLR@f1490fc models/utils.py:30-59, taken by
  train_simCLR.py:201-202 without ``--prune_dual_bn``), of COLT (JianhongBai/COLT models/utils.py:30-59,
  train_simCLR.py:130-131) and of TS (annusha/temperature_schedules models/utils.py, train_simCLR.py:146-148).
  Rows: SimCLR, SimCLR + COLT, SimCLR + KDUP (paper 003 follows COLT), TS, TASE (paper 000 names no head and
  follows SDCLR / TS), and the supervised methods.
* 3 layers, ``Linear(in, hidden) - BN - ReLU - Linear(hidden, hidden, no bias) - BN - ReLU -
  Linear(hidden, out, no bias) - BN``: SDCLR's dual-BN ``proj_head`` (models/resnet_prune_multibn.py:191-233,
  ``twoLayerProj=False`` by default, line 192), which train_simCLR.py:197-199 builds for ``--prune_dual_bn``,
  the flag of every SDCLR run in cmds/execute_hist/camera_ready.sh. Rows: SDCLR, SDCLR + COLT, SDCLR + KDUP.
  Its BatchNorms are dual there (``batch_norm_multiple``, "nonprune" / "prune"); ltcl's pruned branch gets
  its own copy of these BNs from ``ltcl.models.pruning.PrunedBranchNorms``.

``ltcl queue`` and the presets set the layer count of each row (``ltcl.released_code``).
"""

from __future__ import annotations

import torch
from torch import nn

from ltcl.models.resnet import build_backbone

__all__ = ["PROJ_LAYERS", "ProjectionHead", "Encoder", "build_encoder", "encoder_for"]

PROJ_LAYERS = (2, 3)  # = the values of model.proj_layers


class ProjectionHead(nn.Sequential):
    """The projection MLP with ``layers`` Linears (2 or 3), in the released code's layer order.

    The first Linear has a bias, the later ones none because a BatchNorm follows each; every
    BatchNorm is a plain ``nn.BatchNorm1d`` with learnable affine parameters (SDCLR's
    ``nn.BatchNorm1d(ch)``); a ReLU sits between consecutive Linear-BN pairs. With 3 layers the
    middle Linear is ``hidden -> hidden`` (SDCLR: ``ch -> ch``), so ResNet-18's head is
    512-512-512-128.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int) -> None:
        for arg, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}")
        if layers not in PROJ_LAYERS:
            raise ValueError(f"model.proj_layers must be one of {PROJ_LAYERS}, got {layers!r}")
        mods: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=True), nn.BatchNorm1d(hidden_dim)]
        for _ in range(layers - 2):
            mods += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim)]
        mods += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim)]
        super().__init__(*mods)
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.layers = layers


class Encoder(nn.Module):
    """Backbone ``f`` followed by projection head ``g``: ``forward(x) -> (h, z)`` with ``h = f(x)``, ``z = g(h)``.

    ``h`` (pooled backbone features) is what linear probes / kNN evaluate; ``z`` (un-normalised
    projections) is what the contrastive losses consume.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = int(getattr(backbone, "out_dim"))
        self.proj_dim = int(getattr(head, "out_dim", 0)) or None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``h`` of shape ``(N, feature_dim)``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return h, self.head(h)


def build_encoder(
    backbone_name: str,
    in_channels: int,
    image_size: int,
    *,
    width: float,
    stem: str,
    proj_hidden: int,
    proj_dim: int,
    proj_layers: int,
) -> Encoder:
    """Build ``Encoder(build_backbone(...), ProjectionHead(out_dim, proj_hidden, proj_dim, proj_layers))``.

    Every architecture argument is required: their defaults live in the ``model`` params
    (:func:`encoder_for` builds from those)."""
    backbone = build_backbone(backbone_name, in_channels, width=width, stem=stem, image_size=image_size)
    return Encoder(backbone, ProjectionHead(backbone.out_dim, proj_hidden, proj_dim, proj_layers))


def encoder_for(model_cfg, in_channels: int, image_size: int) -> Encoder:
    """The encoder the ``model`` params (``ltcl.params.ModelParams``) describe, for images of
    ``in_channels`` channels and side ``image_size``."""
    return build_encoder(model_cfg.backbone, in_channels, image_size, width=model_cfg.width, stem=model_cfg.stem,
                         proj_hidden=model_cfg.proj_hidden, proj_dim=model_cfg.proj_dim,
                         proj_layers=model_cfg.proj_layers)

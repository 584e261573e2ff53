"""Projection head and the backbone + head encoder used by every contrastive method."""

from __future__ import annotations

import torch
from torch import nn

from ltcl.models.resnet import build_backbone

__all__ = ["ProjectionHead", "Encoder", "build_encoder"]


class ProjectionHead(nn.Sequential):
    """SimCLR/SDCLR projection MLP: ``Linear(in, hidden) - BN - ReLU - Linear(hidden, out) - BN``.

    Follows the two-layer ``proj_head`` of the SDCLR reference code (``twoLayerProj``; also what
    COLT uses): the first Linear has a bias, the second has none because a BatchNorm follows it.
    Both BatchNorms are plain ``nn.BatchNorm1d`` with learnable affine parameters, as in SDCLR
    (``nn.BatchNorm1d(ch)``); SDCLR's pruned branch uses a second set of these BNs, see
    ``ltcl.models.pruning.PrunedBranchNorms``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> None:
        for arg, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}")
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=True),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
            nn.BatchNorm1d(out_dim),
        )
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim


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
    width: float = 1.0,
    proj_hidden: int = 512,
    proj_dim: int = 128,
    stem: str = "auto",
) -> Encoder:
    """Build ``Encoder(build_backbone(...), ProjectionHead(out_dim, proj_hidden, proj_dim))``."""
    backbone = build_backbone(backbone_name, in_channels, width=width, stem=stem, image_size=image_size)
    return Encoder(backbone, ProjectionHead(backbone.out_dim, proj_hidden, proj_dim))

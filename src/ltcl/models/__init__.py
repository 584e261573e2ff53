"""Backbones, projection head, encoder and SDCLR pruning."""

from ltcl.models.heads import Encoder, ProjectionHead, build_encoder
from ltcl.models.pruning import (
    PrunedBranchNorms,
    global_magnitude_masks,
    mask_sparsity,
    prunable_weights,
    pruned_forward,
)
from ltcl.models.resnet import BACKBONES, build_backbone, count_flops

__all__ = [
    "BACKBONES",
    "build_backbone",
    "count_flops",
    "ProjectionHead",
    "Encoder",
    "build_encoder",
    "prunable_weights",
    "global_magnitude_masks",
    "mask_sparsity",
    "PrunedBranchNorms",
    "pruned_forward",
]

"""OOD sampling for long-tailed contrastive learning on embeddings.

KDUP (paper 003, Sec. 3.1.1, Eq. 1-7) and the COLT baseline (Bai et al. 2023):
clustering of ID embeddings, tailness estimation, budget allocation and OOD selection.
The encoder forward pass is outside this package: every function takes embeddings.
"""

from ltcl.sampling.budget import allocate_budget, budget_weights, largest_remainder
from ltcl.sampling.clustering import (
    assign_nearest,
    cluster_embeddings,
    kl_cluster_loss,
    kl_refine,
    kmeans,
    squared_distances,
    student_t_assign,
    target_distribution,
)
from ltcl.sampling.select import (
    STRATEGIES,
    OODSelection,
    SamplingConfig,
    sample_ood,
    select_augment,
    select_nearest,
    select_random,
    tailness_diagnostics,
)
from ltcl.sampling.tailness import (
    cluster_tailness,
    colt_tailness,
    knn_excluding_self,
    momentum_update,
    tailness_scores,
)

__all__ = [
    "STRATEGIES",
    "OODSelection",
    "SamplingConfig",
    "allocate_budget",
    "assign_nearest",
    "budget_weights",
    "cluster_embeddings",
    "cluster_tailness",
    "colt_tailness",
    "kl_cluster_loss",
    "kl_refine",
    "kmeans",
    "knn_excluding_self",
    "largest_remainder",
    "momentum_update",
    "sample_ood",
    "select_augment",
    "select_nearest",
    "select_random",
    "squared_distances",
    "student_t_assign",
    "tailness_diagnostics",
    "tailness_scores",
    "target_distribution",
]

"""KDUP's Table 12 baseline (paper 003): augmented ID images in place of OOD data.  Clusters,
tailness and budgets as in :mod:`ltcl.sampling.strategies.kdup`; each cluster's budget is filled
with duplicated ID images of that cluster (:func:`select_augment`), and the duplicates are added as
augmented copies (:func:`augment_copies`).  It reads no pool."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.sampling.select import as_budgets, empty_indices, round_seed
from ltcl.sampling.strategies.kdup import KDUP


def select_augment(labels: Any, budgets: Any, seed: int) -> np.ndarray:
    """ID indices to duplicate, KDUP Table 12 baseline (augmented ID images in place of OOD data).

    Cluster k's budget is filled with ``budgets[k]`` draws, with replacement and uniform
    within the cluster, from the ID samples labelled k.  If a cluster with a positive budget
    has no ID samples (possible after KL refinement), its draws are uniform over all ID
    samples so that the total stays ``sum(budgets)``.  Returns int64 indices grouped by cluster.
    """
    lab = np.asarray(labels, dtype=np.int64)
    b = as_budgets(budgets)
    if lab.ndim != 1 or lab.size == 0:
        raise UserError(f"labels must be a non-empty 1-D array; got shape {lab.shape}")
    if lab.min() < 0 or lab.max() >= b.size:
        raise UserError(f"labels must lie in [0, {b.size}) (one budget per cluster)")
    rng = np.random.default_rng(seed)
    order = np.argsort(lab, kind="stable")
    counts = np.bincount(lab, minlength=b.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picks = []
    for k in np.flatnonzero(b > 0).tolist():  # one vectorised draw per cluster
        members = order[starts[k] : starts[k] + counts[k]] if counts[k] else np.arange(lab.size)
        picks.append(members[rng.integers(0, members.size, size=int(b[k]))])
    return np.concatenate(picks).astype(np.int64) if picks else np.empty(0, dtype=np.int64)


@torch.no_grad()
def augment_copies(x_uint8: torch.Tensor, seed: int) -> torch.Tensor:
    """Table 12's in-domain alternative to OOD data: each copy gets three of flip, crop,
    rotation, colour jitter and Gaussian blur, chosen at random per batch (kornia's
    ``AugmentationSequential(random_apply=3)`` draws the subset, parameters per sample)."""
    import kornia.augmentation as K

    if len(x_uint8) == 0:
        return x_uint8
    size = x_uint8.shape[1]
    channels = x_uint8.shape[-1]
    ops = [
        K.RandomHorizontalFlip(p=1.0),
        K.RandomResizedCrop((size, size), scale=(0.5, 1.0), p=1.0),
        K.RandomRotation(degrees=15.0, p=1.0),
        K.ColorJitter(0.4, 0.4, 0.4 if channels == 3 else 0.0, 0.1 if channels == 3 else 0.0, p=1.0),
        K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=1.0),
    ]
    aug = K.AugmentationSequential(*ops, random_apply=3)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        x = x_uint8.permute(0, 3, 1, 2).float() / 255.0
        out = aug(x).clamp(0, 1)
    finally:
        torch.random.set_rng_state(state)
    return (out * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class Augment(KDUP):
    name = "augment"

    def pick(self, pool, centroids, labels, budgets, round_index):
        id_indices = select_augment(labels, budgets, round_seed(self.config.seed, round_index, 3))
        return empty_indices(), np.repeat(np.arange(budgets.size), budgets).astype(np.int64), id_indices

    def extra_images(self, sel, id_images, pool, seed):
        """Augmented copies of the ID rows ``sel.id_indices``."""
        return augment_copies(id_images[torch.as_tensor(sel.id_indices, device=id_images.device)], seed)

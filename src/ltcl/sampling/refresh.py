"""One OOD sampling update with a live encoder (paper 003 Sec. 3.1.1): embed the ID set and
the pool, run the strategy, and turn the selection into training images.

Embeddings (``ood.embedding``) are L2-normalised outputs of the projection head
(``projection``, z: the space the contrastive losses shape) or of the backbone (``backbone``,
h: the space the linear probe reads).  Paper 003 writes z = f(I) for the "embedding network"
without saying which; measured on digits-LT, tailness (Eq. 4) computed on h tracks true class
rarity (Spearman with class frequency -0.21 at K=20 after pre-training) while on z it tracks
frequency (+0.16), so ``backbone`` is the default.  The pool is streamed in batches from its memory map, so a 1M-image pool
never sits in memory as images, only as (N, d) float32 embeddings.  A strategy that reads more than
these embeddings computes it in its own ``embed`` (MAK: backbone features and R augmented
projections of the pool, :mod:`ltcl.sampling.strategies.mak`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.models.features import embed_images
from ltcl.registry import STRATEGIES, load
from ltcl.sampling.select import OODSelection, nearest_to_centre
from ltcl.sampling.strategies import sample_ood, strategy_for
from ltcl.sampling.update_pictures import THUMBNAILS


@dataclass
class OODSampler:
    """Keeps the pool, the tailness momentum state and the update count across updates."""

    cfg: object  # OODParams
    pool: np.ndarray | None  # (N, H, W, C) uint8, usually a memmap
    id_images: torch.Tensor  # (N_id, H, W, C) uint8 on the training device
    mean: list
    std: list
    batch_size: int
    augment: object = None  # the run's SimCLRAugment (MAK embeds augmented views of the pool)
    tailness: torch.Tensor | None = None
    rounds: int = 0
    history: list = field(default_factory=list)

    def update(self, model, runtime) -> OODSelection:
        t0 = time.perf_counter()
        id_emb, pool_emb = strategy_for(self.cfg, self.batch_size).embed(self, model, runtime)
        t_embed = time.perf_counter() - t0
        sel, self.tailness = sample_ood(id_emb, pool_emb, self.cfg, self.tailness, round_index=self.rounds,
                                        colt_batch_size=self.batch_size)
        sel.timings["embedding"] = t_embed
        sel.timings["total"] = time.perf_counter() - t0
        if sel.centroids is not None:  # for the update's pictures; not part of the timed update
            sel.id_nearest = nearest_to_centre(id_emb, sel.id_labels, sel.centroids, THUMBNAILS)
        self.rounds += 1
        self.history.append(dict(sel.timings))
        return sel

    def embed(self, model, runtime) -> tuple[np.ndarray, np.ndarray | None]:
        """The ID images' and the pool's embeddings in ``ood.embedding`` (what kdup, colt and augment
        select on): the pool is embedded when the strategy selects from it by embedding; one that
        selects from it without embeddings (random) gets a placeholder of its size, one that does
        not read it None."""
        space, bs = self.cfg.embedding, self.cfg.embed_batch_size
        id_emb = embed_images(model, self.id_images, self.mean, self.std, runtime, bs, space)
        entry = STRATEGIES[self.cfg.strategy]
        pool_emb = (None if not entry.reads_pool
                    else embed_images(model, self.pool, self.mean, self.std, runtime, bs, space)
                    if entry.reads_embeddings else self.pool_placeholder())
        return id_emb, pool_emb

    def pool_placeholder(self) -> np.ndarray:
        """Random sampling needs only the pool's size; a (N, 1) array stands in for embeddings."""
        return np.zeros((len(self.pool), 1), dtype=np.float32)

    def extra_images(self, sel: OODSelection, seed: int) -> torch.Tensor:
        """The images the selection adds to the training set, as its strategy makes them: pool
        images (kdup, colt, random) or augmented copies of ID images (augment, paper 003 Table 12)."""
        strategy = load("ood", sel.strategy)(self.cfg, batch_size=self.batch_size)
        return strategy.extra_images(sel, self.id_images, self.pool, seed)

    def state_dict(self) -> dict:
        return {"tailness": None if self.tailness is None else self.tailness.cpu(), "rounds": self.rounds}

    def load_state_dict(self, state: dict) -> None:
        self.tailness = state.get("tailness")
        self.rounds = int(state.get("rounds", 0))


def open_sampler(ood_cfg, pool_path, data, spec: dict, batch_size: int, augment=None) -> OODSampler:
    """The sampler of a pre-training run: its pool memory-mapped (strategies that draw from it),
    the run's ID images (``data``, a ``TrainSet``; domain 0 rows) and augmentation (``augment``)."""
    from ltcl.data.pool import open_pool

    pool = open_pool(pool_path) if STRATEGIES[ood_cfg.strategy].reads_pool else None
    if pool is not None and len(pool) < ood_cfg.budget:
        raise UserError(f"the OOD pool {pool_path} has {len(pool)} images, fewer than ood.budget="
                        f"{ood_cfg.budget}; raise ood.pool_size or lower ood.budget")
    # the TrainSet's own tensor when it holds ID rows only (every call in a run): a boolean-mask
    # index would copy the whole ID split, on a GPU a second copy of it in device memory
    id_images = data.x if not data.has_ood else data.x[data.domain == 0]
    return OODSampler(cfg=ood_cfg, pool=pool, id_images=id_images, mean=spec["mean"],
                      std=spec["std"], batch_size=batch_size, augment=augment)

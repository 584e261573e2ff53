"""What every OOD sampling strategy is (:class:`Strategy`); the clustered update KDUP, COLT and the
augmented-ID baseline share is :class:`ltcl.sampling.strategies.clustered.ClusteredStrategy`.

A strategy module holds one subclass; ``ltcl.registry.STRATEGIES`` names it with what it reads
(the pool, embeddings) and its params subsection ``ood.<name>``.  README "Add a sampling strategy".
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.registry import STRATEGIES
from ltcl.sampling.clustering import as_float32_numpy
from ltcl.sampling.select import OODSelection
from ltcl.sampling.steps import SELECT_STEPS


class Strategy:
    """One OOD sampling strategy, built from the ``ood`` params section.

    ``embed`` computes what ``select`` reads with the live encoder (by default the sampler's
    embeddings of the ID images and the pool, :meth:`ltcl.sampling.refresh.OODSampler.embed`);
    ``select`` runs one update on them and returns (selection, tailness state);
    ``extra_images`` turns a selection into the images it adds to the training set (by default the
    selected pool images, read in sorted order so that a memory-mapped pool is read sequentially).
    ``name`` is the strategy's registry name; what it reads is its registry entry's
    (``reads_pool``, ``reads_embeddings``).
    """

    name: ClassVar[str]

    def __init__(self, config, *, batch_size: int):
        self.config = config
        self.batch_size = batch_size  # the pre-training batch size
        self.entry = STRATEGIES[self.name]

    def embed(self, sampler, model, runtime) -> tuple[Any, Any]:
        """(ID embeddings, pool embeddings or None) of ``sampler``'s images by the live ``model``."""
        return sampler.embed(model, runtime)

    def select(self, id_emb: Any, pool_emb: Any, prev_tailness: torch.Tensor | None,
               round_index: int) -> tuple[OODSelection, torch.Tensor | None]:
        raise NotImplementedError

    def extra_images(self, sel: OODSelection, id_images: torch.Tensor, pool, seed: int) -> torch.Tensor:
        """The images ``sel`` adds: the pool's rows ``sel.pool_indices`` on the ID images' device."""
        if sel.pool_indices.size == 0:
            return id_images[:0]
        idx = np.sort(sel.pool_indices)  # sorted reads are sequential on a memmap
        return torch.as_tensor(np.ascontiguousarray(pool[idx])).to(id_images.device)

    # shared checks --------------------------------------------------------------------------
    def timings(self) -> dict[str, float]:
        return {key: 0.0 for key in SELECT_STEPS}

    def checked_pool(self, pool_emb: Any) -> np.ndarray | None:
        """The pool embeddings as float32 numpy (None for a strategy that does not read the pool),
        after the budget checks every strategy that adds images shares."""
        cfg = self.config
        if cfg.budget <= 0:
            raise UserError(f"ood.budget must be > 0 for strategy {self.name!r}; got {cfg.budget}")
        if not self.entry.reads_pool:
            return None
        if pool_emb is None:
            raise UserError(f"pool_emb is required for strategy {self.name!r}")
        pool = as_float32_numpy(pool_emb, "pool_emb")
        if pool.shape[0] < cfg.budget:
            raise UserError(f"the OOD pool has {pool.shape[0]} images, fewer than ood.budget = {cfg.budget}")
        return pool

"""The random-sampling baseline: ``ood.budget`` pool images drawn uniformly, no clustering and no
embeddings (the pool is read for its size only)."""

from __future__ import annotations

import time

import numpy as np

from ltcl.errors import UserError
from ltcl.sampling.select import OODSelection, round_seed
from ltcl.sampling.strategies.base import Strategy


def select_random(pool_size: int, total: int, seed: int) -> np.ndarray:
    """``total`` distinct pool indices drawn uniformly at random (int64), the random-sampling baseline."""
    if total < 0 or total > pool_size:
        raise UserError(f"total = {total} must be in [0, pool_size = {pool_size}]")
    return np.random.default_rng(seed).choice(pool_size, size=int(total), replace=False).astype(np.int64)


class Random(Strategy):
    name = "random"

    def select(self, id_emb, pool_emb, prev_tailness, round_index):
        timings = self.timings()
        pool = self.checked_pool(pool_emb)
        t0 = time.perf_counter()
        idx = select_random(pool.shape[0], self.config.budget, round_seed(self.config.seed, round_index, 0))
        timings["sampling"] = time.perf_counter() - t0
        sel = OODSelection(strategy=self.name, pool_indices=idx, cluster_of_each=np.full(idx.size, -1, dtype=np.int64),
                           sample_tailness=prev_tailness, timings=timings)
        return sel, prev_tailness

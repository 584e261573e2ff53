"""COLT's OOD sampling (Bai et al. 2023, JianhongBai/COLT): plain k-means (no KL refinement),
in-batch top-k tailness with its momentum (``ood.colt``: topk, momentum), the same budget rule
and nearest-to-centroid selection as KDUP (docs/deviations.md lists where this differs from
COLT's code)."""

from __future__ import annotations

from ltcl.sampling.select import round_seed, select_nearest
from ltcl.sampling.strategies.clustered import ClusteredStrategy
from ltcl.sampling.tailness import colt_tailness


class COLT(ClusteredStrategy):
    name = "colt"
    refine = False

    def tailness(self, z, prev, round_index):
        c = self.config
        return colt_tailness(z, self.batch_size, c.own.topk, seed=round_seed(c.seed, round_index, 2),
                             prev=prev, momentum=c.own.momentum)

    def pick(self, pool, centroids, labels, budgets, round_index):
        pool_idx, cluster_of_each = select_nearest(pool, centroids, budgets)
        return pool_idx, cluster_of_each, None

"""KDUP's OOD sampling (paper 003, Sec. 3.1.1): k-means with the KL refinement (Eq. 1-3), kNN
tailness over the whole ID set with momentum (Eq. 4-6), budgets by Eq. 7, and per cluster the pool
images nearest its centroid.  Its keys are the ``ood`` section's own (``ood.kdup`` is empty)."""

from __future__ import annotations

from ltcl.sampling.select import select_nearest
from ltcl.sampling.strategies.clustered import ClusteredStrategy
from ltcl.sampling.tailness import momentum_update, tailness_scores


class KDUP(ClusteredStrategy):
    name = "kdup"

    def tailness(self, z, prev, round_index):
        """Eq. 4 (mean distance to the K nearest ID neighbours) averaged with the previous update's
        by Eq. 5's momentum rho."""
        c = self.config
        return momentum_update(prev, tailness_scores(z, c.knn_k, exact_max=c.knn_exact_max, nprobe=c.knn_nprobe),
                               c.momentum)

    def pick(self, pool, centroids, labels, budgets, round_index):
        """Paper 003: "we sample OOD images whose feature embeddings are close to the cluster center"."""
        pool_idx, cluster_of_each = select_nearest(pool, centroids, budgets)
        return pool_idx, cluster_of_each, None

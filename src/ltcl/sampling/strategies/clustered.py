"""The clustered update KDUP, COLT and the augmented-ID baseline share (paper 003 Sec. 3.1.1):
cluster the ID embeddings, score tailness, allocate the budget by Eq. 7, fill each cluster's budget."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.sampling.budget import allocate_budget
from ltcl.sampling.clustering import as_float32_numpy, cluster_embeddings
from ltcl.sampling.select import OODSelection, round_seed
from ltcl.sampling.strategies.base import Strategy
from ltcl.sampling.tailness import cluster_tailness


class ClusteredStrategy(Strategy):
    """Cluster the ID embeddings (k-means, with KDUP's KL refinement where ``refine``), score each
    ID sample's tailness (:meth:`tailness`), average it per cluster, allocate ``ood.budget`` by
    Eq. 7 over the clusters that hold ID samples, and fill each cluster's budget (:meth:`pick`)."""

    refine: ClassVar[bool] = True  # KDUP's KL refinement of the clusters (Eq. 2-3), where ood.refine asks

    def tailness(self, z: np.ndarray, prev: torch.Tensor | None, round_index: int) -> torch.Tensor:
        raise NotImplementedError

    def pick(self, pool: np.ndarray | None, centroids: np.ndarray, labels: np.ndarray, budgets: np.ndarray,
             round_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(pool indices, the cluster of each, ID indices to duplicate or None)."""
        raise NotImplementedError

    def select(self, id_emb, pool_emb, prev_tailness, round_index):
        config = self.config
        timings = self.timings()
        pool = self.checked_pool(pool_emb)
        z = as_float32_numpy(id_emb, "id_emb")
        if pool is not None and pool.shape[1] != z.shape[1]:
            raise UserError(f"pool_emb has dim {pool.shape[1]} but id_emb has dim {z.shape[1]}")
        if config.clusters > z.shape[0]:
            raise UserError(f"ood.clusters = {config.clusters} exceeds the number of ID samples {z.shape[0]}")
        if prev_tailness is not None and tuple(prev_tailness.shape) != (z.shape[0],):
            raise UserError(
                f"prev_tailness has shape {tuple(prev_tailness.shape)}; expected ({z.shape[0]},) for this ID set"
            )

        t0 = time.perf_counter()
        centroids, labels, info = cluster_embeddings(
            z,
            config.clusters,
            seed=round_seed(config.seed, round_index, 1),
            tol=config.cluster_tol,
            max_iter=config.cluster_max_iter,
            refine=config.refine and self.refine,
            lr=config.cluster_lr,
            patience=config.cluster_patience,
        )
        t1 = time.perf_counter()
        tail = self.tailness(z, prev_tailness, round_index)
        t2 = time.perf_counter()
        cl_tail = cluster_tailness(tail, labels, config.clusters)
        # Eq. 7 over the clusters that hold ID samples: a cluster the KL refinement left empty
        # represents no in-distribution data, so it draws no OOD images (measured: at 12,406 ID x
        # 300K it would otherwise have taken 209 of 10,000).
        nonempty = np.bincount(np.asarray(labels), minlength=config.clusters) > 0
        budgets = np.zeros(config.clusters, dtype=np.int64)
        budgets[nonempty] = allocate_budget(cl_tail[torch.as_tensor(nonempty)], config.budget,
                                            config.budget_temperature)
        t3 = time.perf_counter()
        pool_idx, cluster_of_each, id_indices = self.pick(pool, centroids, labels, budgets, round_index)
        t4 = time.perf_counter()
        timings.update(clustering=t1 - t0, tailness=t2 - t1, budget=t3 - t2, sampling=t4 - t3)
        sel = OODSelection(strategy=self.name, pool_indices=pool_idx, cluster_of_each=cluster_of_each,
                           budgets=budgets, id_labels=labels, centroids=centroids, sample_tailness=tail,
                           cluster_tailness=cl_tail, timings=timings, id_indices=id_indices, cluster_info=info)
        return sel, tail


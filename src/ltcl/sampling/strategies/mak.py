"""MAK's sampling (Jiang et al. 2021, VITA-Group/MAK@75d2b9f; the pieces and their deviations:
:mod:`ltcl.sampling.mak`).  With the SimCLR model of the ood-sampling warm-up (MAK's model trained
on the seed data) it embeds the ID images and the pool without augmentation (backbone features,
as the released inference's ``features_before_proj``) and the pool ``ood.mak.views`` times with
the run's SimCLR augmentation (projection outputs, its ``features``; inference_save.py:30-58, in
eval mode), then scores, keeps the core set and picks ``ood.budget`` images by K-center.  MAK
samples once; pretrain then trains a new encoder on ID + the selection from scratch (the registry
entry's ``retrain``), as MAK's protocol does.  It reads ``ood.mak`` and ignores ``ood.embedding``
(its code fixes the spaces)."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.models.features import embed_images
from ltcl.sampling.mak import core_set, ecle, k_center_greedy, mak_score, proximity
from ltcl.sampling.select import OODSelection, round_seed
from ltcl.sampling.strategies.base import Strategy


class MAKFeatures(NamedTuple):
    """What MAK reads of the pool: its backbone features (N, d) and its augmented projection
    embeddings (R, N, d')."""

    backbone: np.ndarray
    views: torch.Tensor


@torch.no_grad()
def augmented_embeddings(model, images, augment, runtime, batch_size: int, repeats: int, seed: int,
                         mean, std) -> torch.Tensor:
    """(R, N, d') L2-normalised projection embeddings of ``repeats`` augmented passes over the uint8
    ``images`` (the run's SimCLR augmentation ``augment``, eval mode: :func:`embed_images` with it as
    the transform), drawn from torch's generator seeded with ``seed`` inside a forked RNG state (the
    training stream is untouched); ``mean``/``std``: the per-channel statistics it normalises with."""
    if augment is None:
        raise UserError("ood.strategy: mak embeds augmented views of the pool; the sampler has no augmentation")
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        views = [torch.from_numpy(embed_images(model, images, mean, std, runtime, batch_size, "projection",
                                               transform=augment)) for _ in range(repeats)]
    return torch.stack(views)


class MAK(Strategy):
    name = "mak"

    def embed(self, sampler, model, runtime):
        c, own = self.config, self.config.own
        bs = c.embed_batch_size
        id_h = embed_images(model, sampler.id_images, sampler.mean, sampler.std, runtime, bs, "backbone")
        pool_h = embed_images(model, sampler.pool, sampler.mean, sampler.std, runtime, bs, "backbone")
        views = augmented_embeddings(model, sampler.pool, sampler.augment, runtime, bs, own.views,
                                     round_seed(c.seed, sampler.rounds, 4), sampler.mean, sampler.std)
        return id_h, MAKFeatures(pool_h, views.to(runtime.device))

    def select(self, id_emb, pool_emb, prev_tailness, round_index):
        c, own = self.config, self.config.own
        if not isinstance(pool_emb, MAKFeatures):
            raise UserError("ood.strategy: mak selects from MAKFeatures (backbone features and augmented views of "
                            "the pool), as MAK.embed computes them")
        timings = self.timings()
        pool_h = self.checked_pool(pool_emb.backbone)
        if pool_emb.views.shape[1] != pool_h.shape[0]:
            raise UserError(f"{pool_emb.views.shape[1]} augmented pool embeddings for {pool_h.shape[0]} pool images")
        t0 = time.perf_counter()
        distance, nearest, _, _ = proximity(id_emb, pool_h, own.clusters, round_seed(c.seed, round_index, 1),
                                            own.kmeans_init)
        t1 = time.perf_counter()
        gen = torch.Generator().manual_seed(round_seed(c.seed, round_index, 5))
        loss = ecle(pool_emb.views, own.temperature, own.batch, own.rebatch, gen).cpu().numpy()
        t2 = time.perf_counter()
        core = core_set(mak_score(loss, distance, own.loss_weight), int(own.core_ratio * c.budget))
        t3 = time.perf_counter()
        picked = (core[k_center_greedy(id_emb, pool_h[core], c.budget)] if core.size > c.budget else core)
        t4 = time.perf_counter()
        timings.update(clustering=t1 - t0, tailness=t2 - t1, budget=t3 - t2, sampling=t4 - t3)
        scores = {"core": int(core.size),
                  "ecle_pool_mean": float(loss.mean()), "ecle_selected_mean": float(loss[picked].mean()),
                  "distance_pool_mean": float(distance.mean()),
                  "distance_selected_mean": float(distance[picked].mean())}
        sel = OODSelection(strategy=self.name, pool_indices=picked, cluster_of_each=nearest[picked],
                           timings=timings, pool_scores=scores)
        return sel, prev_tailness

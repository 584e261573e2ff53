"""KDUP's guided distillation (paper 003, Sec. 3.2): a new network g, initialised from the
frozen guiding network f, is trained on ID data with L_GL = L_GCL + beta * L_DL (Eq. 11-13).

f selects each anchor's positive (a random one of its K_kd nearest neighbours in f's
embedding space) and negative (a random member of the cluster whose centroid is farthest from
the anchor's cluster; clusters by the KL-refined clustering of Sec. 3.1, computed once since f
is frozen), and weights the attraction / repulsion by its own cosine similarities.

Table 6 ablations (``distill.kdup``): ``guided_sampling: false`` takes the positive and negative as a typical
contrastive loss does (another augmented view of the anchor, a random other sample of the
batch); ``guided_weighting: false`` sets all weights to 1.
"""

from __future__ import annotations

import numpy as np
import torch

from ltcl.errors import UserError
from ltcl.losses.kdup import guided_learning_loss
from ltcl.methods.base import Method, StepOutput, TrainSet


def farthest_clusters(centroids: np.ndarray) -> np.ndarray:
    """For each cluster, the index of the cluster whose centroid is farthest (L2)."""
    c = np.asarray(centroids, dtype=np.float64)
    d = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return d.argmax(1).astype(np.int64)


class GuidedDistillation(Method):
    name = "kdup-distill"

    @classmethod
    def from_stage(cls, ctx) -> "GuidedDistillation":
        """g starts as a copy of f; f's clusters and nearest neighbours guide it (paper 003 Sec. 3.2).
        Under DDP rank 0 computes them and every rank uses the same ones."""
        import copy
        import time

        from ltcl.collectives import on_main
        from ltcl.models.features import embed_images
        from ltcl.sampling.clustering import cluster_embeddings
        from ltcl.sampling.neighbours import knn_indices

        cfg, own, runtime, x = ctx.cfg, ctx.cfg.own, ctx.runtime, ctx.x
        if own.k_kd >= len(x):
            raise UserError(f"distill.kdup.k_kd={own.k_kd} needs more than {own.k_kd} ID images, got {len(x)}")
        if own.clusters > len(x):
            raise UserError(f"distill.kdup.clusters={own.clusters} is larger than the ID set ({len(x)} images)")
        teacher = ctx.teacher.to(memory_format=runtime.memory_format())
        data = TrainSet.from_numpy(x, ctx.y, len(ctx.manifest["class_names"]), runtime.device)
        t0 = time.perf_counter()

        def guidance():
            z_f = embed_images(teacher, data.x, ctx.spec["mean"], ctx.spec["std"], runtime)
            # paper 003 Sec. 3.2: "the clustering method in Section 3.1", with its ood.* keys
            ood = ctx.params.ood
            centroids, clusters, info = cluster_embeddings(z_f, own.clusters, seed=cfg.seed, tol=ood.cluster_tol,
                                                           max_iter=ood.cluster_max_iter, refine=ood.refine,
                                                           lr=ood.cluster_lr, patience=ood.cluster_patience)
            return centroids, clusters, info, knn_indices(z_f, own.k_kd)

        centroids, clusters, info, neighbours = on_main(guidance)
        setup_s = time.perf_counter() - t0
        student = copy.deepcopy(teacher).train()
        for p in student.parameters():
            p.requires_grad_(True)
        method = cls(student, data, cfg, runtime, ctx.make_augment(), teacher=teacher, neighbours=neighbours,
                     clusters=clusters, centroids=centroids)
        labels = np.asarray(ctx.y)
        # how often f's neighbour positives share the true class: what guided sampling relies on
        method.report = {"neighbour_precision": float(np.mean(labels[neighbours] == labels[:, None])),
                         "clusters_converged": bool(info.get("converged", False))}
        method.setup_seconds = setup_s
        return method

    report: dict = {}  # set by from_stage: how good f's guidance is

    def stage_metrics(self) -> dict:
        return dict(self.report)

    def __init__(self, model, data, cfg, runtime, augment, *, teacher, neighbours, clusters, centroids,
                 **kwargs):
        super().__init__(model, data, cfg, runtime, augment, **kwargs)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        dev = data.x.device
        self.neighbours = torch.as_tensor(neighbours, dtype=torch.long, device=dev)  # (N, K_kd)
        labels = np.asarray(clusters, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=len(centroids))
        far = farthest_clusters(centroids)
        if (counts[far] == 0).any():  # an empty farthest cluster: fall back to the farthest non-empty
            c = np.asarray(centroids, dtype=np.float64)
            d = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
            d[:, counts == 0] = -1
            far = d.argmax(1)
        self.cluster = torch.as_tensor(labels, device=dev)
        self.far = torch.as_tensor(far, device=dev)
        self.order = torch.as_tensor(order, device=dev)
        self.starts = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]), device=dev)
        self.counts = torch.as_tensor(counts, device=dev)
        self.generator = torch.Generator(device="cpu").manual_seed(int(cfg.seed))

    def _rand(self, high: torch.Tensor) -> torch.Tensor:
        """Uniform integers in [0, high) elementwise."""
        u = torch.rand(high.shape, generator=self.generator).to(high.device)
        return (u * high).long().clamp_max(high - 1)

    def pick(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided positive and negative indices for the anchors ``idx``."""
        k = self.neighbours.shape[1]
        pos = self.neighbours[idx, self._rand(torch.full_like(idx, k))]
        far = self.far[self.cluster[idx]]
        neg = self.order[self.starts[far] + self._rand(self.counts[far])]
        return pos, neg

    def training_step(self, idx: torch.Tensor) -> StepOutput:
        from ltcl.collectives import rank

        x = self.data.x
        b = len(idx)
        # Under DDP the random positives / negatives are drawn for the global batch on every rank
        # (the generator advances identically everywhere) and each rank keeps its own slice, so the
        # draws equal a single process's; embeddings are gathered before the loss (L_DL pairs every
        # anchor with every other of the global batch).  In one process gidx is idx.
        gidx = self.gather_ids(idx)
        mine = slice(rank() * b, rank() * b + b) if len(gidx) > b else slice(0, b)
        if self.cfg.own.guided_sampling:
            pos, neg = self.pick(gidx)
            pos, neg = pos[mine], neg[mine]
            views = self.augment(torch.cat([x[idx], x[pos], x[neg]]))
        else:  # "KD with typical loss": another view as positive, a random batch member as negative
            shift = 1 + int(torch.randint(len(gidx) - 1, (1,), generator=self.generator))
            neg = torch.roll(gidx, shift)[mine]
            views = self.augment(torch.cat([x[idx], x[idx], x[neg]]))
        y = self.embed(views)
        with torch.no_grad():
            z = self.embed(views, forward=lambda v: self.teacher(v)[1])
        ys = [self.gather(y[i * b:(i + 1) * b]) for i in range(3)]
        zs = [self.gather_ids(z[i * b:(i + 1) * b]) for i in range(3)]
        loss, parts = guided_learning_loss(*ys, *zs, self.cfg.own.beta, weighted=self.cfg.own.guided_weighting)
        return StepOutput(loss=loss, parts={k: float(v) for k, v in parts.items()}, images=3 * b)

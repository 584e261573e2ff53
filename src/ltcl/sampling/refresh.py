"""One OOD sampling update with a live encoder (paper 003 Sec. 3.1.1): embed the ID set and
the pool, run the strategy, and turn the selection into training images.

Embeddings (``ood.embedding``) are L2-normalised outputs of the projection head
(``projection``, z: the space the contrastive losses shape) or of the backbone (``backbone``,
h: the space the linear probe reads).  Paper 003 writes z = f(I) for the "embedding network"
without saying which; measured on digits-LT, tailness (Eq. 4) computed on h tracks true class
rarity (Spearman with class frequency -0.21 at K=20 after pre-training) while on z it tracks
frequency (+0.16), so ``backbone`` is the default.  The pool is streamed in batches from its memory map, so a 1M-image pool
never sits in memory as images, only as (N, d) float32 embeddings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ltcl.data.augment import to_float_normalised
from ltcl.errors import UserError
from ltcl.registry import STRATEGIES
from ltcl.sampling.select import OODSelection, nearest_to_centre, sample_ood
from ltcl.sampling.update_pictures import THUMBNAILS


@torch.no_grad()
def embed_images(model, images, mean, std, runtime, batch_size: int = 1024,
                 space: str = "projection") -> np.ndarray:
    """L2-normalised embeddings (N, d) float32 of uint8 NHWC images (array, memmap or tensor),
    streamed in batches; ``space`` is "projection" (head output z) or "backbone" (pooled
    features h).  The model is put in eval mode and restored."""
    if space not in ("projection", "backbone"):
        raise ValueError(f"space must be 'projection' or 'backbone', got {space!r}")
    was_training = model.training
    model.eval()
    dim = model.proj_dim if space == "projection" else model.feature_dim
    out = np.empty((len(images), dim), dtype=np.float32)
    try:
        for s in range(0, len(images), batch_size):
            chunk = images[s: s + batch_size]
            xb = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk))  # copy: memmaps are read-only
            xb = to_float_normalised(xb.to(runtime.device, non_blocking=True), mean, std)
            with runtime.autocast():
                h, z = model(xb)
            e = z if space == "projection" else h
            out[s: s + len(chunk)] = torch.nn.functional.normalize(e.float(), dim=1).cpu().numpy()
    finally:
        model.train(was_training)
    return out


@dataclass
class OODSampler:
    """Keeps the pool, the tailness momentum state and the update count across updates."""

    cfg: object  # OODParams
    pool: np.ndarray | None  # (N, H, W, C) uint8, usually a memmap
    id_images: torch.Tensor  # (N_id, H, W, C) uint8 on the training device
    mean: list
    std: list
    batch_size: int
    tailness: torch.Tensor | None = None
    rounds: int = 0
    history: list = field(default_factory=list)

    def update(self, model, runtime) -> OODSelection:
        t0 = time.perf_counter()
        space, bs = self.cfg.embedding, self.cfg.embed_batch_size
        id_emb = embed_images(model, self.id_images, self.mean, self.std, runtime, bs, space)
        entry = STRATEGIES[self.cfg.strategy]
        # the pool is embedded when the strategy selects from it by embedding (kdup, colt); one
        # that selects from it without embeddings (random) gets a placeholder of its size
        pool_emb = (None if not entry.reads_pool
                    else embed_images(model, self.pool, self.mean, self.std, runtime, bs, space)
                    if entry.reads_embeddings else self.pool_placeholder())
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

    def pool_placeholder(self) -> np.ndarray:
        """Random sampling needs only the pool's size; a (N, 1) array stands in for embeddings."""
        return np.zeros((len(self.pool), 1), dtype=np.float32)

    def extra_images(self, sel: OODSelection, seed: int) -> torch.Tensor:
        """The images the selection adds to the training set: pool images (kdup, colt, random)
        or augmented copies of ID images (augment, paper 003 Table 12)."""
        dev = self.id_images.device
        if sel.strategy == "augment":
            return augment_copies(self.id_images[torch.as_tensor(sel.id_indices, device=dev)], seed)
        if sel.pool_indices.size == 0:
            return self.id_images[:0]
        idx = np.sort(sel.pool_indices)  # sorted reads are sequential on a memmap
        return torch.as_tensor(np.ascontiguousarray(self.pool[idx])).to(dev)

    def state_dict(self) -> dict:
        return {"tailness": None if self.tailness is None else self.tailness.cpu(), "rounds": self.rounds}

    def load_state_dict(self, state: dict) -> None:
        self.tailness = state.get("tailness")
        self.rounds = int(state.get("rounds", 0))


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


def open_sampler(ood_cfg, pool_path, data, spec: dict, batch_size: int) -> OODSampler:
    """The sampler of a pre-training run: its pool memory-mapped (strategies that draw from it)
    and the run's ID images (``data``, a ``TrainSet``; domain 0 rows)."""
    from ltcl.data.pool import open_pool

    pool = open_pool(pool_path) if STRATEGIES[ood_cfg.strategy].reads_pool else None
    if pool is not None and len(pool) < ood_cfg.budget:
        raise UserError(f"the OOD pool {pool_path} has {len(pool)} images, fewer than ood.budget="
                        f"{ood_cfg.budget}; raise ood.pool_size or lower ood.budget")
    # the TrainSet's own tensor when it holds ID rows only (every call in a run): a boolean-mask
    # index would copy the whole ID split, on a GPU a second copy of it in device memory
    id_images = data.x if not data.has_ood else data.x[data.domain == 0]
    return OODSampler(cfg=ood_cfg, pool=pool, id_images=id_images, mean=spec["mean"],
                      std=spec["std"], batch_size=batch_size)

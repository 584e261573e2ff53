"""What one OOD sampling update looked like, as data for pictures that need no labels: the
ID images' tailness histogram (paper 003 Eq. 4), per cluster its size, tailness and budget
(Eq. 6-7), and uint8 thumbnails of the ID images nearest each cluster centre beside the extra
images the update selected for that cluster.

ood-sampling writes its (first) update to ``data/ood/diagnostics.npz``, pretrain its later
updates to ``data/ood/pretrain_diagnostics.npz`` (:mod:`ltcl.sampling.update_file`); the report
draws them without reading the split or the pool.

What the thumbnails are, per strategy (``extra_kind``):

* ``kdup`` / ``colt``: the first :data:`THUMBNAILS` pool images of the cluster's selection, in
  the order the strategy ranked them (nearest the centroid first, ``pool``);
* ``augment``: the first ID rows the seeded draw picked for duplication (``id copies``; shown
  before their augmentation);
* ``random``: no clusters and no tailness; the first ``2 x THUMBNAILS`` images of the seeded
  uniform draw, in two rows with cluster id -1 (``pool``).

The histogram counts are split by Many / Medium / Few only when the caller passes the groups
of real labels (``sample_groups``); otherwise one series, ``all``.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from ltcl.sampling.select import OODSelection

THUMBNAILS = 8          # thumbnails per cluster and side (ID nearest the centre | selected)
TAILNESS_BINS = 30      # bins of the tailness histogram
THUMB_MAX_SIDE = 64     # larger images are shrunk (PIL box filter) to this side in the file


def _numpy(v) -> np.ndarray | None:
    if v is None:
        return None
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def _padded(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for r, ix in enumerate(rows):
        ix = np.asarray(ix, dtype=np.int64)[:width]
        out[r, : ix.size] = ix
    return out


def _shrink(imgs: np.ndarray) -> np.ndarray:
    """(n, h, w, c) uint8, shrunk to at most :data:`THUMB_MAX_SIDE` pixels a side (PIL box filter)."""
    n, h, w, c = imgs.shape
    scale = THUMB_MAX_SIDE / max(h, w)
    if scale >= 1:
        return imgs
    from PIL import Image

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = np.zeros((n, size[1], size[0], c), dtype=np.uint8)
    for i, im in enumerate(imgs):
        out[i] = np.asarray(Image.fromarray(im[..., 0] if c == 1 else im).resize(size, Image.Resampling.BOX)
                            ).reshape(size[1], size[0], c)
    return out


def thumbnails(images, rows: np.ndarray) -> np.ndarray:
    """uint8 (R, T, h, w, c) of ``images[rows]`` (a uint8 NHWC tensor, ``DiskRows`` or memory map;
    -1: a blank, zero, cell), shrunk by :func:`_shrink`.  Each row is read once, in ascending
    order (sequential on a memory map)."""
    flat = rows.reshape(-1)
    valid = np.flatnonzero(flat >= 0)
    uniq, inverse = np.unique(flat[valid], return_inverse=True)
    if isinstance(images, np.ndarray):
        got = np.asarray(images[uniq], dtype=np.uint8)
    else:
        got = images[torch.as_tensor(uniq, device=images.device)].cpu().numpy()
    got = _shrink(got.reshape(len(uniq), *images.shape[1:]))
    out = np.zeros((flat.size, *got.shape[1:]), dtype=np.uint8)
    out[valid] = got[inverse]
    return out.reshape(*rows.shape, *got.shape[1:])


def tailness_histogram(sample_tailness, sample_groups=None) -> dict[str, np.ndarray]:
    """Counts of the ID images' tailness in :data:`TAILNESS_BINS` equal bins from its minimum to its
    maximum: ``tailness_edges`` (B+1,), ``tailness_counts`` (G, B), ``tailness_groups`` (G,), one
    series per group of ``sample_groups`` (a group name per ID image, from real labels only) in
    the order many, medium, few, or the single series ``all``."""
    t = np.asarray(_numpy(sample_tailness), dtype=np.float64)
    lo, hi = float(t.min()), float(t.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, TAILNESS_BINS + 1)
    if sample_groups is None:
        names, masks = ["all"], [np.ones(t.size, bool)]
    else:
        g = np.asarray(sample_groups)
        names = [n for n in ("many", "medium", "few") if (g == n).any()]
        masks = [g == n for n in names]
    counts = np.stack([np.histogram(t[m], bins=edges)[0] for m in masks]).astype(np.int64)
    return {"tailness_edges": edges, "tailness_counts": counts, "tailness_groups": np.asarray(names)}


def update_record(sel: OODSelection, id_images, pool, epoch: int, space: str,
                  sample_groups=None) -> dict[str, np.ndarray]:
    """The picture data of update ``sel`` (made at the start of ``epoch``, in embedding ``space``):
    the strategy, the histogram of :func:`tailness_histogram` when the update has a tailness, per
    cluster ``cluster_sizes`` / ``cluster_tailness`` / ``budgets`` / ``centroids`` when it has
    clusters, and the thumbnail rows (``cluster_ids``; ``id_rows`` / ``id_thumbs``: the ID images
    nearest each centre, ``sel.id_nearest``; ``extra_rows`` / ``extra_thumbs``: what the update
    selected for the cluster, ``extra_kind`` says from where; see the module docstring)."""
    rec: dict[str, np.ndarray] = {"strategy": np.asarray(sel.strategy), "epoch": np.asarray(int(epoch)),
                                  "space": np.asarray(space)}
    if sel.sample_tailness is not None:
        rec.update(tailness_histogram(sel.sample_tailness, sample_groups))
    pool_idx = np.asarray(sel.pool_indices, dtype=np.int64)
    if sel.budgets is None:  # random: no clusters, a seeded uniform draw
        extra = _padded([pool_idx[:THUMBNAILS], pool_idx[THUMBNAILS: 2 * THUMBNAILS]], THUMBNAILS)
        rec.update(cluster_ids=np.full(2, -1, np.int64), extra_kind=np.asarray("pool"), extra_rows=extra,
                   extra_thumbs=thumbnails(pool, extra))
        return rec
    budgets = np.asarray(sel.budgets, dtype=np.int64)
    k = budgets.size
    of_each = np.asarray(sel.cluster_of_each, dtype=np.int64)
    augment = sel.strategy == "augment"
    picked = np.asarray(sel.id_indices, dtype=np.int64) if augment else pool_idx
    extra = _padded([picked[of_each == c] for c in range(k)], THUMBNAILS)
    id_rows = np.asarray(sel.id_nearest, dtype=np.int64)
    rec.update(cluster_ids=np.arange(k, dtype=np.int64),
               cluster_sizes=np.bincount(np.asarray(sel.id_labels, dtype=np.int64), minlength=k).astype(np.int64),
               cluster_tailness=np.asarray(_numpy(sel.cluster_tailness), dtype=np.float32), budgets=budgets,
               centroids=np.asarray(sel.centroids, dtype=np.float32), id_rows=id_rows,
               id_thumbs=thumbnails(id_images, id_rows), extra_kind=np.asarray("id copies" if augment else "pool"),
               extra_rows=extra, extra_thumbs=thumbnails(id_images if augment else pool, extra))
    return rec


def record_state(rec: dict) -> torch.Tensor:
    """``rec`` as one uint8 tensor (its .npz bytes) for a resume checkpoint (weights_only: no numpy)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in rec.items()})
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def record_from_state(t: torch.Tensor) -> dict:
    with np.load(io.BytesIO(t.numpy().tobytes())) as f:
        return {k: f[k] for k in f.files}

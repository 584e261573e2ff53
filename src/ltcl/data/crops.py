"""Square crops of a photo resized to a pool image: the crop machinery of the OOD pools.

The bundled pool (crops of the photos in the scikit-image / scikit-learn wheels) and a folder
pool (crops of the user's own photos, :mod:`ltcl.data.folderpool`) draw their boxes the same
way: side = ``frac`` x the photo's short side, top-left corner at ``(u, v)`` of the free range,
so a box is always square and inside the photo (the aspect ratio of what is cut out is never
changed), and an antialiased resize of every box of a photo in one batched ``roi_align`` call
on a 2x-average-pooled pyramid (see :func:`crop_into`).
"""

from __future__ import annotations

import numpy as np

from ltcl.errors import UserError

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
CROP_BYTES = 64 << 20  # float32 roi_align output per batched call (bounds the transient memory)


def check_crop_scale(crop_scale) -> tuple[float, float]:
    """``ood.crop_scale`` as (lo, hi) with 0 < lo <= hi <= 1 (fractions of the short side)."""
    try:
        lo, hi = (float(x) for x in crop_scale)
    except (TypeError, ValueError):
        raise UserError(f"ood.crop_scale must be [lo, hi], got {crop_scale!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise UserError(f"ood.crop_scale must be [lo, hi] with 0 < lo <= hi <= 1 (the crop side as a fraction "
                         f"of the photo's short side), got {list(crop_scale)!r}")
    return lo, hi


def as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """A photo as contiguous HxWx3 uint8 (bool scaled to 0/255, gray replicated, alpha dropped)."""
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        raise UserError(f"expected a uint8 photo, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def pyramid(photo: np.ndarray, channels: int, levels: int, first: int = 0) -> list[np.ndarray | None]:
    """Float32 CHW arrays of the photo at scales 1, 1/2, 1/4, ... (2x2 average pooling); levels
    below ``first`` are dropped (None) once the next one is computed, so a large photo whose
    crops are all read from coarse levels does not keep its full-size float copy.

    Odd sizes are edge-padded first, so an edge window averages its in-bounds pixels (PyTorch's
    ``avg_pool2d(ceil_mode=True)``) and a box scaled by 2**-k never leaves the level-k image.
    numpy rather than torch: these small ops are dominated by intra-op thread hand-offs on a
    busy 2-core machine.  Every level's values do not depend on ``first``.
    """
    if channels == 1:
        img = np.asarray(photo, dtype=np.float32) @ LUMA
        img = img[None]
    else:  # transposed as uint8, then one float32 copy (not two)
        img = np.ascontiguousarray(np.asarray(photo).transpose(2, 0, 1), dtype=np.float32)
    out: list[np.ndarray | None] = [img]
    for k in range(levels):
        c, h, w = out[-1].shape
        prev = out[-1]
        padded = np.pad(prev, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge") if (h % 2 or w % 2) else prev
        q = padded.reshape(c, (h + 1) // 2, 2, (w + 1) // 2, 2)
        # the 2x2 mean, summed pairwise along rows then across them: bit for bit numpy's
        # mean(axis=(2, 4), dtype=float32), which it replaced (2-5x faster on a 5120x2880 photo)
        level = q[:, :, 0, :, 0] + q[:, :, 0, :, 1]
        level += q[:, :, 1, :, 0] + q[:, :, 1, :, 1]
        level /= np.float32(4)
        out.append(level)
        del padded, prev, q
        if k < first:
            out[k] = None
    return out


def crop_boxes(hw: tuple[int, int], frac: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n, 3) float64 ``x0, y0, side`` of square boxes in a photo of height, width ``hw``:
    side = frac x the short side, the corner at (u, v) of the free range (so inside the photo)."""
    h, w = hw
    side = np.asarray(frac, dtype=np.float64) * min(h, w)
    return np.stack([np.asarray(u) * (w - side), np.asarray(v) * (h - side), side], axis=1)


def crop_levels(boxes: np.ndarray, image_size: int) -> np.ndarray:
    """The pyramid level each box is read from: the one where its side is 1-2x ``image_size``."""
    return np.maximum(0, np.floor(np.log2(boxes[:, 2] / image_size))).astype(np.int64)


def crop_into(levels: list[np.ndarray | None], boxes: np.ndarray, flip: np.ndarray, image_size: int,
              out: np.ndarray, rows: np.ndarray) -> None:
    """Write the crop of ``boxes[i]`` (x0, y0, side in level-0 pixels), horizontally flipped
    where ``flip[i]``, to ``out[rows[i]]`` (uint8 HWC; ``out`` may be a memory-mapped pool file).

    Each box is read from the pyramid level where its side is 1-2x the output size
    (``spatial_scale`` maps level-0 coordinates there); ``torchvision.ops.roi_align`` with
    ``sampling_ratio=2`` then averages 2x2 bilinear samples per output pixel, which covers each
    output pixel's footprint: an antialiased resize of every box in batched calls instead of one
    PIL resize per crop.  Batches hold at most :data:`CROP_BYTES` of float32 output.
    """
    import torch
    from torchvision.ops import roi_align

    x0, y0, side = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    rois = np.stack([np.zeros_like(side), x0, y0, x0 + side, y0 + side], axis=1).astype(np.float32)
    level = crop_levels(boxes, image_size)
    channels = out.shape[-1]
    chunk = max(1, CROP_BYTES // (image_size * image_size * channels * 4))
    for k in np.unique(level):
        sel = np.flatnonzero(level == k)
        img = torch.from_numpy(levels[k])[None]
        for s in range(0, len(sel), chunk):
            part = sel[s:s + chunk]
            crops = roi_align(img, torch.from_numpy(rois[part]), output_size=(image_size, image_size),
                              spatial_scale=float(2.0 ** -k), sampling_ratio=2, aligned=True).numpy()
            crops = np.where(flip[part, None, None, None], crops[..., ::-1], crops)
            out[rows[part]] = np.rint(crops).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def crop_photo(photo: np.ndarray, boxes: np.ndarray, flip: np.ndarray, image_size: int, channels: int,
               out: np.ndarray, rows: np.ndarray) -> None:
    """All crops of one HxWx3 uint8 photo into ``out[rows]``: the pyramid built once, up to the
    coarsest level a box needs and without the finer levels none needs."""
    level = crop_levels(boxes, image_size)
    crop_into(pyramid(photo, channels, int(level.max()), first=int(level.min())), boxes, flip, image_size,
              out, rows)

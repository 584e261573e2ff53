"""Batched SimCLR augmentation (kornia) and eval-time normalisation of uint8 image batches.

The contrastive methods augment whole uint8 batches on the training device instead of per-image
PIL transforms in data-loader workers. ``SimCLRAugment`` reproduces the CIFAR recipe of SimCLR
(Chen et al. 2020) as used by SDCLR/COLT::

    RandomResizedCrop(size, scale=(0.08, 1)) -> RandomHorizontalFlip()
    -> RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8) -> RandomGrayscale(p=0.2)

with independent random parameters for every sample (kornia ``same_on_batch=False``).

Differences from the torchvision/PIL pipeline (documented choices):

* Colour jitter is ``kornia.augmentation.ColorJitter``, whose four steps use torchvision's formulas
  (``ColorJiggle`` is kornia's own variant). kornia draws the random *order* of the four steps once
  per call (per batch) rather than once per image; the factors themselves are per image.
* The crop is resampled bilinearly through one batched warp (``cropping_mode="resample"``);
  kornia's ``"slice"`` mode loops over samples in Python. SDCLR's PIL pipeline uses bicubic
  interpolation; bilinear avoids bicubic's overshoot outside [0, 1].
* Data with ``channels != 3`` (grey digits) skips saturation, hue and random grayscale, which are
  undefined or no-ops without colour; brightness and contrast jitter are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import numpy as np
import torch
from torch import nn

from ltcl.errors import UserError

__all__ = [
    "SimCLRAugment",
    "two_views",
    "to_nchw_float",
    "to_float_normalised",
    "Normalize",
    "dataset_stats",
]

MIN_IMAGE_SIZE = 8


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise UserError(f"x must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


def to_nchw_float(x: torch.Tensor | np.ndarray, channels: int) -> torch.Tensor:
    """Convert an image batch to float32 NCHW in [0, 1].

    ``x`` is ``(N, H, W, channels)`` (NHWC), ``(N, channels, H, W)`` (NCHW) or, for
    ``channels == 1``, ``(N, H, W)``. uint8 input is divided by 255; floating input is assumed to be
    in [0, 1] already. Spatial sizes are >= 8, so the layout is unambiguous from ``channels``.
    """
    x = _as_tensor(x)
    if x.ndim == 3 and channels == 1:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise UserError(f"x must have shape (N, H, W, C) or (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[1] == channels and x.shape[-1] != channels:
        pass  # NCHW
    elif x.shape[-1] == channels:
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW (a view)
    else:
        raise UserError(f"x has shape {tuple(x.shape)}: neither dim 1 nor dim 3 equals channels={channels}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if x.is_floating_point():
        return x.float()
    raise UserError(f"x must be uint8 or floating point, got dtype {x.dtype}")


def _stats_tensor(values: Sequence[float] | None, channels: int, default: float, arg: str) -> torch.Tensor:
    if values is None:
        values = (default,) * channels
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if t.numel() != channels:
        raise UserError(f"{arg} must have {channels} values (one per channel), got {t.numel()}")
    if arg == "std" and bool((t <= 0).any()):
        raise UserError(f"std must be positive, got {t.tolist()}")
    return t.reshape(1, channels, 1, 1)


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = (x - mean.to(x.device)) / std.to(x.device)
    return x.contiguous(memory_format=torch.channels_last)


def to_float_normalised(
    x_uint8: torch.Tensor | np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Eval transform: uint8 NHWC (or NCHW) batch -> float32 NCHW ``(x / 255 - mean) / std``, channels_last."""
    channels = len(mean)
    return _normalise(
        to_nchw_float(x_uint8, channels),
        _stats_tensor(mean, channels, 0.0, "mean"),
        _stats_tensor(std, channels, 1.0, "std"),
    )


class Normalize(nn.Module):
    """``nn.Module`` form of ``to_float_normalised`` (the evaluation-time transform)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.channels = len(mean)
        self.register_buffer("mean", _stats_tensor(mean, self.channels, 0.0, "mean"), persistent=False)
        self.register_buffer("std", _stats_tensor(std, self.channels, 1.0, "std"), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _normalise(to_nchw_float(x, self.channels), self.mean, self.std)


class SimCLRAugment(nn.Module):
    """SimCLR augmentation of a whole uint8 batch with per-sample random parameters.

    ``forward(x)`` takes uint8 ``(N, H, W, C)`` or ``(N, C, H, W)`` on any device and returns float32
    ``(N, C, image_size, image_size)`` normalised by ``mean``/``std`` (``None`` = no shift / scale,
    i.e. values in [0, 1]) in channels_last memory format. Randomness comes from torch's global
    generator, so ``torch.manual_seed`` makes it reproducible.

    Args:
        image_size: output side length (>= 8).
        channels: number of image channels; ``channels != 3`` uses brightness/contrast jitter only.
        crop_scale: area range of RandomResizedCrop (aspect ratio range (3/4, 4/3)).
        jitter: (brightness, contrast, saturation, hue) strengths of the colour jitter.
        jitter_p: probability of applying the colour jitter.
        gray_p: probability of random grayscale (3-channel data only).
        flip: whether to apply a random horizontal flip (p = 0.5).
        mean, std: per-channel normalisation statistics in [0, 1] units.
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        *,
        crop_scale: tuple[float, float],
        jitter: tuple[float, float, float, float],
        jitter_p: float,
        gray_p: float,
        flip: bool,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise UserError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")
        if not isinstance(channels, int) or channels < 1:
            raise UserError(f"channels must be a positive int, got {channels!r}")
        lo, hi = (float(v) for v in crop_scale)
        if not 0.0 < lo <= hi <= 1.0:
            raise UserError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale!r}")
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise UserError(f"jitter must be 4 non-negative values with hue <= 0.5, got {jitter!r}")
        for arg, p in (("jitter_p", jitter_p), ("gray_p", gray_p)):
            if not 0.0 <= p <= 1.0:
                raise UserError(f"{arg} must be in [0, 1], got {p!r}")
        self.image_size = image_size
        self.channels = channels
        brightness, contrast, saturation, hue = (float(v) for v in jitter)
        ops: list[nn.Module] = [
            K.RandomResizedCrop(
                (image_size, image_size),
                scale=(lo, hi),
                ratio=(3.0 / 4.0, 4.0 / 3.0),
                resample="BILINEAR",
                cropping_mode="resample",
                same_on_batch=False,
            )
        ]
        if flip:
            ops.append(K.RandomHorizontalFlip(p=0.5, same_on_batch=False))
        if channels == 3:
            ops.append(K.ColorJitter(brightness, contrast, saturation, hue, p=jitter_p, same_on_batch=False))
            if gray_p > 0:
                ops.append(K.RandomGrayscale(p=gray_p, same_on_batch=False))
        elif brightness > 0 or contrast > 0:
            # No colour: saturation / hue / grayscale are undefined for non-RGB data.
            ops.append(K.ColorJitter(brightness, contrast, 0.0, 0.0, p=jitter_p, same_on_batch=False))
        self.ops = nn.Sequential(*ops)
        self.register_buffer("mean", _stats_tensor(mean, channels, 0.0, "mean"), persistent=False)
        self.register_buffer("std", _stats_tensor(std, channels, 1.0, "std"), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.unnormalised(x))

    def unnormalised(self, x: torch.Tensor) -> torch.Tensor:
        """The augmented batch before normalisation: float32 NCHW in [0, 1] (BCL's RandAugment
        ops act here, between the SimCLR ops and the normalisation, as in its released code)."""
        x = to_nchw_float(x, self.channels).contiguous()
        with torch.no_grad():
            x = self.ops(x)
        return x.clamp_(0.0, 1.0)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` of a float NCHW batch in [0, 1], channels_last."""
        return _normalise(x, self.mean, self.std)


def two_views(aug: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of the batch ``x`` (one augmentation call on ``[x; x]``)."""
    n = x.shape[0]
    views = aug(torch.cat([_as_tensor(x), _as_tensor(x)], dim=0))
    return views[:n], views[n:]


def dataset_stats(x_uint8: torch.Tensor | np.ndarray, chunk_bytes: int = 16 << 20) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std, in [0, 1] units, of a uint8 ``(N, H, W, C)`` or ``(N, H, W)`` array.

    Sums are accumulated exactly in int64 over chunks of about ``chunk_bytes`` of images, so
    memory stays small and the result does not depend on float summation order. A memory map
    of a whole split file is read by rows (:class:`~ltcl.data.rows.DiskRows`), so a paper-scale
    split is never mapped into the process.
    """
    rows = None
    if isinstance(x_uint8, np.memmap) and x_uint8.ndim == 4 and x_uint8.filename:
        from ltcl.data.rows import DiskRows

        disk = DiskRows(x_uint8.filename)
        rows = disk if len(disk) == len(x_uint8) and disk.offset == x_uint8.offset else None
    x = x_uint8.cpu().numpy() if isinstance(x_uint8, torch.Tensor) else np.asarray(x_uint8)
    if x.dtype != np.uint8:
        raise UserError(f"x_uint8 must have dtype uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise UserError(f"x_uint8 must have shape (N, H, W, C) or (N, H, W) with N > 0, got {x.shape}")
    total = np.zeros(x.shape[-1], dtype=np.int64)
    total_sq = np.zeros(x.shape[-1], dtype=np.int64)
    chunk = max(1, chunk_bytes // max(1, int(np.prod(x.shape[1:]))))
    for start in range(0, x.shape[0], chunk):
        stop = min(start + chunk, x.shape[0])
        block = (rows.take(np.arange(start, stop)).numpy() if rows is not None else x[start:stop]).astype(np.int64)
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block * block).sum(axis=(0, 1, 2))
    count = x.shape[0] * x.shape[1] * x.shape[2]
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    return tuple(float(m / 255.0) for m in mean), tuple(float(s / 255.0) for s in np.sqrt(var))

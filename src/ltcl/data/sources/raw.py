"""The :class:`RawDataset` every source returns, its validation and resizing.

:func:`validate_raw` checks and normalises a loaded data set (NHWC ``uint8``
images, ``int64`` labels in range, every class present in train) and
:func:`resize_images` resizes image arrays with antialiased bilinear
interpolation; :func:`ltcl.data.sources.load_source` applies both to every source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ltcl.errors import UserError


@dataclass
class RawDataset:
    """A labelled image data set with an official (or fixed) train/test split.

    Images are ``uint8`` arrays of shape (N, H, W, C); labels ``int64`` in
    ``0..len(class_names)-1``. ``skipped`` lists image files that were skipped
    as unreadable (``folder`` source with ``on_bad_image="skip"``).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def _check_images(x: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise UserError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"{what}: expected images of shape (N, H, W, C) with C in (1, 3), got {x.shape}")
    if x.dtype != np.uint8:
        raise UserError(f"{what}: expected dtype uint8, got {x.dtype}")
    return x


def validate_raw(raw: RawDataset, where: str | os.PathLike | None = None) -> RawDataset:
    """Check shapes, dtypes and labels of a :class:`RawDataset`; return it normalised.

    Raises ValueError for: non-uint8 or non-NHWC images, train/test images of
    different sizes or channel counts, label arrays of the wrong length, labels
    outside ``0..C-1`` (C = ``len(class_names)``) and classes absent from train.  Messages
    start with the data set's name and ``where`` (its file or folder) when given.
    """
    name = raw.name if where is None else f"{raw.name} {where}"
    x_train = _check_images(raw.x_train, f"{name}: x_train")
    x_test = _check_images(raw.x_test, f"{name}: x_test")
    if x_train.shape[-1] != x_test.shape[-1]:
        raise UserError(
            f"{name}: mixed channel counts: train images have {x_train.shape[-1]} channel(s) "
            f"(shape {x_train.shape[1:]}), test images {x_test.shape[-1]} (shape {x_test.shape[1:]}); "
            "convert both splits to grayscale or both to RGB"
        )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(
            f"{name}: mixed image sizes: train images are {x_train.shape[1:3]}, "
            f"test images are {x_test.shape[1:3]} (set data.image_size to resize both)"
        )
    num_classes = len(raw.class_names)
    if num_classes < 1:
        raise UserError(f"{name}: class_names is empty")
    ys = []
    for split, x, y in (("train", x_train, raw.y_train), ("test", x_test, raw.y_test)):
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise UserError(f"{name}: y_{split} must be 1-D with {len(x)} labels, got shape {y.shape}")
        if len(y) and not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{name}: y_{split} must hold integers, got dtype {y.dtype}")
        y = y.astype(np.int64, copy=False)
        bad = np.unique(y[(y < 0) | (y >= num_classes)])
        if bad.size:
            raise UserError(
                f"{name}: y_{split} has out-of-range labels {bad.tolist()}; "
                f"allowed 0..{num_classes - 1} ({num_classes} classes)"
            )
        ys.append(y)
    present = np.bincount(ys[0], minlength=num_classes)
    missing = np.flatnonzero(present == 0)
    if missing.size:
        names = [f"{c} ({raw.class_names[c]})" for c in missing.tolist()]
        raise UserError(f"{name}: classes missing from the train split: {', '.join(names)}")
    raw.x_train, raw.x_test = x_train, x_test
    raw.y_train, raw.y_test = ys
    raw.class_names = [str(c) for c in raw.class_names]
    return raw


def resize_images(x: np.ndarray, size: int | tuple[int, int], chunk: int = 4096) -> np.ndarray:
    """Resize uint8 NHWC images to ``size`` with antialiased bilinear interpolation.

    Uses ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``
    in chunks of ``chunk`` images; returns ``x`` itself when already that size.
    """
    import torch
    import torch.nn.functional as F

    x = _check_images(x, "resize_images: x")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) < 1:
        raise UserError(f"resize_images: size must be a positive int or (h, w), got {size!r}")
    if tuple(x.shape[1:3]) == hw:
        return x
    out = np.empty((len(x), hw[0], hw[1], x.shape[3]), dtype=np.uint8)
    for start in range(0, len(x), chunk):
        t = torch.from_numpy(np.ascontiguousarray(x[start:start + chunk])).permute(0, 3, 1, 2).float()
        r = F.interpolate(t, size=hw, mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = r.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out

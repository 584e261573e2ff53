"""The ``folder`` source: ImageFolder trees of image files, and the image-file helpers.

Lists image files under a root without following symlinks out of it, decodes
them with PIL in a thread pool (unreadable files raise or, with
``on_bad_image="skip"``, are skipped and logged), and stacks them into one
array; :mod:`ltcl.data.pool` reuses these helpers for its photo pool.
"""

from __future__ import annotations

import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ltcl.data.sources.raw import RawDataset
from ltcl.errors import MissingInputError, UserError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
ON_BAD_IMAGE = ("error", "skip")

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def list_image_files(directory: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Path]:
    """Image files (by extension) under ``directory``, recursively, in sorted order.

    Symlinks are resolved; any directory or image whose real path lies outside
    ``root`` (default: ``directory``) raises ValueError naming it. Symlink
    cycles are visited once.
    """
    directory = Path(directory)
    real_root = os.path.realpath(root if root is not None else directory)
    files: list[Path] = []
    seen: set[str] = set()

    def walk(d: Path) -> None:
        real = os.path.realpath(d)
        if not _is_within(real, real_root):
            raise UserError(f"refused {d}: it resolves to {real}, outside the data root {real_root}")
        if real in seen:
            return
        seen.add(real)
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=True):
                walk(path)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                real_file = os.path.realpath(path)
                if not _is_within(real_file, real_root):
                    raise UserError(f"refused {path}: it resolves to {real_file}, outside the data root {real_root}")
                files.append(path)

    walk(directory)
    return files


def read_image_file(path: str | os.PathLike, size: int | None) -> np.ndarray:
    """Decode one image file to uint8 HxWxC (C = 1 for grayscale modes, else 3).

    Resized (when ``size`` is given) to (size, size) with PIL bilinear
    resampling, which antialiases when shrinking; no crop, so the aspect ratio
    is not preserved. Alpha channels are dropped; GIFs use the first frame.
    Raises OSError/ValueError for unreadable or non-regular files.
    """
    from PIL import Image

    st = os.stat(path)  # follows symlinks
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path} is not a regular file")
    with Image.open(path) as im:
        im.load()
        gray = im.mode in _GRAY_MODES
        im = im.convert("L" if gray else "RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def read_image_files(paths: Sequence[Path], size: int | None, on_bad_image: str,
                     warn: bool = True) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode images with a thread pool (PIL releases the GIL while decoding).

    ``on_bad_image="error"``: the first unreadable file raises, naming it; ``"skip"``: its slot is
    None and its path is returned (logged as skipped unless ``warn`` is False: a caller that
    collects the failures to raise one error of its own says nothing was skipped)."""
    from PIL import Image

    def one(p: Path) -> np.ndarray | Exception:
        try:
            return read_image_file(p, size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, paths))
    images: list[np.ndarray | None] = []
    skipped: list[str] = []
    for p, r in zip(paths, results):
        if isinstance(r, Exception):
            if on_bad_image == "error":
                raise UserError(f"unreadable image {p}: {type(r).__name__}: {r}") from r
            if warn:
                logger.warning("skipping unreadable image %s: %s", p, r)
            skipped.append(str(p))
            images.append(None)
        else:
            images.append(r)
    return images, skipped


def check_same_size(images: Sequence[np.ndarray], what: str, paths: Sequence[Any] | None = None) -> None:
    """ValueError if the HxW sizes differ, naming up to five sizes (and, given ``paths``, one
    file of each)."""
    first: dict[tuple[int, int], Any] = {}
    for i, im in enumerate(images):
        first.setdefault(tuple(im.shape[:2]), None if paths is None else paths[i])
    if len(first) > 1:
        examples = ", ".join(f"{h}x{w}" + ("" if first[(h, w)] is None else f" ({first[(h, w)]})")
                             for h, w in sorted(first)[:5])
        raise UserError(f"{what}: mixed image sizes: {examples}; set data.image_size to resize them")


def stack_images(images: Sequence[np.ndarray], what: str, force_rgb: bool | None = None,
                 paths: Sequence[Any] | None = None) -> np.ndarray:
    """Stack HxWxC images; grayscale is expanded to RGB unless all are grayscale.

    Mixed spatial sizes raise ValueError (see :func:`check_same_size`; set image_size to resize).
    """
    if not images:
        raise UserError(f"{what}: no images")
    check_same_size(images, what, paths)
    rgb = any(im.shape[2] == 3 for im in images) if force_rgb is None else force_rgb
    if rgb:
        images = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    return np.stack(images).astype(np.uint8, copy=False)


def load_folder_source(
    root: Path | None, download: bool, image_size: int | None, on_bad_image: str, **_: Any,
) -> RawDataset:
    """ImageFolder layout: root/train/<class>/**/*.{png,jpg,jpeg,bmp,gif,webp}, root/test/<class>/...

    Classes are the sorted sub-directory names of root/train (test classes must
    be among them). Every image is resized to (image_size, image_size) with PIL
    bilinear (no crop); without image_size all images must share one size.
    Images are RGB unless every image in train and test is grayscale (then C=1).
    Paths whose real path leaves ``root`` (symlinks) are refused.
    """
    if root is None:
        raise UserError("folder: root (the directory holding train/ and test/) is required")
    if on_bad_image not in ON_BAD_IMAGE:
        raise UserError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    root = Path(root)
    real_root = os.path.realpath(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise MissingInputError(f"folder: {root / split} not found (expected root/train/<class>/ and root/test/<class>/)")
    class_names = sorted(e.name for e in os.scandir(root / "train") if e.is_dir(follow_symlinks=True))
    if not class_names:
        raise UserError(f"folder: {root / 'train'} has no class sub-directories")
    test_classes = sorted(e.name for e in os.scandir(root / "test") if e.is_dir(follow_symlinks=True))
    unknown = sorted(set(test_classes) - set(class_names))
    if unknown:
        raise UserError(f"folder: test classes {unknown} have no train directory in {root / 'train'}")
    split_images: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    split_paths: dict[str, list[Path]] = {}
    skipped: list[str] = []
    for split, classes in (("train", class_names), ("test", test_classes)):
        paths: list[Path] = []
        labels: list[int] = []
        for cls in classes:
            found = list_image_files(root / split / cls, real_root)
            paths += found
            labels += [class_names.index(cls)] * len(found)
        imgs, bad = read_image_files(paths, image_size, on_bad_image)
        skipped += bad
        keep = [i for i, im in enumerate(imgs) if im is not None]
        split_images[split] = ([imgs[i] for i in keep], np.asarray([labels[i] for i in keep], dtype=np.int64))
        split_paths[split] = [paths[i] for i in keep]
    all_imgs = split_images["train"][0] + split_images["test"][0]
    rgb = any(im.shape[2] == 3 for im in all_imgs)
    check_same_size(all_imgs, f"folder {root}", split_paths["train"] + split_paths["test"])  # train and test
    x_tr = stack_images(split_images["train"][0], f"folder {root / 'train'}", force_rgb=rgb,
                        paths=split_paths["train"])
    x_te = stack_images(split_images["test"][0], f"folder {root / 'test'}", force_rgb=rgb, paths=split_paths["test"])
    raw = RawDataset("folder", x_tr, split_images["train"][1], x_te, split_images["test"][1], class_names, skipped)
    return raw

"""The OOD pool of ``ood.source: folder``: ``ood.pool_size`` random square crops of the photos
under ``ood.path``, so 50 wallpapers give a pool of thousands of images.

The crops are drawn as the bundled pool draws them (:mod:`ltcl.data.crops`: side uniform in
``ood.crop_scale`` x the photo's short side, uniform position, horizontal flip with p = 0.5,
antialiased resize, ITU-R 601 luma for a grayscale ID set): a square box cut from the photo as
it is, never the photo squashed to a square.  The files share the crops evenly, in a seeded
order: with fewer files than ``ood.pool_size`` every file gets ``pool_size // files`` crops and
the first ``pool_size % files`` of the order one more; with more files, the first
``pool_size`` files of the order give one crop each.  A file that cannot be decoded is skipped
with a warning and its share goes to the files after it (each file takes the ceiling of the
crops still to make over the files still to try; should the last files fail, the readable ones
are cut again), so the pool always holds exactly ``ood.pool_size`` images.

Photos are decoded one at a time (a 5120x2880 photo is 44 MB, its float pyramid ~4x that) and
the crops are written straight into the output array, which the ood-pool stage opens as the
memory-mapped pool file, in a seeded shuffled order of rows (a prefix of the pool mixes files).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltcl.data.crops import as_rgb_uint8, check_crop_scale, crop_boxes, crop_photo
from ltcl.data.sources.folder import IMAGE_EXTENSIONS, list_image_files, read_image_file
from ltcl.errors import UserError
from ltcl.io import atomic_path

logger = logging.getLogger(__name__)

FILE_LIST_MAX = 1000  # pool.json names the files (and their crops) up to this many; above, count + sha256


@dataclass
class FolderCrops:
    """What a folder pool was cut from: every image file found (sorted), the crops each used
    file gave, the files skipped, and per pool row its file, box and flip."""

    root: Path
    paths: list[Path]
    crops: dict[int, int]  # file index -> crops taken from it
    skipped: list[int]  # file indices that could not be decoded
    file_of: np.ndarray  # (pool_size,) int64: the file each pool row was cut from
    boxes: np.ndarray  # (pool_size, 3) float64: x0, y0, side of each row's square box, in photo pixels
    flip: np.ndarray  # (pool_size,) bool: row flipped horizontally

    def name(self, i: int) -> str:
        return self.paths[i].relative_to(self.root).as_posix()

    def record(self) -> dict:
        """The pool.json entry: files used with their crops (or, above :data:`FILE_LIST_MAX`
        files, their count and the sha256 of the ``path<TAB>crops`` lines), files skipped."""
        used = sorted((self.name(i), n) for i, n in self.crops.items())
        skipped = sorted(self.name(i) for i in self.skipped)
        lines = "".join(f"{p}\t{n}\n" for p, n in used)
        counts = [n for _, n in used]
        rec = {
            "image_files": len(self.paths), "files_used": len(used),
            "crops_per_file": {"min": min(counts), "max": max(counts)},
            "files_sha256": hashlib.sha256(lines.encode()).hexdigest(),
            "skipped": len(skipped),
        }
        if len(used) <= FILE_LIST_MAX:
            rec["files"] = [[p, n] for p, n in used]
        rec["skipped_files"] = skipped[:FILE_LIST_MAX]
        return rec


def _decode(path: Path) -> np.ndarray | None:
    """The photo as HxWx3 uint8, or None (with a warning) when it cannot be decoded."""
    from PIL import Image

    try:
        return as_rgb_uint8(read_image_file(path, None))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        logger.warning("folder pool (ood.path): skipping unreadable image %s: %s", path, exc)
        return None


def folder_crops(root: str | os.PathLike, size: int, image_size: int, channels: int, seed: int,
                 crop_scale, out: np.ndarray) -> FolderCrops:
    """Cut ``size`` crops of the image files under ``root`` into ``out`` ((size, image_size,
    image_size, channels) uint8, an array or a memory-mapped pool file), as the module says."""
    lo, hi = check_crop_scale(crop_scale)
    if root is None or not Path(root).is_dir():
        raise UserError(f"ood.path={None if root is None else str(root)!r} is not a folder "
                         "(ood.source: folder cuts its pool from the image files under ood.path)")
    root = Path(root)
    try:
        paths = list_image_files(root)
    except UserError as exc:
        raise UserError(f"ood.path={str(root)!r}: {exc}") from None
    if not paths:
        raise UserError(f"ood.path={str(root)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                         "point ood.path at a folder of photos")
    if out.shape != (size, image_size, image_size, channels):
        raise UserError(f"folder pool: output of shape {out.shape}, expected "
                         f"{(size, image_size, image_size, channels)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    slots = rng.permutation(size)
    file_of = np.empty(size, dtype=np.int64)
    boxes = np.empty((size, 3), dtype=np.float64)
    flip = np.empty(size, dtype=bool)
    crops: dict[int, int] = {}
    skipped: list[int] = []
    bad: set[int] = set()
    pending, placed = list(order), 0
    while placed < size:
        if not pending:  # the last files in the order failed: cut the readable ones again
            if not crops:
                first = ", ".join(paths[i].name for i in skipped[:5])
                raise UserError(f"ood.path={str(root)!r}: none of its {len(paths)} image files could be decoded "
                                f"(first: {first}); point ood.path at a folder of readable photos")
            pending = [int(i) for i in order if int(i) in crops]
        for pos, i in enumerate(pending):
            if placed == size:
                break
            i = int(i)
            q = -(-(size - placed) // (len(pending) - pos))  # ceil: this file's share of what is left
            photo = None if i in bad else _decode(paths[i])
            if photo is None:
                if i not in bad:
                    bad.add(i)
                    skipped.append(i)
                continue
            frac = rng.uniform(lo, hi, size=q)
            u, v = rng.random(q), rng.random(q)
            fl = rng.random(q) < 0.5
            rows = slots[placed:placed + q]
            box = crop_boxes(photo.shape[:2], frac, u, v)
            crop_photo(photo, box, fl, image_size, channels, out, rows)
            file_of[rows], boxes[rows], flip[rows] = i, box, fl
            crops[i] = crops.get(i, 0) + q
            placed += q
            del photo
        pending = []
    if skipped:
        logger.warning("folder pool: skipped %d unreadable files under ood.path=%s (listed in pool.json)",
                       len(skipped), root)
    logger.info("folder pool: %d crops of %d files under ood.path=%s", size, len(crops), root)
    return FolderCrops(root, paths, crops, skipped, file_of, boxes, flip)


def folder_pool(root: str | os.PathLike, size: int, image_size: int, channels: int, seed: int,
                crop_scale) -> np.ndarray:
    """The folder pool in memory: the same crops :func:`write_folder_pool` writes to a file."""
    if size is None or int(size) != size or size < 1:
        raise UserError(f"ood.pool_size must be a positive int (the number of crops), got {size!r}")
    out = np.empty((int(size), int(image_size), int(image_size), int(channels)), dtype=np.uint8)
    folder_crops(root, int(size), int(image_size), int(channels), seed, crop_scale, out)
    return out


def write_folder_pool(root: str | os.PathLike, size: int, image_size: int, channels: int, seed: int,
                      crop_scale, out_path: str | os.PathLike) -> tuple[np.ndarray, FolderCrops]:
    """The folder pool cut straight into the pool file ``out_path`` (memory-mapped while it is
    written, moved into place when complete; never a second copy in memory).  Returns the pool
    memory-mapped and what it was cut from."""
    from ltcl.data.pool import open_pool

    with atomic_path(out_path) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                       shape=(int(size), int(image_size), int(image_size), int(channels)))
        made = folder_crops(root, int(size), int(image_size), int(channels), seed, crop_scale, mm)
        mm.flush()
        del mm
    return open_pool(out_path, verify=False), made

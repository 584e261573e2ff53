"""The OOD pool of ``ood.source: list``: the images a list file names, decoded once into the
pool file (its own module so that make-lt-dataset does not depend on the pool code)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ltcl.data.listdata import decode_list
from ltcl.data.lists import check_files_exist, pool_list_file, read_list
from ltcl.data.pool import open_pool, save_pool, to_channels
from ltcl.errors import UserError
from ltcl.io import atomic_path


def write_list_pool(list_file: str | os.PathLike, root: str | os.PathLike, size: int | None, image_size: int,
                    channels: int, seed: int, out_path: str | os.PathLike) -> np.ndarray:
    """The pool of ``ood.source: list``: the images a list file names (``<relative path> [label]``
    lines, labels unused; e.g. COLT's ImageNet-R list, shipped as ``imagenet-r``) under ``root``,
    all of them or a seeded random ``size`` of them in list order, decoded and resized once and
    streamed into ``out_path`` chunk by chunk (a 30,000-image pool at 224 x 224 is 4.5 GB, never
    held in memory). Missing files stop before any decoding; undecodable files stop the build,
    named and counted, and nothing is written. Returns the pool memory-mapped."""
    entries = read_list(pool_list_file(str(list_file)), need_labels=False)
    paths = entries.paths
    if size is not None and size < len(paths):
        keep = np.sort(np.random.default_rng(seed).choice(len(paths), size=size, replace=False))
        paths = [paths[i] for i in keep]
    root = Path(root).expanduser()
    check_files_exist(root, paths, f"OOD pool list {entries.path}")
    with atomic_path(out_path) as tmp:
        bad = decode_list(root, paths, tmp, int(image_size), "OOD pool", "error")  # a pool list must decode whole
        if bad:
            raise UserError(f"OOD pool list {entries.path}: {len(bad)} images could not be decoded (first: "
                            f"{', '.join(paths[i] for i in bad[:5])}); nothing was written")
        if channels == 1:  # a grayscale ID set: the pool in luma, rewritten in chunks
            rgb = np.load(tmp, mmap_mode="r")
            save_pool(str(tmp) + ".gray.npy", to_channels(rgb, 1))
            del rgb
            os.replace(str(tmp) + ".gray.npy", tmp)
    return open_pool(out_path, verify=False)

"""ood-pool: the pool of out-of-distribution images, built once per pool parameter set.

Its own stage (not part of ood-sampling) so that changing the warm-up, the strategy or any
sampling parameter never rebuilds a 300K-image pool.  Later stages memory-map ``pool.npy`` and
check it against ``pool.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ltcl.data.pool import build_pool, pool_manifest_path, save_pool, write_pool_manifest
from ltcl.errors import MissingInputError, UserError
from ltcl.io import read_json

logger = logging.getLogger(__name__)


def run(ood_cfg, lt_dir: str | os.PathLike, out_path: str | os.PathLike) -> np.ndarray:
    """The ood-pool stage: a pool matched to the ID images' size and channels (from the split
    manifest), written as a memory-mappable ``.npy`` with its sidecar manifest ``pool.json``
    (sha256, shape, dtype, pool parameters; for a folder pool the files used, crops per file and
    files skipped) that later stages check it against."""
    shape_file = Path(lt_dir) / "image.json"  # written by make-lt-dataset
    if not shape_file.is_file():
        raise MissingInputError(f"{shape_file} not found (run make-lt-dataset first)")
    h, w, c = read_json(shape_file)["image_shape"]
    if h != w:
        raise UserError(f"ID images must be square for the OOD pool, got {h}x{w}")
    source = f"source:{ood_cfg.pool_source}" if ood_cfg.source == "source" else ood_cfg.source
    size = ood_cfg.pool_size if ood_cfg.source in ("bundled", "folder", "source", "list") else None
    pool_manifest_path(out_path).unlink(missing_ok=True)  # never leave a stale manifest beside a new pool
    params = {"source": ood_cfg.source, "path": ood_cfg.path, "pool_source": ood_cfg.pool_source,
              "pool_size": ood_cfg.pool_size, "pool_seed": ood_cfg.pool_seed, "image_shape": [int(h), int(w), int(c)]}
    if ood_cfg.source in ("bundled", "folder"):  # the pools cut as crops
        params["crop_scale"] = [float(x) for x in ood_cfg.crop_scale]
    extra = None
    if ood_cfg.source == "list":  # decoded straight into the pool file, never held in memory
        from ltcl.data.listpool import write_list_pool
        from ltcl.data.lists import file_record, pool_list_file

        try:
            pool = write_list_pool(ood_cfg.path, ood_cfg.root, size, int(h), int(c), ood_cfg.pool_seed, out_path)
        except UserError as exc:  # name the params that pick the list and its folder
            raise type(exc)(f"ood.source: list (ood.path={ood_cfg.path!r}, ood.root={ood_cfg.root!r}): {exc}") from None
        params.update(root=ood_cfg.root, list_file=file_record(pool_list_file(ood_cfg.path)))
    elif ood_cfg.source == "folder":  # crops cut straight into the pool file, one photo at a time
        from ltcl.data.folderpool import write_folder_pool

        pool, made = write_folder_pool(ood_cfg.path, size, int(h), int(c), ood_cfg.pool_seed, ood_cfg.crop_scale,
                                       out_path)
        extra = {"folder": made.record()}
    else:
        pool = build_pool(source, size=size, image_size=int(h), channels=int(c), seed=ood_cfg.pool_seed,
                          root=ood_cfg.path, crop_scale=ood_cfg.crop_scale)
        save_pool(out_path, pool)
    if size is not None and ood_cfg.source not in ("bundled", "folder") and len(pool) < size:
        logger.warning("OOD pool %s has %d images, fewer than ood.pool_size=%d", source, len(pool), size)
    write_pool_manifest(out_path, pool, params=params, extra=extra)
    return pool

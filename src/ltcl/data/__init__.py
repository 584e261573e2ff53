"""Data layer: dataset sources, long-tailed splits and the OOD pool.

(``ltcl.data.augment`` is imported directly by its users, not from here.)
"""

from ltcl.data.longtail import PROFILES, longtail_counts
from ltcl.data.pool import build_pool, bundled_photos, open_pool, save_pool, to_channels
from ltcl.data.sources import (
    SOURCES,
    RawDataset,
    RestrictedUnpickler,
    load_source,
    read_idx,
    resize_images,
    restricted_loads,
    validate_raw,
)
from ltcl.data.splits import (
    SPLIT_NAMES,
    Splits,
    load_indices,
    load_manifest,
    load_split,
    make_splits,
    save_splits,
)

__all__ = [
    "PROFILES", "SOURCES", "SPLIT_NAMES", "RawDataset", "RestrictedUnpickler", "Splits",
    "build_pool", "bundled_photos", "load_indices", "load_manifest", "load_source", "load_split",
    "longtail_counts", "make_splits", "open_pool", "read_idx", "resize_images", "restricted_loads",
    "save_pool", "save_splits", "to_channels", "validate_raw",
]

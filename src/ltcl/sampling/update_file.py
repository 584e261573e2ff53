"""The file of the OOD updates' pictures (``data/ood/diagnostics.npz`` from ood-sampling,
``data/ood/pretrain_diagnostics.npz`` from pretrain): its layout, writing, reading and thinning.
numpy only, so that the report reads it without torch.

Layout: ``updates`` (how many), then per update ``i`` the arrays of
:func:`ltcl.sampling.update_pictures.update_record` under ``u<i>.<key>``.  The records hold only
functions of the inputs and params (no timings), so the file is a byte-stable DVC output
(:func:`ltcl.io.save_npz` gives its members a fixed date).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltcl.io import save_npz

PICTURE_KEYS = ("centroids", "id_rows", "id_thumbs", "extra_rows", "extra_thumbs")


def without_pictures(rec: dict) -> dict:
    """``rec`` without its thumbnails and centroids (an update between the first and the last
    of a long pre-training keeps its histogram and cluster numbers only)."""
    return {k: v for k, v in rec.items() if k not in PICTURE_KEYS}


def keep_first_and_last(records: list[dict]) -> list[dict]:
    """``records`` with the pictures of every update but the first and the last dropped: a run of
    many updates (paper 003: one every 25 of 2,000 epochs) keeps two grids, not eighty."""
    return [r if i in (0, len(records) - 1) else without_pictures(r) for i, r in enumerate(records)]


def save_updates(path: str | Path, records: list[dict]) -> None:
    """Write ``records`` (from :func:`ltcl.sampling.update_pictures.update_record`) to ``path`` (.npz, byte-stable)."""
    arrays = {"updates": np.asarray(len(records))}
    for i, rec in enumerate(records):
        arrays.update({f"u{i}.{k}": np.asarray(v) for k, v in rec.items()})
    save_npz(path, **arrays)


def load_updates(path: str | Path) -> list[dict]:
    """The records :func:`save_updates` wrote (strings as ``str``, ``epoch`` as ``int``)."""
    with np.load(path) as f:
        out: list[dict] = [{} for _ in range(int(f["updates"]))]
        for key in f.files:
            if key != "updates":
                i, name = key.split(".", 1)
                v = f[key]
                out[int(i[1:])][name] = v.item() if v.ndim == 0 else v
    return out

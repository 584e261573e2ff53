"""The ``npz`` source: one ``.npz`` archive holding x_train, y_train, x_test, y_test."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ltcl.data.sources.raw import RawDataset
from ltcl.errors import MissingInputError, UserError


def load_npz_source(root: Path | None, download: bool, **_: Any) -> RawDataset:
    """An ``.npz`` with x_train, y_train, x_test, y_test (and optionally class_names).

    ``root`` is the file itself or a directory containing ``data.npz``. Without
    class_names, classes are 0..max(label) named "0", "1", ...
    """
    if root is None:
        raise UserError("npz: root (the .npz file or a directory holding data.npz) is required")
    path = Path(root)
    if path.is_dir():
        path = path / "data.npz"
    if not path.is_file():
        raise MissingInputError(f"npz: {path} not found")
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise UserError("a single array, not an .npz archive")
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise UserError(f"lacks arrays {missing} (has {f.files})")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            names = [str(n) for n in f["class_names"].tolist()] if "class_names" in f.files else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UserError(f"npz: {path}: unreadable or corrupt: {exc}") from exc
    if names is None:
        top = max(int(arrays["y_train"].max(initial=-1)), int(arrays["y_test"].max(initial=-1)))
        names = [str(i) for i in range(top + 1)]
    return RawDataset("npz", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], names)

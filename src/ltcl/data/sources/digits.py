"""The ``digits`` source: scikit-learn's bundled 8x8 digits, with a fixed stratified split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ltcl.data.sources.raw import RawDataset


def load_digits_source(root: Path | None, download: bool, **_: Any) -> RawDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 -> 0..255).

    No official test split: a deterministic stratified split with
    ``train_test_split(test_size=1/3, random_state=0, stratify=y)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=1 / 3, random_state=0, stratify=y)
    return RawDataset("digits", x_tr, y_tr, x_te, y_te, [str(i) for i in range(10)])

"""The ``mnist`` and ``fashion-mnist`` sources: LeCun's IDX files, gzipped or not.

:func:`read_idx` parses one IDX file; the loaders look for the four files in
``root`` and the folders torchvision downloads into (and, for Fashion-MNIST,
Debian's ``/usr/share/datasets/fashion-mnist``), optionally downloading them
with torchvision first.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ltcl.data.sources.raw import RawDataset
from ltcl.errors import MissingInputError, UserError

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """File content, gunzipped when the file starts with the gzip magic."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(f"corrupt or truncated gzip file {path}: {exc}") from exc
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format), gzipped or not.

    Layout: 2 zero bytes, a dtype code (0x08 ubyte, 0x09 byte, 0x0B short,
    0x0C int, 0x0D float, 0x0E double), the number of dimensions d, d
    big-endian uint32 sizes, then the data in C order. Hand-written because
    it is ~20 lines and lets us report a truncated file by name (torchvision's
    reader only exists inside its Dataset classes).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise UserError(f"IDX file {path} is truncated: {len(data)} bytes, no header")
    if data[0] != 0 or data[1] != 0:
        raise UserError(f"IDX file {path} has a bad magic number {data[:4].hex()} (must start with 0000)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise UserError(f"IDX file {path} has an unknown dtype code 0x{code:02x}")
    if ndim < 1:
        raise UserError(f"IDX file {path} declares {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"IDX file {path} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "longer than declared"
        raise UserError(
            f"IDX file {path} is {kind}: header declares shape {dims} ({expected} data bytes), "
            f"file has {actual} data bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _idx_dirs(name: str, root: Path | None) -> list[Path]:
    dirs: list[Path] = []
    if root is not None:
        tv = _TORCHVISION_NAMES[name]
        dirs += [root, root / name, root / name / "raw", root / tv, root / tv / "raw"]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST_DIR)
    return dirs


def _find_idx_files(name: str, root: Path | None) -> dict[str, Path] | None:
    """The first directory holding all four IDX files (each raw or ``.gz``)."""
    for d in _idx_dirs(name, root):
        found: dict[str, Path] = {}
        for key, stem in _IDX_FILES.items():
            for candidate in (d / stem, d / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _idx_missing_message(name: str, root: Path | None) -> str:
    looked = [str(d / f"{stem}[.gz]") for d in _idx_dirs(name, root) for stem in _IDX_FILES.values()]
    how = (
        "set data.download: true (torchvision download into root) or place the four IDX files "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, "
        "optionally .gz) in root"
    )
    if name == "fashion-mnist":
        how += "; or `apt-get install dataset-fashion-mnist` (installs them in /usr/share/datasets/fashion-mnist)"
    if root is None:
        how += "; no root was given"
    return f"{name}: IDX files not found. Looked in: {', '.join(looked)}. To obtain the data: {how}."


def _download_mnist_like(name: str, root: Path) -> None:
    """Download with torchvision (writes root/<MNIST|FashionMNIST>/raw/*)."""
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def _load_idx_source(name: str, root: Path | None, download: bool, class_names: list[str]) -> RawDataset:
    files = _find_idx_files(name, root)
    if files is None and download:
        if root is None:
            raise UserError(f"{name}: download=True needs a root directory to download into")
        _download_mnist_like(name, root)
        files = _find_idx_files(name, root)
    if files is None:
        raise MissingInputError(_idx_missing_message(name, root))
    arrays = {key: read_idx(path) for key, path in files.items()}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3 or arrays[key].dtype != np.uint8:
            raise UserError(f"IDX file {files[key]}: expected uint8 images (N, H, W), got "
                             f"{arrays[key].dtype} {arrays[key].shape}")
    for key, xkey in (("y_train", "x_train"), ("y_test", "x_test")):
        if arrays[key].ndim != 1 or len(arrays[key]) != len(arrays[xkey]):
            raise UserError(f"IDX file {files[key]}: expected {len(arrays[xkey])} labels (one per image "
                             f"in {files[xkey]}), got shape {arrays[key].shape}")
    return RawDataset(
        name,
        arrays["x_train"][..., None], arrays["y_train"].astype(np.int64),
        arrays["x_test"][..., None], arrays["y_test"].astype(np.int64),
        list(class_names),
    )


def load_mnist_source(root: Path | None, download: bool, **_: Any) -> RawDataset:
    """MNIST from IDX files under ``root`` (also root/mnist[/raw], root/MNIST/raw)."""
    return _load_idx_source("mnist", root, download, [str(i) for i in range(10)])


def load_fashion_mnist_source(root: Path | None, download: bool, **_: Any) -> RawDataset:
    """Fashion-MNIST from IDX files under ``root`` or Debian's /usr/share/datasets/fashion-mnist."""
    return _load_idx_source("fashion-mnist", root, download, FASHION_MNIST_CLASSES)

"""The ``cifar10`` and ``cifar100`` sources: the official python batches.

Batches are read from the extracted ``cifar-10-batches-py`` / ``cifar-100-python``
folder or straight from the ``.tar.gz``, always through
:func:`ltcl.data.unpickle.restricted_loads` (never an unrestricted
``pickle.load``); ``download=True`` fetches the archive with torchvision's
MD5-verified downloader.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ltcl.data.sources.raw import RawDataset
from ltcl.data.unpickle import restricted_loads
from ltcl.errors import MissingInputError, UserError

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": b"labels",
        "names": b"label_names",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": b"fine_labels",
        "names": b"fine_label_names",
    },
}


class _CifarReader:
    """Reads the CIFAR members from an extracted folder or from the .tar.gz."""

    def __init__(self, name: str, root: Path | None):
        self.name, self.spec = name, _CIFAR[name]
        self.looked: list[str] = []
        self.folder: Path | None = None
        self.archive: Path | None = None
        if root is None:
            return
        spec = self.spec
        needed = spec["train"] + spec["test"]
        for base in (root, root / name):
            for folder in (base / spec["folder"], base):
                self.looked.append(str(folder / ("{" + ",".join(needed) + "}")))
                if all((folder / f).is_file() for f in needed):
                    self.folder = folder
                    return
        for archive in (root / spec["archive"], root / name / spec["archive"], root):
            self.looked.append(str(archive))
            if archive.is_file() and archive.name.endswith((".tar.gz", ".tgz", ".tar")):
                self.archive = archive
                return

    @property
    def found(self) -> bool:
        return self.folder is not None or self.archive is not None

    def read_all(self, members: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.folder is not None:
            for m in list(members) + list(optional):
                path = self.folder / m
                if path.is_file():
                    out[m] = restricted_loads(path.read_bytes(), str(path))
                elif m in members:
                    raise MissingInputError(f"{self.name}: missing {path}")
            return out
        assert self.archive is not None
        prefix = self.spec["folder"] + "/"
        try:
            with tarfile.open(self.archive, "r:*") as tf:
                for m in list(members) + list(optional):
                    what = f"{self.archive}:{prefix}{m}"
                    try:
                        info = tf.getmember(prefix + m)
                    except KeyError:
                        if m in members:
                            raise MissingInputError(f"{self.name}: {self.archive} has no member {prefix}{m}") from None
                        continue
                    if not info.isfile():
                        raise UserError(f"{what} is not a regular file in the archive")
                    fh = tf.extractfile(info)
                    assert fh is not None
                    out[m] = restricted_loads(fh.read(), what)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise UserError(f"{self.name}: corrupt or truncated archive {self.archive}: "
                             f"{type(exc).__name__}: {exc}") from exc
        return out


def _cifar_batch(batch: Any, what: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise UserError(f"{what}: expected a dict with keys b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{what}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise UserError(f"{what}: {label_key!r} must hold {len(data)} labels, got shape {labels.shape}")
    # rows are 1024 R, 1024 G, 1024 B values, each a 32x32 row-major plane
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _download_cifar(name: str, root: Path) -> None:
    """Download and extract the official archive with torchvision's verified (MD5) downloader.

    We use torchvision's URL/MD5 constants and ``download_and_extract_archive``
    rather than constructing ``torchvision.datasets.CIFAR10`` so that nothing is
    ever read with an unrestricted ``pickle.load``.
    """
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)


def _load_cifar(name: str, root: Path | None, download: bool) -> RawDataset:
    reader = _CifarReader(name, root)
    if not reader.found and download:
        if root is None:
            raise UserError(f"{name}: download=True needs a root directory to download into")
        _download_cifar(name, root)
        reader = _CifarReader(name, root)
    spec = reader.spec
    if not reader.found:
        raise MissingInputError(
            f"{name}: CIFAR python batches not found. Looked in: {', '.join(reader.looked) or '(no root given)'}. "
            f"To obtain the data: set data.download: true (torchvision downloads {spec['archive']} into root), "
            f"or put {spec['archive']} or its extracted {spec['folder']}/ folder in root."
        )
    blobs = reader.read_all(spec["train"] + spec["test"], optional=[spec["meta"]])
    where = reader.folder or reader.archive

    def cat(members: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_cifar_batch(blobs[m], f"{where}/{m}", spec["labels"]) for m in members]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    x_tr, y_tr = cat(spec["train"])
    x_te, y_te = cat(spec["test"])
    meta = blobs.get(spec["meta"])
    if isinstance(meta, dict) and spec["names"] in meta:
        class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[spec["names"]]]
    elif name == "cifar10":
        class_names = list(CIFAR10_CLASSES)
    else:
        class_names = [str(i) for i in range(100)]
    return RawDataset(name, x_tr, y_tr, x_te, y_te, class_names)


def load_cifar10_source(root: Path | None, download: bool, **_: Any) -> RawDataset:
    """CIFAR-10 from cifar-10-batches-py/ or cifar-10-python.tar.gz (read in place)."""
    return _load_cifar("cifar10", root, download)


def load_cifar100_source(root: Path | None, download: bool, **_: Any) -> RawDataset:
    """CIFAR-100 (fine labels) from cifar-100-python/ or cifar-100-python.tar.gz."""
    return _load_cifar("cifar100", root, download)

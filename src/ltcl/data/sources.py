"""Dataset sources: read image classification data sets from their on-disk formats.

Every loader returns a :class:`RawDataset` whose images are ``uint8`` NHWC
arrays (C = 1 grayscale, C = 3 colour) and labels ``int64``. Loaders read the
official file formats directly (IDX for MNIST / Fashion-MNIST, the python
pickle batches for CIFAR, image files for ImageFolder trees, ``.npz``), so no
torchvision ``Dataset`` object (and no unrestricted ``pickle.load``) is
involved; torchvision is only used for downloading when ``download=True``.

Registry: :data:`SOURCES` maps a name to its loader; :func:`load_source` is the
entry point (dispatch, optional resize, validation).
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
import stat
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
ON_BAD_IMAGE = ("error", "skip")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class RawDataset:
    """A labelled image data set with an official (or fixed) train/test split.

    Images are ``uint8`` arrays of shape (N, H, W, C); labels ``int64`` in
    ``0..len(class_names)-1``. ``skipped`` lists image files that were skipped
    as unreadable (``folder`` source with ``on_bad_image="skip"``).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


# --------------------------------------------------------------------------
# validation and resizing
# --------------------------------------------------------------------------


def _check_images(x: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: expected images of shape (N, H, W, C) with C in (1, 3), got {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"{what}: expected dtype uint8, got {x.dtype}")
    return x


def validate_raw(raw: RawDataset, where: str | os.PathLike | None = None) -> RawDataset:
    """Check shapes, dtypes and labels of a :class:`RawDataset`; return it normalised.

    Raises ValueError for: non-uint8 or non-NHWC images, train/test images of
    different sizes or channel counts, label arrays of the wrong length, labels
    outside ``0..C-1`` (C = ``len(class_names)``) and classes absent from train.  Messages
    start with the data set's name and ``where`` (its file or folder) when given.
    """
    name = raw.name if where is None else f"{raw.name} {where}"
    x_train = _check_images(raw.x_train, f"{name}: x_train")
    x_test = _check_images(raw.x_test, f"{name}: x_test")
    if x_train.shape[-1] != x_test.shape[-1]:
        raise ValueError(
            f"{name}: mixed channel counts: train images have {x_train.shape[-1]} channel(s) "
            f"(shape {x_train.shape[1:]}), test images {x_test.shape[-1]} (shape {x_test.shape[1:]}); "
            "convert both splits to grayscale or both to RGB"
        )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{name}: mixed image sizes: train images are {x_train.shape[1:3]}, "
            f"test images are {x_test.shape[1:3]} (set data.image_size to resize both)"
        )
    num_classes = len(raw.class_names)
    if num_classes < 1:
        raise ValueError(f"{name}: class_names is empty")
    ys = []
    for split, x, y in (("train", x_train, raw.y_train), ("test", x_test, raw.y_test)):
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{name}: y_{split} must be 1-D with {len(x)} labels, got shape {y.shape}")
        if len(y) and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name}: y_{split} must hold integers, got dtype {y.dtype}")
        y = y.astype(np.int64, copy=False)
        bad = np.unique(y[(y < 0) | (y >= num_classes)])
        if bad.size:
            raise ValueError(
                f"{name}: y_{split} has out-of-range labels {bad.tolist()}; "
                f"allowed 0..{num_classes - 1} ({num_classes} classes)"
            )
        ys.append(y)
    present = np.bincount(ys[0], minlength=num_classes)
    missing = np.flatnonzero(present == 0)
    if missing.size:
        names = [f"{c} ({raw.class_names[c]})" for c in missing.tolist()]
        raise ValueError(f"{name}: classes missing from the train split: {', '.join(names)}")
    raw.x_train, raw.x_test = x_train, x_test
    raw.y_train, raw.y_test = ys
    raw.class_names = [str(c) for c in raw.class_names]
    return raw


def resize_images(x: np.ndarray, size: int | tuple[int, int], chunk: int = 4096) -> np.ndarray:
    """Resize uint8 NHWC images to ``size`` with antialiased bilinear interpolation.

    Uses ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``
    in chunks of ``chunk`` images; returns ``x`` itself when already that size.
    """
    import torch
    import torch.nn.functional as F

    x = _check_images(x, "resize_images: x")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"resize_images: size must be a positive int or (h, w), got {size!r}")
    if tuple(x.shape[1:3]) == hw:
        return x
    out = np.empty((len(x), hw[0], hw[1], x.shape[3]), dtype=np.uint8)
    for start in range(0, len(x), chunk):
        t = torch.from_numpy(np.ascontiguousarray(x[start:start + chunk])).permute(0, 3, 1, 2).float()
        r = F.interpolate(t, size=hw, mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = r.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


# --------------------------------------------------------------------------
# digits (scikit-learn, bundled)
# --------------------------------------------------------------------------


def load_digits_source(root: Path | None = None, download: bool = False, **_: Any) -> RawDataset:
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


# --------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# --------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """File content, gunzipped when the file starts with the gzip magic."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"corrupt or truncated gzip file {path}: {exc}") from exc
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
        raise ValueError(f"IDX file {path} is truncated: {len(data)} bytes, no header")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"IDX file {path} has a bad magic number {data[:4].hex()} (must start with 0000)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"IDX file {path} has an unknown dtype code 0x{code:02x}")
    if ndim < 1:
        raise ValueError(f"IDX file {path} declares {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX file {path} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "longer than declared"
        raise ValueError(
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
_TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


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
            raise ValueError(f"{name}: download=True needs a root directory to download into")
        _download_mnist_like(name, root)
        files = _find_idx_files(name, root)
    if files is None:
        raise FileNotFoundError(_idx_missing_message(name, root))
    arrays = {key: read_idx(path) for key, path in files.items()}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3 or arrays[key].dtype != np.uint8:
            raise ValueError(f"IDX file {files[key]}: expected uint8 images (N, H, W), got "
                             f"{arrays[key].dtype} {arrays[key].shape}")
    for key, xkey in (("y_train", "x_train"), ("y_test", "x_test")):
        if arrays[key].ndim != 1 or len(arrays[key]) != len(arrays[xkey]):
            raise ValueError(f"IDX file {files[key]}: expected {len(arrays[xkey])} labels (one per image "
                             f"in {files[xkey]}), got shape {arrays[key].shape}")
    return RawDataset(
        name,
        arrays["x_train"][..., None], arrays["y_train"].astype(np.int64),
        arrays["x_test"][..., None], arrays["y_test"].astype(np.int64),
        list(class_names),
    )


def load_mnist_source(root: Path | None = None, download: bool = False, **_: Any) -> RawDataset:
    """MNIST from IDX files under ``root`` (also root/mnist[/raw], root/MNIST/raw)."""
    return _load_idx_source("mnist", root, download, [str(i) for i in range(10)])


def load_fashion_mnist_source(root: Path | None = None, download: bool = False, **_: Any) -> RawDataset:
    """Fashion-MNIST from IDX files under ``root`` or Debian's /usr/share/datasets/fashion-mnist."""
    return _load_idx_source("fashion-mnist", root, download, FASHION_MNIST_CLASSES)


# --------------------------------------------------------------------------
# CIFAR python pickles
# --------------------------------------------------------------------------


def _safe_codecs_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to latin-1: how Python 3 pickles bytes at protocol < 3."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused global _codecs.encode with encoding {encoding!r}")
    return obj.encode("latin-1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _safe_codecs_encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
    if hasattr(numeric, "_frombuffer"):  # protocol-5 array pickles
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(mod, "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays, dicts, lists, str/bytes and numbers.

    ``find_class`` allows ``numpy.(_)core.multiarray._reconstruct``,
    ``numpy.ndarray``, ``numpy.dtype``, numpy's ``_frombuffer`` and a latin-1-only
    ``_codecs.encode``; any other global raises ``pickle.UnpicklingError``
    ("refused global ..."), so a crafted file cannot run code.
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


class BadPickleError(pickle.UnpicklingError, ValueError):
    """A refused (possibly tampered) or corrupt pickle.  Also a ValueError, so a stage reports it
    as a user error (one message, exit code 2) rather than a crash."""


def restricted_loads(data: bytes, what: str = "pickle") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``encoding="bytes"``).

    Raises :class:`BadPickleError` (an ``UnpicklingError`` and a ``ValueError``) naming
    ``what`` for a refused global, or a truncated or corrupt pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if msg.startswith("refused global"):
            raise BadPickleError(f"{what}: {msg} (only numpy arrays, lists, dicts, bytes, str and numbers "
                                 "are allowed: the file may have been tampered with)") from exc
        raise BadPickleError(f"{what}: corrupt or truncated pickle: {msg}") from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OverflowError, RecursionError) as exc:
        raise BadPickleError(f"{what}: corrupt or truncated pickle: {type(exc).__name__}: {exc}") from exc


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
                    raise FileNotFoundError(f"{self.name}: missing {path}")
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
                            raise FileNotFoundError(f"{self.name}: {self.archive} has no member {prefix}{m}") from None
                        continue
                    if not info.isfile():
                        raise ValueError(f"{what} is not a regular file in the archive")
                    fh = tf.extractfile(info)
                    assert fh is not None
                    out[m] = restricted_loads(fh.read(), what)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ValueError(f"{self.name}: corrupt or truncated archive {self.archive}: "
                             f"{type(exc).__name__}: {exc}") from exc
        return out


def _cifar_batch(batch: Any, what: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise ValueError(f"{what}: expected a dict with keys b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{what}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"{what}: {label_key!r} must hold {len(data)} labels, got shape {labels.shape}")
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
            raise ValueError(f"{name}: download=True needs a root directory to download into")
        _download_cifar(name, root)
        reader = _CifarReader(name, root)
    spec = reader.spec
    if not reader.found:
        raise FileNotFoundError(
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


def load_cifar10_source(root: Path | None = None, download: bool = False, **_: Any) -> RawDataset:
    """CIFAR-10 from cifar-10-batches-py/ or cifar-10-python.tar.gz (read in place)."""
    return _load_cifar("cifar10", root, download)


def load_cifar100_source(root: Path | None = None, download: bool = False, **_: Any) -> RawDataset:
    """CIFAR-100 (fine labels) from cifar-100-python/ or cifar-100-python.tar.gz."""
    return _load_cifar("cifar100", root, download)


# --------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------

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
            raise ValueError(f"refused {d}: it resolves to {real}, outside the data root {real_root}")
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
                    raise ValueError(f"refused {path}: it resolves to {real_file}, outside the data root {real_root}")
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
        raise ValueError(f"{path} is not a regular file")
    with Image.open(path) as im:
        im.load()
        gray = im.mode in _GRAY_MODES
        im = im.convert("L" if gray else "RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def read_image_files(paths: Sequence[Path], size: int | None, on_bad_image: str) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode images with a thread pool (PIL releases the GIL while decoding)."""
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
                raise ValueError(f"unreadable image {p}: {type(r).__name__}: {r}") from r
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
        raise ValueError(f"{what}: mixed image sizes: {examples}; set data.image_size to resize them")


def stack_images(images: Sequence[np.ndarray], what: str, force_rgb: bool | None = None,
                 paths: Sequence[Any] | None = None) -> np.ndarray:
    """Stack HxWxC images; grayscale is expanded to RGB unless all are grayscale.

    Mixed spatial sizes raise ValueError (see :func:`check_same_size`; set image_size to resize).
    """
    if not images:
        raise ValueError(f"{what}: no images")
    check_same_size(images, what, paths)
    rgb = any(im.shape[2] == 3 for im in images) if force_rgb is None else force_rgb
    if rgb:
        images = [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
    return np.stack(images).astype(np.uint8, copy=False)


def load_folder_source(
    root: Path | None = None, download: bool = False, image_size: int | None = None,
    on_bad_image: str = "error", **_: Any,
) -> RawDataset:
    """ImageFolder layout: root/train/<class>/**/*.{png,jpg,jpeg,bmp,gif,webp}, root/test/<class>/...

    Classes are the sorted sub-directory names of root/train (test classes must
    be among them). Every image is resized to (image_size, image_size) with PIL
    bilinear (no crop); without image_size all images must share one size.
    Images are RGB unless every image in train and test is grayscale (then C=1).
    Paths whose real path leaves ``root`` (symlinks) are refused.
    """
    if root is None:
        raise ValueError("folder: root (the directory holding train/ and test/) is required")
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    root = Path(root)
    real_root = os.path.realpath(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"folder: {root / split} not found (expected root/train/<class>/ and root/test/<class>/)")
    class_names = sorted(e.name for e in os.scandir(root / "train") if e.is_dir(follow_symlinks=True))
    if not class_names:
        raise ValueError(f"folder: {root / 'train'} has no class sub-directories")
    test_classes = sorted(e.name for e in os.scandir(root / "test") if e.is_dir(follow_symlinks=True))
    unknown = sorted(set(test_classes) - set(class_names))
    if unknown:
        raise ValueError(f"folder: test classes {unknown} have no train directory in {root / 'train'}")
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


# --------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------


def load_npz_source(root: Path | None = None, download: bool = False, **_: Any) -> RawDataset:
    """An ``.npz`` with x_train, y_train, x_test, y_test (and optionally class_names).

    ``root`` is the file itself or a directory containing ``data.npz``. Without
    class_names, classes are 0..max(label) named "0", "1", ...
    """
    if root is None:
        raise ValueError("npz: root (the .npz file or a directory holding data.npz) is required")
    path = Path(root)
    if path.is_dir():
        path = path / "data.npz"
    if not path.is_file():
        raise FileNotFoundError(f"npz: {path} not found")
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("a single array, not an .npz archive")
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise ValueError(f"lacks arrays {missing} (has {f.files})")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            names = [str(n) for n in f["class_names"].tolist()] if "class_names" in f.files else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"npz: {path}: unreadable or corrupt: {exc}") from exc
    if names is None:
        top = max(int(arrays["y_train"].max(initial=-1)), int(arrays["y_test"].max(initial=-1)))
        names = [str(i) for i in range(top + 1)]
    return RawDataset("npz", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], names)


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

Loader = Callable[..., RawDataset]

SOURCES: dict[str, Loader] = {
    "digits": load_digits_source,
    "mnist": load_mnist_source,
    "fashion-mnist": load_fashion_mnist_source,
    "cifar10": load_cifar10_source,
    "cifar100": load_cifar100_source,
    "folder": load_folder_source,
    "npz": load_npz_source,
}


def load_source(
    name: str,
    root: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | None = None,
    on_bad_image: str = "error",
) -> RawDataset:
    """Load data set ``name`` (a key of :data:`SOURCES`), resize to ``image_size``, validate.

    Raises ValueError for unknown names (listing the known ones), bad
    arguments and invalid data; FileNotFoundError (naming every path looked in
    and how to obtain the data) when files are missing.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; known sources: {', '.join(sorted(SOURCES))}")
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    root_path = Path(root).expanduser() if root is not None else None
    raw = SOURCES[name](root=root_path, download=download, image_size=image_size, on_bad_image=on_bad_image)
    where = None
    if root_path is not None and name != "digits":  # name the file or folder the data came from
        where = root_path / "data.npz" if name == "npz" and root_path.is_dir() else root_path
    raw = validate_raw(raw, where)
    if image_size is not None:
        raw.x_train = resize_images(raw.x_train, int(image_size))
        raw.x_test = resize_images(raw.x_test, int(image_size))
    return raw


"""Atomic file IO, content hashes, JSON and checkpoints.

Every writer goes through :func:`atomic_path` / :func:`atomic_write`: data is
written to a temporary file in the destination directory, flushed and fsynced,
then moved over the destination with :func:`os.replace` (atomic on POSIX). A
reader therefore sees either the old file or the complete new one, never a
partial write; on any exception the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from ltcl.errors import UserError

PathLike = str | os.PathLike


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename survives a crash."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it over ``path`` on success.

    For writers that need a file *name* rather than a file object (e.g.
    ``np.lib.format.open_memmap``). The caller must close whatever it opened on
    the temporary path before the block ends. The temporary file is fsynced,
    then renamed with :func:`os.replace`; on an exception it is deleted and the
    destination is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """A temporary folder beside ``path`` to build a whole output folder in; on success it replaces
    ``path`` (the old folder removed first), on failure it is removed and ``path`` is untouched."""
    out = Path(path)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing and atomically replace ``path`` with it.

    ``mode`` must be a write mode (``"wb"``, ``"w"``, ``"wt"``); text modes use
    UTF-8. On an exception inside the block the temporary file is removed and
    ``path`` keeps its previous content (or stays absent).
    """
    if mode not in ("wb", "w", "wt"):
        raise UserError(f"atomic_write: mode must be one of 'wb', 'w', 'wt', got {mode!r}")
    with atomic_path(path) as tmp:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def _jsonable(obj: Any) -> Any:
    """Convert numpy types / paths to JSON types and non-finite floats to None."""
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _ordered_keys(obj: Any, first: tuple[str, ...]) -> Any:
    """``obj`` with the keys of every dict, at every level, in the order of ``first`` (those it
    names), then sorted."""
    if isinstance(obj, dict):
        rank = {k: i for i, k in enumerate(first)}
        keys = sorted(obj, key=lambda k: (0, rank[k], "") if k in rank else (1, 0, k))
        return {k: _ordered_keys(obj[k], first) for k in keys}
    if isinstance(obj, list):
        return [_ordered_keys(v, first) for v in obj]
    return obj


def write_json(path: PathLike, obj: Any, first: tuple[str, ...] = ()) -> None:
    """Atomically write ``obj`` as JSON (sorted keys, indent 2, NaN/inf -> null).

    numpy arrays and scalars are converted to lists / Python scalars.  ``first``: keys written
    before the others, in that order, in every dict at every level (a metrics file's headline:
    ``dvc exp show`` makes its columns in file order, so ``full`` before ``few_shot`` and, within
    each, ``many`` ... ``all``); every other key is sorted.
    """
    obj = _ordered_keys(_jsonable(obj), tuple(first))
    text = json.dumps(obj, indent=2, allow_nan=False)
    with atomic_write(path, "w") as fh:
        fh.write(text + "\n")


def write_text(path: PathLike, text: str) -> None:
    """Write a text file atomically (temporary file + rename)."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def read_json(path: PathLike) -> Any:
    """Read a JSON file written by :func:`write_json` (or any JSON file)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Atomically write ``array`` as an ``.npy`` file (memory-mappable) at exactly ``path``."""
    with atomic_write(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


# the date of every member of an .npz ltcl writes: the zip format's earliest (1980-01-01 00:00:00),
# so that the same arrays give the same bytes whenever they are written
NPZ_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(fh: IO[bytes], arrays: dict[str, Any]) -> None:
    """Write ``arrays`` to the binary file ``fh`` as an uncompressed ``.npz`` (what ``np.load``
    reads: one ``<name>.npy`` zip member per array, in the order given), byte-stable: every member
    has the fixed date :data:`NPZ_DATE` and fixed permissions, so the bytes are a function of the
    arrays alone (``np.savez`` leaves the member dates and attributes to its numpy and zipfile
    versions).  No pickled object arrays (``np.load`` refuses them by default)."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=NPZ_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o600 << 16  # -rw-------, as zipfile gives a member it writes
            with zf.open(info, "w", force_zip64=True) as member:  # zip64 as numpy does (arrays > 2 GiB)
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def npz_bytes(**arrays: Any) -> bytes:
    """The bytes :func:`save_npz` writes for ``arrays`` (an .npz held in memory)."""
    buf = io.BytesIO()
    write_npz(buf, arrays)
    return buf.getvalue()


def save_npz(path: PathLike, **arrays: Any) -> None:
    """Atomically write an uncompressed, byte-stable ``.npz`` at exactly ``path`` (:func:`write_npz`):
    every ``.npz`` a stage declares goes through here, so identical arrays leave DVC's downstream
    stages up to date."""
    with atomic_write(path, "wb") as fh:
        write_npz(fh, arrays)


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_sidecar(path: PathLike) -> Path:
    """The hash sidecar of ``path``: ``model.pt`` -> ``model.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_sha256_sidecar(path: PathLike) -> str:
    """Write ``<path>.sha256`` in ``sha256sum`` format (``<hex>  <name>``, so
    ``sha256sum -c model.pt.sha256`` checks it by hand); returns the hex digest."""
    digest = sha256_file(path, chunk_size=16 << 20)
    write_text(sha256_sidecar(path), f"{digest}  {Path(path).name}\n")
    return digest


def verify_sha256_sidecar(path: PathLike, how: str = "rerun the stage that wrote it") -> bool:
    """Check ``path`` against ``<path>.sha256`` when that sidecar exists.

    Returns False when there is no sidecar, True when the hashes match; raises ValueError
    naming the file (and ``how`` to get a good one) when they differ or the sidecar is
    unreadable."""
    side = sha256_sidecar(path)
    if not side.is_file():
        return False
    fields = side.read_text(encoding="utf-8", errors="replace").split()
    expected = fields[0].lower() if fields else ""
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise UserError(f"{side} does not hold a sha256 digest; {how}")
    actual = sha256_file(path, chunk_size=16 << 20)
    if actual != expected:
        raise UserError(f"hash mismatch for {path}: {side} has sha256 {expected}, the file has {actual} "
                         f"(changed or corrupt since it was written); {how}")
    return True


def save_checkpoint(path: PathLike, obj: Any) -> None:
    """Atomically ``torch.save`` ``obj`` (keep it to tensors / plain containers so
    :func:`load_checkpoint` can read it with ``weights_only=True``)."""
    import torch

    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def load_checkpoint(path: PathLike) -> Any:
    """``torch.load`` on CPU with ``weights_only=True`` (no arbitrary unpickling)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)

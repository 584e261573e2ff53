"""Image arrays on disk: written in chunks, read by rows, never loaded whole.

Every split of ``data/lt`` is a pair of ``.npy`` files (uint8 NHWC images, int64 labels).
Paper-scale splits do not fit in memory as one array (Places-LT's 62,500 training images at
224 x 224 are 9.4 GB), so

* :class:`NpyWriter` writes a ``.npy`` file chunk by chunk with plain file writes (its header
  is written first from the known final shape), so peak memory is one chunk;
* :class:`DiskRows` reads the rows a batch needs with ``os.pread`` (the file is never mapped,
  so the pages read count against the kernel's page cache, not the process) and looks like
  the uint8 tensor the training code indexes: ``rows[idx]`` returns a tensor, ``len``,
  ``shape``, ``device``, and ``rows[bool_mask]`` a lazy view.

numpy's ``open_memmap`` would also write and read these files; it is not used for the large
splits because a mapped file's touched pages stay in the process's resident set for as long
as the mapping lives, which is what the peak-memory budget of a paper-scale run measures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ltcl.errors import UserError


class NpyWriter:
    """Write an ``.npy`` array of a known ``shape`` in row chunks (context manager).

    The file is complete only when exactly ``shape[0]`` rows were written; :meth:`close` raises
    otherwise (and a failed ``with`` block removes the partial file).
    """

    def __init__(self, path: str | os.PathLike, shape: Sequence[int], dtype=np.uint8):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.fh = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self.fh, header)

    def write(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        if chunk.shape[1:] != self.shape[1:]:
            raise UserError(f"{self.path}: chunk rows have shape {chunk.shape[1:]}, expected {self.shape[1:]}")
        if self.rows + len(chunk) > self.shape[0]:
            raise UserError(f"{self.path}: more than the {self.shape[0]} rows announced")
        self.fh.write(chunk.tobytes())
        self.rows += len(chunk)

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()
            if self.rows != self.shape[0]:
                raise UserError(f"{self.path}: {self.rows} rows written, {self.shape[0]} announced")

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.fh.close()
            self.path.unlink(missing_ok=True)


def npy_layout(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the first data byte) of a C-ordered ``.npy`` file (read from a
    memory map that is dropped before any page is touched)."""
    m = np.load(path, mmap_mode="r", allow_pickle=False)
    try:
        if not m.flags.c_contiguous:
            raise UserError(f"{path}: only C-ordered arrays are supported")
        return tuple(m.shape), m.dtype, int(m.offset)
    finally:
        del m


class DiskRows:
    """Rows of a uint8 NHWC ``.npy`` file, read on demand (see the module docstring).

    ``index`` (optional) restricts the view to those rows of the file; ``extra`` (a uint8 tensor
    with the same row shape) appends in-memory rows after them, which is how a training set of
    on-disk ID images plus sampled OOD images is formed (:meth:`concat`).
    """

    def __init__(self, path: str | os.PathLike, index: np.ndarray | None = None,
                 extra: torch.Tensor | None = None):
        self.path = str(path)
        shape, dtype, self.offset = npy_layout(path)
        if dtype != np.uint8 or len(shape) != 4:
            raise UserError(f"{path}: expected uint8 images of shape (N, H, W, C), got {dtype} {shape}")
        self.file_rows, self.row_shape = shape[0], tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape))
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.extra = extra if extra is not None else torch.empty((0, *self.row_shape), dtype=torch.uint8)
        self._fd: int | None = None

    # -- what the training code reads -------------------------------------------------
    @property
    def n_disk(self) -> int:
        return self.file_rows if self.index is None else len(self.index)

    def __len__(self) -> int:
        return self.n_disk + int(self.extra.shape[0])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.row_shape))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    dtype = torch.uint8
    ndim = 4

    def __getitem__(self, key):
        if isinstance(key, torch.Tensor) and key.dtype == torch.bool:
            return self.select(key.cpu().numpy())
        if isinstance(key, np.ndarray) and key.dtype == bool:
            return self.select(key)
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        if isinstance(key, (int, np.integer)):
            return self.take(np.asarray([int(key)]))[0]
        idx = key.cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        return self.take(idx.astype(np.int64, copy=False))

    def take(self, idx: np.ndarray) -> torch.Tensor:
        """Rows ``idx`` (positions in this view) as a new uint8 tensor."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        out = torch.empty((len(idx), *self.row_shape), dtype=torch.uint8)
        on_disk = idx < self.n_disk
        if on_disk.any():
            rows = idx[on_disk] if self.index is None else self.index[idx[on_disk]]
            out[torch.from_numpy(np.flatnonzero(on_disk))] = torch.from_numpy(self._read(rows))
        if (~on_disk).any():
            out[torch.from_numpy(np.flatnonzero(~on_disk))] = self.extra[torch.from_numpy(idx[~on_disk] - self.n_disk)]
        return out

    def select(self, mask: np.ndarray) -> "DiskRows":
        """The rows where ``mask`` is true, as a lazy view (on-disk rows only)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise IndexError(f"mask of shape {mask.shape} for {len(self)} rows")
        if mask[self.n_disk:].any():
            raise IndexError("a lazy view selects on-disk rows only; index the appended rows directly")
        base = np.arange(self.file_rows) if self.index is None else self.index
        return DiskRows(self.path, base[mask[: self.n_disk]])

    def concat(self, extra: torch.Tensor) -> "DiskRows":
        """This view with ``extra`` rows appended (the ``torch.cat`` of ``TrainSet.with_extra``)."""
        extra = extra.cpu()
        if tuple(extra.shape[1:]) != self.row_shape:
            raise UserError(f"appended rows have shape {tuple(extra.shape[1:])}, expected {self.row_shape}")
        return DiskRows(self.path, self.index, torch.cat([self.extra, extra]))

    def to(self, device, non_blocking: bool = False):
        """Stay lazy on the CPU; anywhere else the rows are loaded there (streamed in chunks)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        out = torch.empty(self.shape, dtype=torch.uint8, device=device)
        step = max(1, (256 << 20) // max(self.row_bytes, 1))
        for s in range(0, len(self), step):
            out[s: s + step] = self.take(np.arange(s, min(s + step, len(self)))).to(device, non_blocking=non_blocking)
        return out

    # -- reading ---------------------------------------------------------------------------
    def _read(self, rows: np.ndarray) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        order = np.argsort(rows, kind="stable")  # ascending offsets: sequential where rows are adjacent
        for j in order:
            r = int(rows[j])
            buf = os.pread(self._fd, self.row_bytes, self.offset + r * self.row_bytes)
            if len(buf) != self.row_bytes:
                raise UserError(f"{self.path}: truncated at row {r}")
            out[j] = np.frombuffer(buf, dtype=np.uint8)
        return out.reshape(len(rows), *self.row_shape)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = None
        return state

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

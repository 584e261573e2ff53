"""Restricted unpickling: load pickles that may only rebuild numpy arrays and plain containers.

This module is a security boundary. The CIFAR python batches are pickles, and an
unrestricted ``pickle.load`` of a tampered file runs arbitrary code; so they are
read with :class:`RestrictedUnpickler`, whose ``find_class`` allows only the numpy
array/dtype reconstructors and a latin-1-only ``_codecs.encode``, and through
:func:`restricted_loads`, which turns every refusal or corruption into a
:class:`BadPickleError` that names the file.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from ltcl.errors import UserError


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


class BadPickleError(pickle.UnpicklingError, UserError):
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

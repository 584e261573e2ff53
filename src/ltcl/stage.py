"""Shared entry point of the DVC stage scripts: one clear message and a non-zero exit on bad
input, and no partial outputs left behind when a stage fails."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from ltcl.params import ParamsError

# Errors that are the user's to fix: printed as one message, no traceback.
USER_ERRORS = (ParamsError, ValueError, FileNotFoundError, KeyError)


def _remove(paths: Iterable[str | Path]) -> None:
    for p in map(Path, paths):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def run_stage(name: str, main: Callable[[], None], outputs: Iterable[str | Path] = ()) -> None:
    """Run ``main``; on failure remove ``outputs`` and exit 2 (user error) or 1 (bug)."""
    outputs = list(outputs)
    t0 = time.perf_counter()
    try:
        main()
    except USER_ERRORS as exc:
        _remove(outputs)
        print(f"ltcl {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        _remove(outputs)
        raise
    print(f"ltcl {name}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

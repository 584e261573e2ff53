"""Shared entry point of the DVC stage scripts: one clear message and exit 2 on what the user must
fix (``ltcl.errors.UserError``), a traceback and exit 1 on anything else, and no partial outputs
left behind when a stage fails."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from ltcl.errors import UserError
from ltcl.runrecord import run_record_path, write_run_record

KEEP_CHECKPOINTS = "LTCL_KEEP_CHECKPOINTS"  # =1: keep a stage's resume state after success (to inspect it)


def remove_outputs(paths: Iterable[str | Path]) -> None:
    for p in map(Path, paths):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def run_stage(name: str, main: Callable[[], dict | None], outputs: Iterable[str | Path] = (),
              resume: str | Path | None = None, record: bool = True) -> None:
    """Run ``main``; on failure remove ``outputs`` (and the stage's run record) and exit 2 with one
    message (a ``UserError``) or re-raise (a bug: traceback, exit 1).  On success, with
    ``record``, write the stage's run record ``runs/<name>.json`` (:mod:`ltcl.runrecord`): the run
    card (wall time, peak memory, machine) and the timings ``main`` returned (a dict, or None);
    ``record`` is False on the ranks of a torchrun other than 0.  And the stage's resume state
    ``resume`` (``ltcl.train.resume``), spent, is removed; a failed run keeps it, so the rerun
    resumes."""
    outputs = [Path(p) for p in outputs] + ([run_record_path(name)] if record else [])
    t0 = time.perf_counter()
    try:
        timings = main()
    except UserError as exc:
        remove_outputs(outputs)
        print(f"ltcl {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        remove_outputs(outputs)
        raise
    wall = time.perf_counter() - t0
    if record:
        write_run_record(name, wall, timings)
    if resume is not None and os.environ.get(KEEP_CHECKPOINTS, "") in ("", "0"):
        Path(resume).unlink(missing_ok=True)  # spent: the outputs are written
    print(f"ltcl {name}: done in {wall:.1f} s", file=sys.stderr)

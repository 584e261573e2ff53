"""Shared entry point of the DVC stage scripts: one clear message and exit 2 on what the user must
fix (``ltcl.errors.UserError``), a traceback and exit 1 on anything else, and no partial outputs
left behind when a stage fails."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from ltcl.errors import UserError


def remove_outputs(paths: Iterable[str | Path]) -> None:
    for p in map(Path, paths):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def run_info(wall_s: float) -> dict:
    """Wall time, peak memory and the machine of this stage run (the report's run card)."""
    import os
    import platform
    import resource

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), cpu)
    except OSError:
        pass
    from ltcl.runtime import last_precision

    precision = last_precision()
    return {
        **({"precision": precision} if precision else {}),
        "wall_s": round(wall_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "python": platform.python_version(),
    }


def _add_run_info(outputs: list[Path], wall_s: float) -> None:
    """Record the run card in the stage's metrics JSON (the first ``metrics/*.json`` output)."""
    from ltcl.io import read_json, write_json

    for p in outputs:
        if p.suffix == ".json" and p.parts[0] == "metrics" and p.exists():
            m = read_json(p)
            if isinstance(m, dict):
                m["run"] = run_info(wall_s)
                write_json(p, m)
            return


def run_stage(name: str, main: Callable[[], None], outputs: Iterable[str | Path] = ()) -> None:
    """Run ``main``; on failure remove ``outputs`` and exit 2 with one message (a ``UserError``)
    or re-raise (a bug: traceback, exit 1).  On
    success the stage's metrics JSON gets a ``run`` entry: wall time, peak memory, machine."""
    outputs = [Path(p) for p in outputs]
    t0 = time.perf_counter()
    try:
        main()
    except UserError as exc:
        remove_outputs(outputs)
        print(f"ltcl {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        remove_outputs(outputs)
        raise
    wall = time.perf_counter() - t0
    _add_run_info(outputs, wall)
    print(f"ltcl {name}: done in {wall:.1f} s", file=sys.stderr)

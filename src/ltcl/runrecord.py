"""The run record of a stage: ``runs/<stage>.json``, what one run of a stage took and where it ran.

``ltcl.stage.run_stage`` writes it after a stage succeeds: the run card (wall time, peak memory,
CPU, cores, torch threads, GPU, torch and Python versions, the precision and why) under ``run``,
and the stage's own timings (seconds per epoch and images/s of each epoch, OOD update seconds,
distillation set-up ...) under ``timings``.  These change from run to run on identical inputs, so
they are kept out of the metrics files and the model files (those stay byte-stable, and
``dvc exp show`` / ``dvc metrics diff`` show results only); dvc.yaml declares each record as a
git-tracked output (``cache: false``), not a metric.  The report's run card and time tables and
``ltcl compare``'s training minutes read them.

File name: the stage's name as ``run_stage`` is given it, ``@`` written ``-``:
``runs/pretrain.json``, ``runs/linear-probe-pretrain.json`` (linear-probe@pretrain),
``runs/cluster-ext-<name>.json`` (cluster-external@<name> runs ``cluster.py ext-<name>``).
"""

from __future__ import annotations

import json
from pathlib import Path

RUNS_DIR = "runs"


def run_record_path(stage: str, root: str | Path = ".") -> Path:
    """``<root>/runs/<stage>.json`` with ``@`` as ``-`` (``linear-probe@distill`` ->
    ``runs/linear-probe-distill.json``)."""
    return Path(root) / RUNS_DIR / f"{stage.replace('@', '-')}.json"


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


def write_run_record(stage: str, wall_s: float, timings: dict | None) -> Path:
    """Write ``runs/<stage>.json`` (in the working directory, the project root of a stage):
    ``{"stage", "run": run_info(wall_s), "timings": timings}``; returns its path."""
    from ltcl.io import write_json

    path = run_record_path(stage)
    write_json(path, {"stage": stage, "run": run_info(wall_s), "timings": timings or {}})
    return path


def read_run_record(root: str | Path, stage: str) -> dict:
    """The run record of ``stage`` under ``root`` ({} when that stage has not run there)."""
    path = run_record_path(stage, root)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

"""Benchmark 4: DVC pipeline overhead.

In a scratch copy of the project laid out as the real one (``_util.copy_layout``: dvc.yaml,
params.yaml, stages/, src/, deps/, .dvc/ - dvc.yaml lists files under src/ltcl and deps/ as stage
dependencies, so they must exist in the copy - plus ``git init``), with the tiny parameters of
configs/tiny.yaml, the stages importing ltcl from the project's src/ (PYTHONPATH): one full
``dvc repro``, then ``dvc repro`` with nothing to do (the median of a few runs, each a fresh
``dvc`` process as a user would start it), then ``probe.lr`` is changed in params.yaml and
``dvc repro`` must rerun the linear probes, the reference probes, the exports (their model cards
quote the probe numbers) and the report only.  The ``runtime`` stage runs in every repro (it
records the precision and threads this machine resolves: issue 22); its own time is measured
apart (a fresh ``python stages/runtime.py``) and the no-op target (< 2 s) is on DVC's overhead,
the no-op repro minus that stage.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET_NOOP_S = 2.0
ALWAYS = {"runtime"}  # always_changed: runs in every repro
EXPECTED_AFTER_PROBE = {"linear-probe@pretrain", "linear-probe@distill", "reference-probe-pixels",
                        "reference-probe-random", "export@pretrain", "export@distill", "report"} | ALWAYS

# the tests' tiny params (configs/tiny.yaml: the whole pipeline in seconds)
TINY = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())


def deep_update(base: dict, new: dict) -> dict:
    from ltcl.compare.experiments import flatten
    from ltcl.presets import merged

    return merged(base, flatten(new))


def _env(threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def make_scratch(root: Path, params: dict | None = None) -> None:
    from _util import copy_layout

    copy_layout(root)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p = deep_update(p, yaml.safe_load(yaml.safe_dump(params if params is not None else TINY)))
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    # dvclive (pretrain, distill) needs a commit to compare against
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@ltcl"],
                ["git", "config", "user.name", "bench"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def dvc(root: Path, env: dict, *args: str, cpu: list | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``python -m dvc *args`` in ``root``; returns (wall seconds, process). The CPU seconds
    of the dvc process and its stages are appended to ``cpu`` if given."""
    c0 = _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(_children_cpu_s() - c0)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return secs, proc


def ran_stages(stdout: str) -> list[str]:
    return [line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")]


def set_probe_lr(root: Path, lr: float) -> None:
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["probe"]["lr"] = lr
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def profile_noop(root: Path, env: dict, n: int = 14) -> str:
    """Top entries (cumulative time) of a no-op ``dvc repro`` under cProfile."""
    import io
    import pstats

    prof = root / "noop.prof"
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "dvc", "repro"], cwd=root, env=env,
                   capture_output=True, text=True, check=True)
    buf = io.StringIO()
    pstats.Stats(str(prof), stream=buf).strip_dirs().sort_stats("cumulative").print_stats(n)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start:])


def run(noop_runs: int = 3, threads: int = 1, params: dict | None = None, keep: bool = False,
        profile: bool = True) -> dict:
    root = Path(tempfile.mkdtemp(prefix="ltcl-bench-dvc-"))
    env = _env(threads)
    try:
        make_scratch(root, params)
        cpu: list[float] = []
        first_s, first = dvc(root, env, "repro", cpu=cpu)
        noop = []
        for _ in range(noop_runs):
            secs, proc = dvc(root, env, "repro", cpu=cpu)
            noop.append((secs, ran_stages(proc.stdout)))
        old_lr = yaml.safe_load((root / "params.yaml").read_text())["probe"]["lr"]
        set_probe_lr(root, round(float(old_lr) * 0.5, 6) or 0.1)
        probe_s, probe = dvc(root, env, "repro", cpu=cpu)
        reran = ran_stages(probe.stdout)
        noop_times = sorted(s for s, _ in noop)
        runtime_times = []
        for _ in range(noop_runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "stages/runtime.py"], cwd=root, env=env, check=True, capture_output=True)
            runtime_times.append(time.perf_counter() - t0)
        runtime_s = sorted(runtime_times)[len(runtime_times) // 2]
        out = {
            "first_repro_s": first_s, "first_repro_stages": ran_stages(first.stdout),
            "noop_s": noop_times[len(noop_times) // 2], "noop_s_all": [s for s, _ in noop],
            "noop_stages_run": sorted({st for _, sts in noop for st in sts} - ALWAYS),
            "runtime_stage_s": runtime_s, "noop_dvc_overhead_s": noop_times[len(noop_times) // 2] - runtime_s,
            "probe_change_s": probe_s, "probe_change_reran": reran,
            "probe_lr": {"from": old_lr, "to": yaml.safe_load((root / "params.yaml").read_text())["probe"]["lr"]},
            "expected_reran": sorted(EXPECTED_AFTER_PROBE), "target_noop_s": TARGET_NOOP_S,
            "cpu_s": {"first_repro": cpu[0], "noop_all": cpu[1:-1], "probe_change": cpu[-1]},
        }
        out["pass_noop"] = out["noop_dvc_overhead_s"] < TARGET_NOOP_S and not out["noop_stages_run"]
        out["pass_probe"] = set(reran) == EXPECTED_AFTER_PROBE
        out["pass"] = bool(out["pass_noop"] and out["pass_probe"])
        if profile and not out["pass_noop"]:
            out["profile"] = profile_noop(root, env)
        return out
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

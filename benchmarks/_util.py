"""Helpers shared by the benchmarks: thread limits, timing, memory readings, short profiles."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import shutil
import statistics
import threading
import time
from contextlib import contextmanager
from typing import Callable

_LIMITS = []  # keeps the threadpoolctl limiter alive

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
# What a DVC project of ltcl is made of, besides data and outputs: dvc.yaml's stages run stages/,
# list files under src/ltcl and the method links under deps/ as dependencies, and DVC reads its
# config and the project's plot templates from .dvc/.
LAYOUT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config")
LAYOUT_DIRS = ("stages", "src", "deps", ".dvc/plots")


def copy_layout(root, repo=REPO) -> None:
    """Copy the project's code and pipeline definition (no data, no outputs, no lock) into the
    empty folder ``root``, laid out as the real project is: the scratch project of the pipeline
    benchmark and of the DVC tests (``tests/conftest.make_project``), so neither can miss a
    folder dvc.yaml depends on.  ``deps/`` keeps its symlinks (DVC hashes their targets)."""
    from pathlib import Path

    root, repo = Path(root), Path(repo)
    for name in LAYOUT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, root / name)
    for name in LAYOUT_DIRS:
        shutil.copytree(repo / name, root / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache"))


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch, faiss and the BLAS/OpenMP pools numpy and scikit-learn use."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    _LIMITS.append(threadpool_limits(n))


def median(xs) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable, *args, **kwargs):
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def interleaved_steps(steps: dict[str, Callable[[], object]], max_steps: int, max_seconds: float,
                      min_steps: int = 2, profiles: dict | None = None) -> dict[str, list[float]]:
    """Time the step functions round-robin (A, B, C, A, B, C, ...), so that a change in the
    machine's background load hits every variant alike. Runs ``max_steps`` rounds, or fewer
    (at least ``min_steps``) when the next round would end after ``max_seconds``.

    With ``profiles`` (a dict), the last round runs under torch.profiler and the top ops of
    each step are stored there by name; that round's times are kept (the profiler adds
    microseconds per op, negligible against these steps).
    """
    times: dict[str, list[float]] = {k: [] for k in steps}
    start = time.perf_counter()
    rounds: list[float] = []
    for i in range(max_steps):
        elapsed = time.perf_counter() - start
        last = i + 1 == max_steps or (i + 1 >= min_steps and elapsed + 1.5 * median(rounds or [0.0]) > max_seconds)
        t_round = time.perf_counter()
        for name, fn in steps.items():
            with torch_profile(profiles, name) if (last and profiles is not None) else _null():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        rounds.append(time.perf_counter() - t_round)
        if last:
            break
    return times


@contextmanager
def _null():
    yield


# ------------------------------------------------------------------------------------ memory
def proc_status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM, RssAnon, RssFile); 0 if unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples resident memory every ``interval`` s in a thread: peak total RSS and peak
    anonymous RSS (heap / tensors, as opposed to file pages of a memory map, which the kernel
    can drop at any time)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_rss_kb = 0
        self.peak_anon_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, proc_status_kb("VmRSS"))
        self.peak_anon_kb = max(self.peak_anon_kb, proc_status_kb("RssAnon"))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# ------------------------------------------------------------------------------------ profiles
def cprofile_top(fn: Callable, n: int = 12) -> tuple[object, str]:
    """Run ``fn`` under cProfile; return (result, the top ``n`` entries by cumulative time)."""
    prof = cProfile.Profile()
    out = prof.runcall(fn)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.strip_dirs().sort_stats("cumulative").print_stats(n)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return out, "\n".join(lines[start:])


@contextmanager
def torch_profile(store: dict, key: str, n: int = 10):
    """Profile the block with torch.profiler (CPU) and store the top ``n`` ops by self CPU
    time as text in ``store[key]``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        yield
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = [f"{'op':<48} {'self ms':>9} {'share':>6} {'calls':>6}"]
    for e in events[:n]:
        rows.append(f"{e.key[:48]:<48} {e.self_cpu_time_total / 1e3:9.1f} "
                    f"{100 * e.self_cpu_time_total / total:5.1f}% {e.count:6d}")
    store[key] = "\n".join(rows)


def env_info(threads: int) -> dict:
    import platform

    import torch

    info = {"threads": threads, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version()}
    try:
        info["native_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private API; absence just means unknown
        info["native_bf16"] = None
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info

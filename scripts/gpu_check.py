#!/usr/bin/env python
"""GPU check: everything ltcl must show on a GPU, in one command, written to one JSON file.

    python scripts/gpu_check.py [--device cuda] [--wheels DIR] [--out gpu_check.json] [--smoke]

Steps (each timed; a failing step is recorded with its error and the next one runs; exit code 1
if any step failed):

  wheels        install the carried wheels (``pip install --no-index --no-deps --target``) of
                --wheels DIR, for a machine without the project's packages and without a network
  environment   torch / CUDA / GPU, the ``runtime.amp: auto`` decision and its reason, the
                versions of the packages the stages import
  device_tests  ``pytest tests/test_device_path.py`` with LTCL_TEST_DEVICE=<device>; warnings
                raised under deterministic algorithms are collected
  pipelines     the tiny pipeline (configs/tiny.yaml) through every stage of dvc.yaml, each as
                ``python stages/<x>.py`` in a temporary project (no dvc needed), for KDUP (psd +
                ood kdup), SDCLR + KDUP (pretrain.pruned_branch) and GML (supervised): per-stage wall
                time, exit code, warnings, the precision the stages chose and the probe accuracy
  throughput    ResNet-18 at 32x32, SimCLR: ltcl's training loop (``run_epoch``, runtime.amp
                auto, kornia on the device) against a plain loop (torchvision transforms in a
                DataLoader with workers, pin_memory, fp32) on the same device: images/s, ratio
  ood_update    one KDUP OOD update (``OODSampler.update``) with a 300,000-image 32x32 uint8
                pool memory-mapped from a temporary file and the ID set on the device:
                embedding, clustering / tailness / selection and total seconds

The JSON is rewritten after every step, so a run stopped from outside keeps what it measured;
its ``figures`` entry explains every number in one line.  ``--smoke`` shrinks everything (pool of
2,000 images, a few steps, one pipeline with 1-2 epochs, stages in one process) so that the
suite runs the whole script on a CPU (tests/test_gpu_check.py).  README: "GPU check".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO / "src", REPO):  # ltcl, and benchmarks/ (reference loop, synthetic data)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# packages the stages, the device tests and this script import that a bare GPU image may lack
REQUIRED_MODULES = ("torch", "torchvision", "numpy", "kornia", "faiss", "pydantic", "dvclive", "safetensors",
                    "yaml", "sklearn", "scipy", "skimage", "pandas", "matplotlib", "tqdm", "PIL", "pytest")

# distributions to carry as wheels to a GPU image that holds torch, torchvision, numpy, scipy,
# scikit-learn, scikit-image, pandas, matplotlib, pyyaml, pytest and the usual pure-python
# packages but not these (the import closure of every stage, the device tests and this script,
# measured, less what that image has; dvclive imports dvc, and dvc these): README "GPU check"
CARRY = ("kornia", "kornia_rs", "faiss-cpu", "pydantic", "pydantic_core", "annotated-types", "typing-inspection",
         "safetensors", "dvclive", "dvc", "dvc-data", "dvc-http", "dvc-objects", "dvc-render", "dvc-studio-client",
         "scmrepo", "dulwich", "sqltrie", "pygtrie", "diskcache", "dpath", "funcy", "flatten-dict", "flufl.lock",
         "atpublic", "zc.lockfile", "orjson", "pydot", "ruamel.yaml", "ruamel.yaml.clib", "voluptuous", "wcwidth")

STAGES = ("ood-sampling", "pretrain", "distill", "linear-probe@pretrain", "linear-probe@distill",
          "cluster@pretrain", "cluster@distill", "export@pretrain", "export@distill", "report")
SHARED_STAGES = ("make-lt-dataset", "ood-pool")

# per method: params over configs/tiny.yaml (runtime.device / amp are set for every method)
METHODS = {
    "kdup": {"ood": {"strategy": "kdup"}, "pretrain": {"method": "psd"}},
    "sdclr_kdup": {"ood": {"strategy": "kdup"}, "pretrain": {"method": "psd", "pruned_branch": True}},
    "gml": {"ood": {"strategy": "none"}, "pretrain": {"method": "gml"}, "distill": {"method": "gml", "gml": {"k": 64}}},
}

FULL = {
    # seconds, 480 in all (subprocesses are killed at their step's budget, pipelines stop
    # starting stages); about 5 minutes expected on one H200
    "budgets": {"wheels": 30, "environment": 20, "device_tests": 75, "pipelines": 225, "throughput": 60,
                "ood_update": 70},
    "methods": ("kdup", "gml", "sdclr_kdup"),
    "epochs": {"pretrain": 4, "distill": 2, "ood_warmup": 1},
    "one_process": False,
    "threads": None,  # torch's / OpenMP's default
    "device_tests": None,  # -k expression: all tests
    "throughput": {"backbone": "resnet18", "size": 32, "batch": 512, "images": 16_384, "warmup_steps": 5,
                   "steps": 30, "blocks": 2, "workers": 8, "drain": None},
    "ood": {"backbone": "resnet18", "size": 32, "pool": 300_000, "id": 12_406, "budget": 10_000, "clusters": 10,
            "knn_k": 10, "warmup_pool": 4096, "warmup_id": 512},
}
SMOKE = {
    "budgets": {"wheels": 30, "environment": 20, "device_tests": 60, "pipelines": 60, "throughput": 20,
                "ood_update": 20},
    "methods": ("kdup",),
    "epochs": {"pretrain": 2, "distill": 1, "ood_warmup": 1},
    "one_process": True,
    # one thread per process: on a small shared CPU, idle OpenMP threads of several runtimes
    # waiting on each other make 2-thread runs 2-4x slower and erratic; figures don't matter here
    "threads": 1,
    # two of the device tests (the suite runs them all): the step's mechanics, not the tests again
    "device_tests": "augment_output or training_step_on_device and simclr",
    "throughput": {"backbone": "resnet8", "size": 32, "batch": 8, "images": 32, "warmup_steps": 0,
                   "steps": 2, "blocks": 1, "workers": 1, "drain": 0},
    "ood": {"backbone": "resnet8", "size": 32, "pool": 2_000, "id": 200, "budget": 100, "clusters": 4,
            "knn_k": 5, "warmup_pool": 256, "warmup_id": 64},
}

# every number of the JSON, one line each ('*' stands for any key at that level)
FIGURES = {
    "ok": "true when no step failed (the exit code is then 0)",
    "wall_s": "seconds of the whole check",
    "steps.*.status": "ok | failed | skipped (wheels without --wheels); a failed step has 'error' and 'traceback'",
    "steps.*.seconds": "wall seconds of the step",
    "steps.*.budget_s": "the step's time budget (subprocesses are killed at it; the whole check fits 8 minutes)",
    "steps.*.warnings": "distinct warnings raised in the step (category: message, count): non-deterministic "
                        "CUDA kernels show up here",
    "steps.wheels.installed": "wheel files installed from --wheels into 'target' (put first on the import path)",
    "steps.environment.torch": "torch version (torch.version.cuda: 'cuda', cuDNN: 'cudnn')",
    "steps.environment.gpu": "GPU name, compute capability, memory (GiB) and count; null on a CPU",
    "steps.environment.amp_auto": "runtime.amp: auto on this device: the precision it picks and why",
    "steps.environment.modules": "version of every package the stages import (null: missing)",
    "steps.device_tests.passed": "tests of tests/test_device_path.py passed on the device (also failed, skipped)",
    "steps.device_tests.tests": "per test: outcome and seconds (failures: the message)",
    "steps.device_tests.deterministic_warnings": "warnings raised under use_deterministic_algorithms(warn_only) "
                                                 "in the device tests (test, category, message)",
    "steps.pipelines.shared.stages.*.seconds": "wall seconds of a data stage run once for all methods "
                                               "(make-lt-dataset, ood-pool)",
    "steps.pipelines.methods.*.stages.*.seconds": "wall seconds of one stage (a python stages/<x>.py process, or "
                                                  "one stage of the shared process with --smoke)",
    "steps.pipelines.methods.*.stages.*.rc": "the stage's exit code (0 ok, 2 user error, 1 crash)",
    "steps.pipelines.methods.*.probe.*.full_all": "linear-probe test accuracy (%) of f (pretrain) / g (distill), "
                                                  "all classes; few_shot_all: the few-shot probe; knn: kNN accuracy",
    "steps.pipelines.methods.*.precision": "the precision decision the pretrain stage recorded in its run card",
    "steps.pipelines.methods.*.pretrain_images_per_s": "pretrain's mean training images/s (views through the "
                                                       "encoder, tiny data: launch-bound)",
    "steps.throughput.ltcl.images_per_s": "ltcl's training loop (run_epoch: SimCLR step, kornia views on the "
                                          "device, channels_last, runtime.amp auto): batch images per second",
    "steps.throughput.ltcl_fp32.images_per_s": "the same loop with runtime.amp: false",
    "steps.throughput.reference.images_per_s": "plain loop: torchvision transforms in a DataLoader (workers, "
                                               "pin_memory), fp32 model on the same device: batch images per second",
    "steps.throughput.ratio": "ltcl images/s over the reference's",
    "steps.ood_update.pool_write_s": "seconds to write the random uint8 pool memmap (not part of the update)",
    "steps.ood_update.embedding_s": "seconds to embed the ID set (on the device) and the pool (memmap, streamed "
                                    "to the device in batches)",
    "steps.ood_update.pool_images_per_s": "ID + pool images embedded per second",
    "steps.ood_update.clustering_s": "k-means + KL refinement of the ID embeddings (faiss / torch on the host)",
    "steps.ood_update.tailness_s": "kNN tailness of the ID set (faiss on the host)",
    "steps.ood_update.selection_s": "clustering + tailness + budget + nearest-to-centroid selection (host)",
    "steps.ood_update.total_s": "the whole update: embedding + selection",
    "steps.ood_update.extra_images_s": "reading the selected pool images and moving them to the device",
    "steps.ood_update.gpu_peak_gib": "peak GPU memory allocated during the update (null on a CPU)",
}


# ------------------------------------------------------------------------------------ helpers
def deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def tail(text: str, n: int = 3000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


WARNING_LINE = re.compile(r"(\w*Warning): (.*)")


def warning_lines(text: str, limit: int = 20) -> list[str]:
    """Distinct 'Category: message' lines of python warnings printed in ``text``."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        m = WARNING_LINE.search(line)
        if m:
            seen.setdefault(f"{m.group(1)}: {m.group(2).strip()[:300]}")
    return list(seen)[:limit]


def summarise_warnings(caught) -> list[dict]:
    counts: dict[str, int] = {}
    for w in caught:
        key = f"{w.category.__name__}: {str(w.message).strip()[:300]}"
        counts[key] = counts.get(key, 0) + 1
    return [{"warning": k, "count": v} for k, v in counts.items()]


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def torch_state():
    """Restore torch's global settings a step changes (deterministic mode, cudnn, threads, RNG)."""
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.get_num_threads(), torch.get_rng_state())
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        torch.set_num_threads(saved[3])
        torch.set_rng_state(saved[4])


class Check:
    """Runs the steps, records each one and rewrites the JSON after every step."""

    def __init__(self, args, sizes: dict):
        self.args, self.sizes = args, sizes
        self.out = Path(args.out)
        self.env = dict(os.environ)  # the environment of every subprocess (wheels' target added)
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src")] + [p for p in [self.env.get("PYTHONPATH")] if p])
        self.env.setdefault("DVC_NO_ANALYTICS", "1")
        self.env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if sizes["threads"]:
            self.env["OMP_NUM_THREADS"] = str(sizes["threads"])
        self.t0 = time.perf_counter()
        self.report = {
            "tool": "ltcl scripts/gpu_check.py", "argv": list(args.argv), "device": args.device,
            "smoke": bool(args.smoke), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ok": None,
            "failed_steps": [], "steps": {}, "figures": FIGURES,
        }

    def write(self) -> None:
        self.report["wall_s"] = round(time.perf_counter() - self.t0, 3)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".part")
        tmp.write_text(json.dumps(self.report, indent=1, default=str))
        tmp.replace(self.out)

    def step(self, name: str, fn) -> dict:
        budget = self.sizes["budgets"][name]
        rec: dict = {"status": "running", "budget_s": budget}
        self.report["steps"][name] = rec
        print(f"[gpu-check] {name} (budget {budget} s) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with torch_state():
                    if self.sizes["threads"]:
                        import torch

                        torch.set_num_threads(self.sizes["threads"])
                    res = fn(budget, t0 + budget) or {}
                rec.update(res)
                rec["status"] = res.get("status", "ok")
            except Exception as exc:  # recorded; the next step runs
                rec.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                           traceback=tail(traceback.format_exc(), 4000))
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        rec["warnings"] = summarise_warnings(caught)
        if rec["status"] == "failed":
            self.report["failed_steps"].append(name)
        print(f"[gpu-check] {name}: {rec['status']} in {rec['seconds']:.1f} s"
              + (f" ({rec.get('error')})" if rec["status"] == "failed" else ""), file=sys.stderr, flush=True)
        self.write()
        return rec


# ------------------------------------------------------------------------------------ (a) wheels
def step_wheels(check: Check, budget: float, deadline: float) -> dict:
    args = check.args
    if not args.wheels:
        return {"status": "skipped", "note": "no --wheels given: the packages must already be importable"}
    wheels = sorted(Path(args.wheels).glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"no *.whl files in {args.wheels}")
    target = Path(args.site)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--disable-pip-version-check", "--find-links", str(args.wheels), "--target", str(target),
           *map(str, wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install failed ({proc.returncode}): {tail(proc.stderr + proc.stdout, 1500)}")
    sys.path.insert(0, str(target))
    import importlib

    importlib.invalidate_caches()
    check.env["PYTHONPATH"] = os.pathsep.join([str(target), check.env["PYTHONPATH"]])
    return {"installed": [w.name for w in wheels], "target": str(target)}


# ------------------------------------------------------------------------------------ (b) environment
def module_versions() -> dict:
    from importlib import import_module

    out = {}
    for name in REQUIRED_MODULES:
        try:
            mod = import_module(name)
            out[name] = str(getattr(mod, "__version__", "present"))
        except Exception as exc:  # noqa: BLE001 - a missing or broken package is what this records
            out[name] = None
            out[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def step_environment(check: Check, budget: float, deadline: float) -> dict:
    import torch

    from ltcl.runtime import amp_decision, resolve_device

    modules = module_versions()
    missing = [m for m in REQUIRED_MODULES if modules.get(m) is None]
    rec = {
        "python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "gpu": None, "modules": modules, "missing": missing,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_conv": torch.backends.cudnn.allow_tf32},
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                      "memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
                      "multiprocessors": props.multi_processor_count}
    device = resolve_device(check.args.device)  # RuntimeError when cuda is asked for and absent
    decision = amp_decision(device, "auto")
    rec["amp_auto"] = {"precision": decision.name, "reason": decision.reason}
    if missing:
        raise RuntimeError(f"missing packages: {', '.join(missing)} (carry them as wheels: README 'GPU check'); "
                           f"{json.dumps(rec, default=str)[:1500]}")
    return rec


# ------------------------------------------------------------------------------------ (c) device tests
def step_device_tests(check: Check, budget: float, deadline: float) -> dict:
    import xml.etree.ElementTree as ET

    work = Path(tempfile.mkdtemp(prefix="ltcl-devtests-"))
    try:
        junit, warn_file = work / "junit.xml", work / "warnings.jsonl"
        env = dict(check.env, LTCL_TEST_DEVICE=check.args.device, LTCL_DEVICE_WARNINGS=str(warn_file))
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-W", "default",
               f"--junitxml={junit}", str(REPO / "tests" / "test_device_path.py")]
        if check.sizes["device_tests"]:
            cmd += ["-k", check.sizes["device_tests"]]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=budget)
        tests, counts = {}, {"passed": 0, "failed": 0, "skipped": 0}
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                outcome, message = "passed", None
                for tag in ("failure", "error", "skipped"):
                    el = case.find(tag)
                    if el is not None:
                        outcome = "skipped" if tag == "skipped" else "failed"
                        message = (el.get("message") or "")[:1000]
                counts[outcome] += 1
                tests[case.get("name")] = {"outcome": outcome, "seconds": float(case.get("time", 0))} | (
                    {"message": message} if message and outcome == "failed" else {})
        det = [json.loads(line) for line in warn_file.read_text().splitlines()] if warn_file.exists() else []
        rec = {**counts, "selection": check.sizes["device_tests"] or "all", "tests": tests, "returncode": proc.returncode, "deterministic_warnings": det,
               "pytest_warnings": warning_lines(proc.stdout + proc.stderr)}
        if proc.returncode != 0 or counts["failed"] or not counts["passed"]:
            rec.update(status="failed", error=f"pytest exit {proc.returncode}: {counts}",
                       output=tail(proc.stdout + proc.stderr, 4000))
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------ (d) pipelines
def stage_command(stage: str) -> tuple[str, list[str]]:
    """``linear-probe@distill`` -> (``stages/linear_probe.py``, ["distill"])."""
    name, _, item = stage.partition("@")
    return f"stages/{name.replace('-', '_')}.py", [item] if item else []


def make_project(root: Path, params: dict) -> None:
    """A copy of the project's pipeline (dvc.yaml, stages/) with the repository's params.yaml
    updated by configs/tiny.yaml and ``params`` (what tests/conftest.make_project writes)."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "stages", root / "stages", dirs_exist_ok=True)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    tiny = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    merged = deep_update(deep_update(base, tiny), params)
    (root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))


def run_stages(check: Check, root: Path, stages, deadline: float, one_process: bool) -> dict:
    """Run ``stages`` in order in project ``root``: one ``python stages/<x>.py`` each, or all of them
    in one child process (``--smoke``: one interpreter start instead of one per stage). Stops at
    the first failure or when ``deadline`` (perf_counter) has passed."""
    out: dict = {}
    if one_process:
        results = root / "stage_results.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--run-stages", str(root), str(results), *stages]
        try:
            proc = subprocess.run(cmd, cwd=root, env=check.env, capture_output=True, text=True,
                                  timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            proc = None
        done = json.loads(results.read_text()) if results.exists() else {}
        out.update(done)
        if proc is None or proc.returncode != 0 and not any(r["rc"] for r in done.values()):
            missing = [s for s in stages if s not in done]
            out[missing[0] if missing else "runner"] = {
                "rc": None if proc is None else proc.returncode, "seconds": None,
                "error": "time budget exhausted" if proc is None else tail(proc.stderr, 3000)}
        return out
    for stage in stages:
        left = deadline - time.perf_counter()
        if left <= 1:
            out[stage] = {"rc": None, "seconds": None, "error": "time budget exhausted before this stage"}
            break
        script, argv = stage_command(stage)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, script, *argv], cwd=root, env=check.env, capture_output=True,
                                  text=True, timeout=left)
            rec = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 3)}
            warn = warning_lines(proc.stderr)
            if warn:
                rec["warnings"] = warn
            if proc.returncode != 0:
                rec["error"] = tail(proc.stderr, 3000)
        except subprocess.TimeoutExpired:
            rec = {"rc": None, "seconds": round(time.perf_counter() - t0, 3), "error": "time budget exhausted"}
        out[stage] = rec
        if rec["rc"] != 0:
            break
    return out


def run_stages_here(root: str, results: str, stages: list[str]) -> int:
    """The child of ``run_stages(one_process=True)``: each stage as ``__main__`` in this process."""
    os.chdir(root)
    out: dict = {}
    for stage in stages:
        script, argv = stage_command(stage)
        sys.argv = [script, *argv]
        err = io.StringIO()
        t0, rc = time.perf_counter(), 0
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # a crash, as the interpreter would report it
                traceback.print_exc(file=err)
                rc = 1
        rec = {"rc": rc, "seconds": round(time.perf_counter() - t0, 3)}
        warn = [w["warning"] for w in summarise_warnings(caught)] + warning_lines(err.getvalue())
        if warn:
            rec["warnings"] = list(dict.fromkeys(warn))[:20]
        if rc != 0:
            rec["error"] = tail(err.getvalue(), 3000)
        out[stage] = rec
        Path(results).write_text(json.dumps(out))
        if rc != 0:
            return 1
    return 0


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pipeline_figures(root: Path) -> dict:
    """Probe accuracies, the recorded precision and training speed of a finished project."""
    out: dict = {"probe": {}}
    for enc in ("pretrain", "distill"):
        m = read_json(root / "metrics" / "probe" / f"{enc}_details.json")  # the whole record (ltcl.headline)
        if isinstance(m, dict):
            out["probe"][enc] = {"full_all": m.get("full", {}).get("all"),
                                 "few_shot_all": m.get("few_shot", {}).get("all"), "knn": m.get("knn")}
    pre = read_json(root / "metrics" / "pretrain.json") or {}
    record = read_json(root / "runs" / "pretrain.json") or {}  # pretrain's run record (ltcl.runrecord)
    run, timings = record.get("run") or {}, record.get("timings") or {}
    out["precision"] = run.get("precision")
    out["gpu_seen_by_stage"] = run.get("gpu")
    out["pretrain_images_per_s"] = timings.get("images_per_s")
    out["pretrain_seconds"] = timings.get("seconds")
    if "ood_update_total_s" in timings:
        out["ood_update_total_s"] = timings["ood_update_total_s"]
    if isinstance(pre.get("classifier"), dict):
        out["teacher_classifier"] = {k: v for k, v in pre["classifier"].items() if not isinstance(v, (list, dict))}
    return out


SHARED_OUTPUTS = ("data/lt", "data/ood", "metrics/dataset.json", "metrics/class_counts.csv")


def step_pipelines(check: Check, budget: float, deadline: float) -> dict:
    """The first method's project runs the data stages (make-lt-dataset, ood-pool) before its own;
    the other methods start from copies of their outputs (they read no method parameter)."""
    sizes, args = check.sizes, check.args
    one = sizes["one_process"]
    ep = sizes["epochs"]
    common = {"runtime": {"device": args.device, "amp": "auto"},
              "pretrain": {"epochs": ep["pretrain"]}, "distill": {"epochs": ep["distill"]},
              "ood": {"warmup_epochs": ep["ood_warmup"]}}
    work = Path(tempfile.mkdtemp(prefix="ltcl-pipelines-"))
    rec: dict = {"work": str(work), "one_process": one, "params": common, "shared": {"stages": {}}, "methods": {}}
    failed = []
    first = None
    try:
        for name in sizes["methods"]:
            root = work / name
            make_project(root, deep_update(json.loads(json.dumps(common)), METHODS[name]))
            if first is None:
                stages = run_stages(check, root, SHARED_STAGES + STAGES, deadline, one)
                rec["shared"]["stages"] = {k: stages.pop(k) for k in SHARED_STAGES if k in stages}
                if any(s["rc"] != 0 for s in rec["shared"]["stages"].values()):
                    raise RuntimeError("a data stage failed: " + json.dumps(rec["shared"]["stages"])[:1500])
                first = root
            else:
                for rel in SHARED_OUTPUTS:
                    src, dst = first / rel, root / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
                stages = run_stages(check, root, STAGES, deadline, one)
            ok = len(stages) == len(STAGES) and all(s["rc"] == 0 for s in stages.values())
            rec["methods"][name] = {"status": "ok" if ok else "failed", "params": METHODS[name],
                                    "stages": stages, **pipeline_figures(root)}
            if not ok:
                failed.append(name)
            check.write()
        if failed:
            rec.update(status="failed", error=f"pipeline(s) failed: {', '.join(failed)}")
        return rec
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------ (e) throughput
def step_throughput(check: Check, budget: float, deadline: float) -> dict:
    from types import SimpleNamespace

    import numpy as np
    import torch
    from benchmarks.bench_throughput import (CROP_SCALE, GRAY_P, JITTER, JITTER_P, SGD, TEMPERATURE, PairDataset,
                                             reference_transform)
    from torch.utils.data import DataLoader

    from ltcl.data.augment import SimCLRAugment
    from ltcl.losses.contrastive import nt_xent
    from ltcl.methods.base import TrainSet
    from ltcl.models.heads import encoder_for
    from ltcl.params import ModelParams
    from ltcl.registry import get_method
    from ltcl.runtime import Runtime, amp_decision, resolve_device, seed_everything
    from ltcl.train.loop import build_optimizer, make_scaler, run_epoch

    s = check.sizes["throughput"]
    device = resolve_device(check.args.device)
    seed_everything(0, True)  # params.yaml's runtime.deterministic: true, as the stages run
    b, size, k = s["batch"], s["size"], s["steps"]
    x = np.frombuffer(np.random.default_rng(0).bytes(s["images"] * size * size * 3), dtype=np.uint8).reshape(
        s["images"], size, size, 3)
    cfg = SimpleNamespace(**{**vars(SGD), "batch_size": b, "epochs": 1, "warmup_epochs": 0})
    workers = min(s["workers"], os.cpu_count() or 1)
    rec: dict = {"backbone": s["backbone"], "image_size": size, "batch": b, "steps_per_block": k,
                 "blocks": s["blocks"], "reference_workers": workers}

    def ltcl_path(amp):
        rt = Runtime(device=device, amp_dtype=amp_decision(device, amp).dtype, channels_last=True)
        torch.manual_seed(0)
        model = encoder_for(ModelParams(backbone=s["backbone"]), 3, size).to(
            device, memory_format=rt.memory_format()).train()
        aug = SimCLRAugment(size, 3, crop_scale=CROP_SCALE, jitter=JITTER, jitter_p=JITTER_P, gray_p=GRAY_P, flip=True,
                            mean=[0.5] * 3, std=[0.5] * 3).to(device)
        timed = TrainSet.from_numpy(x[: k * b], np.zeros(k * b, dtype=np.int64), 1, device)  # k steps per epoch
        method = get_method("simclr")(model, timed, cfg, rt, aug)
        opt = build_optimizer(method.parameters(), cfg)
        scaler = make_scaler(rt)
        gen = torch.Generator().manual_seed(0)
        if s["warmup_steps"]:  # cuDNN / allocator / kornia first calls, untimed
            method.set_data(TrainSet.from_numpy(x[: s["warmup_steps"] * b], np.zeros(s["warmup_steps"] * b,
                                                                                      dtype=np.int64), 1, device))
            run_epoch(method, opt, cfg, rt, 0, gen, scaler, desc="warm-up")
            method.set_data(timed)

        def block():
            log = run_epoch(method, opt, cfg, rt, 0, gen, scaler, desc="throughput")
            return log.steps * b / log.seconds
        return block, amp_decision(device, amp)

    def reference_path():
        torch.manual_seed(0)
        model = encoder_for(ModelParams(backbone=s["backbone"]), 3, size).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=SGD.lr, momentum=SGD.momentum, weight_decay=SGD.weight_decay)
        loader = DataLoader(PairDataset(x, reference_transform(size, 3)), batch_size=b, shuffle=True, drop_last=True,
                            num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        state = {"it": iter(loader)}

        def batch():
            try:
                return next(state["it"])
            except StopIteration:
                state["it"] = iter(loader)
                return next(state["it"])

        def step():
            v1, v2 = batch()
            v = torch.cat([v1, v2]).to(device, non_blocking=True)
            _, z = model(v)
            loss = nt_xent(z[:b], z[b:], TEMPERATURE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(s["warmup_steps"]):
            step()
        # the loader's workers prefetch 2 batches each while the other variants run: drain that
        # queue untimed before each timed block, so the block sees the loader's steady rate
        drain = 2 * workers + 1 if s["drain"] is None else s["drain"]

        def block():
            for _ in range(drain):
                step()
            sync(device)
            t0 = time.perf_counter()
            for _ in range(k):
                step()
            sync(device)
            return k * b / (time.perf_counter() - t0)
        return block, loader

    ltcl_block, decision = ltcl_path("auto")
    fp32_block, _ = ltcl_path(False)
    ref_block, loader = reference_path()
    rates: dict[str, list[float]] = {"ltcl": [], "ltcl_fp32": [], "reference": []}
    try:
        for i in range(s["blocks"]):
            if i and time.perf_counter() > deadline - 10:
                rec["note"] = f"stopped after {i} block(s): time budget"
                break
            for name, fn in (("reference", ref_block), ("ltcl", ltcl_block), ("ltcl_fp32", fp32_block)):
                rates[name].append(fn())
    finally:
        del loader  # ends the persistent workers
    for name, rs in rates.items():
        rec[name] = {"images_per_s": max(rs), "views_per_s": 2 * max(rs), "blocks": [round(r, 1) for r in rs]}
    rec["ltcl"]["precision"] = decision.name
    rec["ratio"] = rec["ltcl"]["images_per_s"] / rec["reference"]["images_per_s"]
    rec["ratio_fp32"] = rec["ltcl_fp32"]["images_per_s"] / rec["reference"]["images_per_s"]
    return rec


# ------------------------------------------------------------------------------------ (f) OOD update
def step_ood_update(check: Check, budget: float, deadline: float) -> dict:
    import numpy as np
    import torch
    from benchmarks.bench_sampling import kdup_config

    from ltcl.methods.base import TrainSet
    from ltcl.models.heads import encoder_for
    from ltcl.params import ModelParams
    from ltcl.runtime import Runtime, amp_decision, resolve_device, seed_everything
    from ltcl.sampling.refresh import OODSampler

    s = check.sizes["ood"]
    device = resolve_device(check.args.device)
    seed_everything(0, True)
    size, n_pool, n_id = s["size"], s["pool"], s["id"]
    decision = amp_decision(device, "auto")
    rt = Runtime(device=device, amp_dtype=decision.dtype, channels_last=True)
    work = Path(tempfile.mkdtemp(prefix="ltcl-pool-"))
    rec: dict = {"backbone": s["backbone"], "image_size": size, "pool_images": n_pool, "id_images": n_id,
                 "budget": s["budget"], "clusters": s["clusters"], "knn_k": s["knn_k"], "precision": decision.name}
    try:
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        path = work / "pool.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n_pool, size, size, 3))
        row = size * size * 3
        for a in range(0, n_pool, 16_384):
            e = min(a + 16_384, n_pool)
            mm[a:e] = np.frombuffer(rng.bytes((e - a) * row), dtype=np.uint8).reshape(e - a, size, size, 3)
        mm.flush()
        del mm
        pool = np.load(path, mmap_mode="r")
        rec["pool_write_s"] = time.perf_counter() - t0
        rec["pool_gib"] = round(path.stat().st_size / 2**30, 3)

        torch.manual_seed(0)
        model = encoder_for(ModelParams(backbone=s["backbone"]), 3, size).to(
            device, memory_format=rt.memory_format()).train()
        x_id = np.frombuffer(rng.bytes(n_id * row), dtype=np.uint8).reshape(n_id, size, size, 3)
        data = TrainSet.from_numpy(x_id, np.zeros(n_id, dtype=np.int64), 1, device)
        mean, std = [0.5] * 3, [0.25] * 3
        # warm-up on slices (cuDNN / allocator / faiss first calls), then the timed update
        wp, wi = min(s["warmup_pool"], n_pool), min(s["warmup_id"], n_id)
        warm = OODSampler(cfg=kdup_config(wi, wp, budget=min(s["budget"], wp // 2), clusters=s["clusters"],
                                          knn_k=s["knn_k"]),
                          pool=pool[:wp], id_images=data.x[:wi], mean=mean, std=std, batch_size=512)
        warm.update(model, rt)
        cfg = kdup_config(n_id, n_pool, budget=s["budget"], clusters=s["clusters"], knn_k=s["knn_k"])
        sampler = OODSampler(cfg=cfg, pool=pool, id_images=data.x, mean=mean, std=std, batch_size=512)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        sel = sampler.update(model, rt)
        t = sel.timings
        t1 = time.perf_counter()
        extra = sampler.extra_images(sel, seed=0)
        sync(device)
        rec.update(
            embedding_s=t["embedding"], clustering_s=t["clustering"], tailness_s=t["tailness"],
            eq7_budget_s=t["budget"],
            sampling_s=t["sampling"],
            selection_s=t["clustering"] + t["tailness"] + t["budget"] + t["sampling"], total_s=t["total"],
            pool_images_per_s=(n_pool + n_id) / t["embedding"], extra_images_s=time.perf_counter() - t1,
            selected=int(len(sel.pool_indices)), distinct=int(len(np.unique(sel.pool_indices))),
            extra_on=str(extra.device), embedding_space=cfg.embedding,
            kl_iterations=sel.cluster_info.get("n_iter"),
            gpu_peak_gib=(round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.type == "cuda" else None),
        )
        if rec["selected"] != cfg.budget or rec["distinct"] != cfg.budget or extra.device.type != device.type:
            rec.update(status="failed", error=f"bad selection: {rec['selected']} selected, {rec['distinct']} "
                                              f"distinct, budget {cfg.budget}, extra images on {extra.device}")
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------ main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", help="device of every step (cuda, cuda:N, cpu); default cuda")
    p.add_argument("--wheels", help="folder of wheels to install first (pip --no-index --no-deps --target)")
    p.add_argument("--site", default=str(Path(tempfile.gettempdir()) / "ltcl-site"),
                   help="where --wheels are installed (put first on the import path)")
    p.add_argument("--out", default="gpu_check.json", help="the JSON written (rewritten after every step)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: the whole check in under a minute on a CPU")
    p.add_argument("--keep", action="store_true", help="keep the temporary pipeline projects")
    p.add_argument("--steps", help="comma-separated subset of the steps (default: all)")
    p.add_argument("--wheel-spec", action="store_true",
                   help="print NAME==VERSION of every package to carry (CARRY), as installed here, and exit")
    p.add_argument("--run-stages", nargs="+", help=argparse.SUPPRESS)  # the one-process stage runner (internal)
    args = p.parse_args(argv)
    args.argv = list(argv)
    return args


STEPS = {"wheels": step_wheels, "environment": step_environment, "device_tests": step_device_tests,
         "pipelines": step_pipelines, "throughput": step_throughput, "ood_update": step_ood_update}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.wheel_spec:
        from importlib.metadata import version

        print(" ".join(f"{name}=={version(name)}" for name in CARRY))
        return 0
    if args.run_stages:
        root, results, *stages = args.run_stages
        return run_stages_here(root, results, stages)
    check = Check(args, SMOKE if args.smoke else FULL)
    wanted = args.steps.split(",") if args.steps else list(STEPS)
    unknown = set(wanted) - set(STEPS)
    if unknown:
        print(f"unknown step(s): {', '.join(sorted(unknown))}; known: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    for name in STEPS:
        if name in wanted:
            check.step(name, lambda budget, deadline, fn=STEPS[name]: fn(check, budget, deadline))
    check.report["ok"] = not check.report["failed_steps"]
    check.report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    check.write()
    print(f"[gpu-check] {'ok' if check.report['ok'] else 'FAILED: ' + ', '.join(check.report['failed_steps'])}"
          f" in {check.report['wall_s']:.0f} s -> {check.out}", file=sys.stderr)
    return 0 if check.report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

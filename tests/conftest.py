"""Shared fixtures: a throw-away copy of the project (dvc.yaml, params.yaml, stages/) with
tiny parameters, so stage and pipeline tests run the real scripts in seconds."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Idle OpenMP threads (torch's, scikit-learn's and faiss's runtimes, in this process and in the
# stage processes, which inherit it) sleep instead of spinning.  With 2 cores shared with other
# work, spinning threads of one runtime starve the others' and the suite runs 5-8x slower (the
# t-SNE and training tests: 90 s instead of 13 s).  Read once, when a runtime loads: this
# module is imported before any test module imports torch.  Results do not depend on it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]

TINY = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())  # shared with benchmarks/bench_pipeline.py


def deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def stage_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


class Project:
    """A copy of the project in a temporary directory."""

    def __init__(self, root: Path):
        self.root = root

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, updates: dict) -> None:
        p = deep_update(self.params(), updates)
        (self.root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

    def write_params_text(self, text: str) -> None:
        (self.root / "params.yaml").write_text(text)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), cwd=self.root, env=stage_env(), capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def stage(self, script: str, *args: str, check: bool = True,
              in_process: bool = True) -> subprocess.CompletedProcess:
        """Run ``stages/<script>``: by default in this process (:func:`stage_inproc`: no 10-30 s
        interpreter start and torch import per stage); ``in_process=False`` for a fresh
        ``python stages/<script>``, where the process boundary is what a test is about."""
        if not in_process:
            return self.run(sys.executable, f"stages/{script}", *args, check=check)
        proc = stage_inproc(self, script, *args)
        if check and proc.returncode != 0:
            raise AssertionError(f"stages/{script} {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def path(self, rel: str) -> Path:
        return self.root / rel


# the longest file first: under xdist (pyproject's addopts) one worker takes it while the others
# run the rest, instead of its ~4 minutes starting after whatever the collection order put first
FIRST = ("tests/test_dvc_pipeline.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: 0 if item.nodeid.startswith(FIRST) else 1)  # stable: the rest keep their order


def all_keys(obj):
    """Every key of a nested JSON-like object (dicts inside dicts and lists), depth first."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from all_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_keys(v)


def tiny_params(params: dict | None = None) -> dict:
    """The repository's params.yaml with the tiny overrides and then ``params`` applied."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return deep_update(deep_update(base, yaml.safe_load(yaml.safe_dump(TINY))), params or {})


def make_project(tmp: Path, params: dict | None = None, git: bool = False) -> Project:
    if git:  # a DVC project, laid out as the real one (the pipeline benchmark's scratch copy too)
        sys.path.insert(0, str(REPO / "benchmarks"))
        from _util import copy_layout

        copy_layout(tmp)
    else:
        for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
            shutil.copy(REPO / name, tmp / name)
        shutil.copytree(REPO / "stages", tmp / "stages")
    proj = Project(tmp)
    proj.set_params(deep_update(yaml.safe_load(yaml.safe_dump(TINY)), params or {}))
    if git:
        for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@ltcl"],
                    ["git", "config", "user.name", "ci"]):
            subprocess.run(cmd, cwd=tmp, check=True)
    return proj


def refused(proc, *needles: str, absent: tuple[str, ...] = (), proj: Project | None = None) -> str:
    """Assert a stage failed as a user error: exit 2, one message holding every needle, no
    traceback, and none of ``absent`` (its outputs) left behind.  Returns the message."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{err}"
    assert "Traceback" not in err, err
    assert "error:" in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    for rel in absent:
        assert not proj.path(rel).exists(), f"{rel} was left behind"
    return err


def stage_inproc(proj: Project, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``stages/<script>`` as ``__main__`` in this process, in the project directory; return
    its exit code, stdout and stderr like ``proj.stage(..., in_process=False, check=False)``.
    Log records of level WARNING and above go to its stderr, as the interpreter's last-resort
    handler would print them in a fresh process.  Global state a stage sets (torch's
    deterministic mode and threads, the RNGs, argv, cwd, the environment) is restored
    afterwards."""
    import logging

    import numpy as np
    import torch

    saved = (os.getcwd(), list(sys.argv), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads(),
             torch.backends.cudnn.benchmark, torch.get_rng_state(), np.random.get_state(), random.getstate(),
             dict(os.environ))
    out, err, code = io.StringIO(), io.StringIO(), 0
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        os.environ["DVC_NO_ANALYTICS"] = "1"
        os.chdir(proj.root)
        sys.argv = [f"stages/{script}", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(f"stages/{script}", run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
            except Exception:  # a crash, as the interpreter would report it
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        root.removeHandler(handler)
        os.chdir(saved[0])
        sys.argv = saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        torch.set_num_threads(saved[4])
        torch.backends.cudnn.benchmark = saved[5]
        torch.set_rng_state(saved[6])
        np.random.set_state(saved[7])
        random.setstate(saved[8])
        for key in set(os.environ) - set(saved[9]):
            del os.environ[key]
        os.environ.update({k: v for k, v in saved[9].items() if os.environ.get(k) != v})
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def fake_encoder(proj: Project, rel: str = "data/models/pretrain.pt", image_shape=None, **model) -> None:
    """An untrained but well-formed encoder checkpoint (with its sha256 sidecar), as pretrain
    writes it: lets the distill / probe tests skip training."""
    from ltcl.models.checkpoint import build_from_spec, encoder_spec, save_encoder
    from ltcl.params import ModelParams

    h, w, c = image_shape or json.loads(proj.path("data/lt/manifest.json").read_text())["image_shape"]
    cfg = ModelParams(**{**proj.params()["model"], **model})
    spec = encoder_spec(cfg, c, h, [0.5] * c, [0.25] * c)
    proj.path(rel).parent.mkdir(parents=True, exist_ok=True)
    save_encoder(proj.path(rel), build_from_spec(spec), spec)


def copy_project(src: Project, dest: Path, params: dict | None = None) -> Project:
    """A private copy of ``src`` (its stage outputs included) that a test may change.  With
    ``params``, its params.yaml is replaced by the tiny params updated with ``params``, as
    ``make_project(dest, params)`` writes it: the copied outputs then stand for the stages
    that ``src`` ran, on inputs that do not depend on what ``params`` changes."""
    shutil.copytree(src.root, dest, symlinks=True)
    proj = Project(dest)
    if params is not None:
        proj.path("params.yaml").write_text(yaml.safe_dump(tiny_params(params), sort_keys=False))
    return proj


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


@pytest.fixture(scope="session")
def lt_project(tmp_path_factory) -> Project:
    """make-lt-dataset and ood-pool on the tiny params (ood.strategy kdup), once per session:
    what every tiny pipeline starts from (data/lt reads only ``data``, the pool only the pool
    parameters ``ood.source/path/pool_source/pool_size/pool_seed``).  Read-only: copy it
    (:func:`copy_project`) to run further stages."""
    proj = make_project(tmp_path_factory.mktemp("lt"), {"ood": {"strategy": "kdup"}})
    proj.stage("make_lt_dataset.py")
    proj.stage("ood_pool.py")
    return proj


@pytest.fixture(scope="session")
def kdup_project(lt_project, tmp_path_factory) -> Project:
    """The whole KDUP chain on tiny params: dataset, pool, warm-up + sampling, pre-training
    with one re-sampling, distillation, and the linear probe of f and g."""
    proj = copy_project(lt_project, tmp_path_factory.mktemp("kdup") / "p", {
        "ood": {"strategy": "kdup"}, "pretrain": {"method": "psd", "epochs": 3}})
    for script in ("ood_sampling.py", "pretrain.py", "distill.py"):
        proj.stage(script)
    for enc in ("pretrain", "distill"):
        proj.stage("linear_probe.py", enc)
    return proj


@pytest.fixture(scope="session")
def built_project(lt_project, tmp_path_factory) -> Project:
    """make-lt-dataset + pretrain (simclr, ood.strategy none, a checkpoint every epoch) run
    once on the tiny params, shared by read-only tests (copy it to change it)."""
    proj = copy_project(lt_project, tmp_path_factory.mktemp("built") / "p", {"pretrain": {"checkpoint_every": 1}})
    proj.stage("ood_sampling.py")  # strategy none: no warm-up, empty selection
    proj.stage("pretrain.py")
    return proj

"""scripts/gpu_check.py, the one command a lent GPU machine runs, runs here on the CPU in its
``--smoke`` sizes, so that it cannot rot between the rare sessions that have a GPU: every step
finishes ok and every figure its ``figures`` entry explains is in the JSON."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gpu_check = _load()


def resolve(obj, parts: list[str]) -> list:
    """The values at a dotted path of ``figures`` ('*': every key at that level)."""
    if not parts:
        return [obj]
    if not isinstance(obj, dict):
        return []
    head, rest = parts[0], parts[1:]
    keys = list(obj) if head == "*" else [head] if head in obj else []
    return [v for k in keys for v in resolve(obj[k], rest)]


def test_smoke_run_records_every_step_and_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    rc = gpu_check.main(["--smoke", "--device", "cpu", "--out", str(out)])
    rep = json.loads(out.read_text())
    steps = rep["steps"]
    assert list(steps) == list(gpu_check.STEPS)
    for name, step in steps.items():
        want = "skipped" if name == "wheels" else "ok"  # no --wheels: nothing to install
        assert step["status"] == want, f"{name}: {step.get('error')}\n{step.get('traceback', '')}"
        assert step["seconds"] >= 0 and isinstance(step["warnings"], list)
    assert rc == 0 and rep["ok"] and rep["failed_steps"] == []

    for path, line in rep["figures"].items():
        assert line and isinstance(line, str)
        if path.startswith("steps.wheels.") and path.split(".")[2] not in ("status", "seconds", "budget_s", "warnings"):
            continue  # a skipped wheels step installs nothing
        assert resolve(rep, path.split(".")), f"figure {path!r} missing from the JSON"

    env = steps["environment"]
    assert env["amp_auto"]["precision"] in ("bf16", "fp32") and env["amp_auto"]["reason"] and not env["missing"]
    tests = steps["device_tests"]
    assert tests["passed"] >= 2 and tests["failed"] == 0 and tests["returncode"] == 0
    pipe = steps["pipelines"]
    assert list(pipe["shared"]["stages"]) == list(gpu_check.SHARED_STAGES)
    for name, m in pipe["methods"].items():
        assert list(m["stages"]) == list(gpu_check.STAGES) and all(s["rc"] == 0 for s in m["stages"].values())
        for enc in ("pretrain", "distill"):
            assert 0 < m["probe"][enc]["full_all"] <= 100
        assert m["precision"]["amp"] == "auto"
    thr = steps["throughput"]
    assert all(thr[v]["images_per_s"] > 0 for v in ("ltcl", "ltcl_fp32", "reference")) and thr["ratio"] > 0
    ood = steps["ood_update"]
    assert ood["selected"] == ood["distinct"] == ood["budget"] and ood["total_s"] >= ood["embedding_s"] > 0


def test_a_failing_step_is_recorded_and_the_next_one_runs(tmp_path):
    out, empty = tmp_path / "gpu_check.json", tmp_path / "wheels"
    empty.mkdir()
    rc = gpu_check.main(["--steps", "wheels,environment", "--wheels", str(empty), "--device", "cuda:99",
                         "--out", str(out)])
    rep = json.loads(out.read_text())
    assert rc == 1 and rep["ok"] is False and rep["failed_steps"] == ["wheels", "environment"]
    assert "no *.whl files" in rep["steps"]["wheels"]["error"]
    assert rep["steps"]["environment"]["error"] and rep["steps"]["environment"]["traceback"]
    assert gpu_check.main(["--steps", "nonsense", "--out", str(out)]) == 2


def _wheel(folder: Path, name: str = "ltcl_gpucheck_probe") -> Path:
    """A minimal pure-python wheel holding module ``name`` (VALUE = 42)."""
    files = {f"{name}.py": b"VALUE = 42\n",
             f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
             f"{name}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                             b"Tag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for p, d in files.items()) + f"{name}-0.1.dist-info/RECORD,,\n"
    path = folder / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
        zf.writestr(f"{name}-0.1.dist-info/RECORD", record)
    return path


def test_wheels_step_installs_the_carried_wheels_offline(tmp_path):
    wheels, site, out = tmp_path / "wheels", tmp_path / "site", tmp_path / "gpu_check.json"
    wheels.mkdir()
    whl = _wheel(wheels)
    try:
        rc = gpu_check.main(["--steps", "wheels", "--wheels", str(wheels), "--site", str(site), "--out", str(out)])
        step = json.loads(out.read_text())["steps"]["wheels"]
        assert rc == 0 and step["status"] == "ok", step.get("error")
        assert step["installed"] == [whl.name] and (site / "ltcl_gpucheck_probe.py").exists()
        assert sys.path[0] == str(site)  # what later steps import from
    finally:
        if str(site) in sys.path:
            sys.path.remove(str(site))


def test_wheel_spec_names_every_carried_package_installed_here(capsys):
    assert gpu_check.main(["--wheel-spec"]) == 0
    spec = capsys.readouterr().out.split()
    assert [s.split("==")[0] for s in spec] == list(gpu_check.CARRY) and all(s.split("==")[1] for s in spec)

"""runtime.amp: auto decides the precision from the device's capability (injected here: a CPU
with and without native bf16, GPUs of several compute capabilities), true / false / fp16 stay
explicit overrides, and a stage's run card records the decision and why."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import copy_project
from ltcl.errors import UserError
from ltcl.params import RuntimeParams
from ltcl.runtime import amp_decision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("flags, dtype", [
    ({"avx2", "fma"}, None),                               # the AVX2 machines: bf16 emulated, ~10x slower
    ({"avx2", "avx512f", "avx512bw"}, None),               # AVX-512 without its bf16 extension
    ({"avx512f", "avx512_bf16"}, torch.bfloat16),          # Cooper Lake / Zen 4 and later
    ({"amx_tile", "amx_bf16"}, torch.bfloat16),            # Sapphire Rapids AMX
    ({"fp", "asimd", "bf16"}, torch.bfloat16),             # ARMv8.6 (Graviton 3, Apple M2+)
    (set(), None),                                         # flags unreadable: fp32, the safe choice
])
def test_auto_on_cpus(flags, dtype):
    d = amp_decision(CPU, "auto", flags=flags)
    assert d.dtype == dtype
    assert ("native bf16" in d.reason) and (("no native" in d.reason) == (dtype is None))


@pytest.mark.parametrize("cap, dtype", [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((7, 5), None),
                                        ((6, 1), None)])
def test_auto_on_gpus(cap, dtype):
    d = amp_decision(CUDA, "auto", cuda_capability=cap)
    assert d.dtype == dtype and f"{cap[0]}.{cap[1]}" in d.reason


def test_explicit_settings_override_the_capability():
    assert amp_decision(CPU, False, flags={"avx512_bf16"}).dtype is None
    assert amp_decision(CPU, True, flags={"avx2"}).dtype == torch.bfloat16
    assert amp_decision(CUDA, True, cuda_capability=(7, 0)).dtype == torch.float16  # no bf16: fp16 + scaler
    assert amp_decision(CUDA, "fp16", cuda_capability=(9, 0)).dtype == torch.float16
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        amp_decision(CPU, "fp16")
    assert amp_decision(torch.device("mps"), "auto").dtype is None


def test_auto_is_the_schema_default_and_params_yaml_default():
    import yaml

    from conftest import REPO

    assert RuntimeParams().amp == "auto"
    assert yaml.safe_load((REPO / "params.yaml").read_text())["runtime"]["amp"] == "auto"
    with pytest.raises(ValueError):
        RuntimeParams(amp="bf16")


@pytest.mark.parametrize("flags, precision", [({"avx2"}, "fp32"), ({"avx512_bf16"}, "bf16")])
def test_run_card_records_the_decision(lt_project, tmp_path, monkeypatch, flags, precision):
    import ltcl.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: set(flags))
    proj = copy_project(lt_project, tmp_path / "p", {"runtime": {"amp": "auto"}, "pretrain": {"epochs": 1}})
    proj.stage("pretrain.py")
    run = json.loads(proj.path("runs/pretrain.json").read_text())["run"]  # the run record, not the metrics
    assert "run" not in json.loads(proj.path("metrics/pretrain.json").read_text())
    assert run["precision"]["precision"] == precision and run["precision"]["amp"] == "auto"
    assert ("no native bf16" in run["precision"]["reason"]) == (precision == "fp32")
    from ltcl.report.html import run_card

    html, md = run_card(proj.root)
    assert run["precision"]["reason"] in md and "| pretrain | " in md and precision in md

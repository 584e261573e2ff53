"""What the numbers depend on beyond params (issue 22): the runtime stage records the device,
the resolved precision and the thread count in data/runtime.json, and a torch stage refuses to
run where this process resolves other facts than the record."""

from __future__ import annotations

import json

import pytest
import torch

import ltcl.runtime as rt
from conftest import copy_project, refused
from ltcl.errors import UserError
from ltcl.params import RuntimeParams


@pytest.mark.parametrize("flags, precision", [({"avx2", "avx512_bf16"}, "bf16"), ({"avx2", "fma"}, "fp32")])
def test_facts_follow_the_precision_decision_of_the_cpu(monkeypatch, flags, precision):
    monkeypatch.setattr(rt, "cpu_flags", lambda: set(flags))
    facts = rt.runtime_facts(RuntimeParams(device="cpu", amp="auto"))
    assert facts == {"device": "cpu", "precision": precision, "threads": torch.get_num_threads()}
    assert rt.runtime_facts(RuntimeParams(device="cpu", amp=False))["precision"] == "fp32"


def test_facts_threads(monkeypatch):
    assert rt.runtime_facts(RuntimeParams(device="cpu", threads=3))["threads"] == 3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert rt.runtime_facts(RuntimeParams(device="cpu", nproc=2))["threads"] == 1  # torchrun's default per process
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert rt.runtime_facts(RuntimeParams(device="cpu", nproc=2))["threads"] == 4


def test_check_recorded_facts(tmp_path, monkeypatch):
    cfg = RuntimeParams(device="cpu", amp="auto")
    path = tmp_path / "runtime.json"
    rt.check_recorded_facts(cfg, str(path))  # no record: nothing to check
    monkeypatch.setattr(rt, "cpu_flags", lambda: {"avx512_bf16"})
    path.write_text(json.dumps(rt.runtime_facts(cfg)))
    rt.check_recorded_facts(cfg, str(path))
    monkeypatch.setattr(rt, "cpu_flags", lambda: {"avx2"})  # the same record read on an AVX2 machine
    with pytest.raises(UserError, match="precision 'bf16' there, 'fp32' here.*dvc repro"):
        rt.check_recorded_facts(cfg, str(path))


def test_runtime_stage_writes_the_facts_and_a_torch_stage_checks_them(lt_project, tmp_path):
    p = copy_project(lt_project, tmp_path / "p")
    p.stage("runtime.py")
    facts = json.loads(p.path("data/runtime.json").read_text())
    assert facts == rt.runtime_facts(RuntimeParams(**p.params()["runtime"]))
    p.path("data/runtime.json").write_text(json.dumps({**facts, "threads": facts["threads"] + 7}))
    refused(p.stage("ood_sampling.py", check=False), "data/runtime.json", f"threads {facts['threads'] + 7} there",
            absent=("data/ood/warmup.pt",), proj=p)

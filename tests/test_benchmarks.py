"""Smoke tests of benchmarks/ (issue 6): every benchmark's core function runs on tiny sizes.
The numbers are meaningless here; `make bench` produces the real ones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_efficiency  # noqa: E402
import bench_methods  # noqa: E402
import bench_pipeline  # noqa: E402
import bench_sampling  # noqa: E402
import bench_scale  # noqa: E402
import bench_throughput  # noqa: E402
import run_all  # noqa: E402

TINY_MODEL = dict(name="tiny", backbone="resnet8", size=16, channels=3, batch=4, warmup=1, max_steps=2,
                  max_seconds=0.0)


@pytest.fixture(scope="module")
def tiny_throughput():
    profiles = {}
    r = bench_throughput.measure(TINY_MODEL, bf16_batch=2, profiles=profiles)
    r["profiles"] = profiles
    return r


def test_throughput_measures_every_variant(tiny_throughput):
    r = tiny_throughput
    assert set(r["variants"]) == {"reference", "ltcl_bf16", "ltcl_fp32"}
    for v in r["variants"].values():
        assert v["steps_timed"] == 2 and v["images_per_s"] > 0
    assert r["variants"]["ltcl_fp32"]["flops_per_step"] > 0
    assert r["ratio"] > 0 and set(r["profiles"]) == set(r["variants"])


@pytest.mark.parametrize("flags, bf16_rate, chosen, ok", [
    ({"avx2"}, 10.0, "fp32", True),            # no native bf16: auto trains fp32, the faster one here
    ({"avx2"}, 30.0, "fp32", False),           # ... and fails the check if bf16 measured faster
    ({"avx512_bf16"}, 30.0, "bf16", True),
    ({"avx512_bf16"}, 10.0, "bf16", False),
])
def test_auto_row_is_the_variant_auto_picks_and_passes_when_faster(flags, bf16_rate, chosen, ok):
    import torch

    from ltcl.runtime import amp_decision

    variants = {"ltcl_bf16": {"images_per_s": bf16_rate, "ratio_vs_reference": bf16_rate / 5},
                "ltcl_fp32": {"images_per_s": 20.0, "ratio_vs_reference": 4.0}}
    row = bench_throughput.auto_row(variants, amp_decision(torch.device("cpu"), "auto", flags=flags))
    assert row["precision"] == chosen and row["pass"] == ok
    assert row["images_per_s"] == (bf16_rate if chosen == "bf16" else 20.0)


def test_reference_loader_gives_two_normalised_views():
    x = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 1), dtype=np.uint8)
    ds = bench_throughput.PairDataset(x, bench_throughput.reference_transform(16, 1))
    v1, v2 = ds[0]
    assert v1.shape == v2.shape == (1, 16, 16) and float(v1.min()) >= -1.0 - 1e-6


def test_efficiency_uses_throughput_result(tiny_throughput):
    out = bench_efficiency.run(throughput={"models": {bench_efficiency.MODEL: tiny_throughput}}, max_n=256)
    assert out["paths"]["ltcl_fp32"]["share"] > 0 and out["peaks"]["fp32"]["n"] <= 256


def test_sampling_ours_and_reference_select_the_budget():
    id_emb, pool = bench_sampling.synthetic_embeddings(n_pool=2000, id_counts=(120, 60, 20), pool_components=6)
    r = bench_sampling.measure_update(id_emb, pool, repeats=1, budget=100, clusters=3, knn_k=5, profile=True)
    assert r["selected"] == r["reference_selected"] == 100 and r["ratio"] > 0
    assert sum(r["budgets"]) == sum(r["reference_budgets"]) == 100
    s = bench_sampling.measure_select_nearest(n_pool=500, d=8, budget=50, clusters=(2, 5))
    assert set(s["seconds"]) == {"2", "5"}
    e = bench_sampling.measure_embedding(8, n_full=80, batch_size=4, backbone="resnet8")
    assert e["extrapolated_s"] == pytest.approx(10 * e["seconds"])


def test_pipeline_scratch_project_and_stage_parsing(tmp_path):
    bench_pipeline.make_scratch(tmp_path)
    params = bench_pipeline.yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["pretrain"]["epochs"] == bench_pipeline.TINY["pretrain"]["epochs"]
    assert (tmp_path / ".git").is_dir() and (tmp_path / "src" / "ltcl").is_dir()
    bench_pipeline.set_probe_lr(tmp_path, 0.25)
    assert bench_pipeline.yaml.safe_load((tmp_path / "params.yaml").read_text())["probe"]["lr"] == 0.25
    out = "Running stage 'linear-probe@pretrain':\n> python x\nRunning stage 'report':\n"
    assert bench_pipeline.ran_stages(out) == ["linear-probe@pretrain", "report"]

    # laid out as the real project (issue 26): every dependency dvc.yaml names is in the copy or is
    # another stage's output (foreach outputs by their folder), and the first stages run under dvc
    import json
    import subprocess
    import sys

    import yaml

    env = bench_pipeline._env(1)

    def dvc(*args):
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, check=True).stdout

    status = json.loads(dvc("status", "--json"))
    missing = {path for entries in status.values() for e in entries if isinstance(e, dict)
               for path, what in e.get("changed deps", {}).items() if what == "deleted"}
    outs = set()
    for stage in yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"].values():
        body = stage.get("do", stage)
        for o in (body.get("outs") or []) + (body.get("metrics") or []):
            outs.add((next(iter(o)) if isinstance(o, dict) else o).split("${")[0])
    assert missing and not {m for m in missing if not any((m + "/").startswith(o) for o in outs)}
    assert bench_pipeline.ran_stages(dvc("repro", "make-lt-dataset")) == ["make-lt-dataset"]


def test_scale_streams_a_small_pool(tmp_path):
    r = bench_scale.run(n=64, budget=16, id_counts=(30, 20, 10), tmpdir=str(tmp_path), batch_size=16)
    assert r["selected"] == 16 and r["pool_shape"] == [64, 32, 32, 3] and r["pool_deleted"]
    assert r["growth_anon_gb"] < r["limit_gb"] and not any(tmp_path.iterdir())


def test_table_lists_every_result(tiny_throughput):
    rows = run_all.table_rows({"throughput": {"target_ratio": 3.0, "models": {"tiny": tiny_throughput}},
                               "pipeline": {"error": "Traceback\nRuntimeError: boom"}})
    assert len(rows) == 5 and rows[-1][-1] == "ERROR"  # 2 variants + auto + data path + error
    assert rows[2][0].startswith("1 throughput tiny ltcl amp auto ->")
    assert "PASS" in run_all.format_table(rows) or "MISS" in run_all.format_table(rows)


def test_methods_times_every_self_supervised_method_against_simclr():
    r = bench_methods.run({"backbone": "resnet8", "size": 16, "n": 32, "batch": 16, "steps": 1, "rounds": 1})
    assert set(r["step_s"]) == set(bench_methods.methods()) and "bcl" in r["step_s"] and "gml" not in r["step_s"]
    assert r["vs_simclr"]["simclr"] == 1.0 and all(s > 0 for s in r["step_s"].values())
    rows = run_all.table_rows({"methods": r})
    assert [row[0].split()[1] for row in rows] == list(r["step_s"])

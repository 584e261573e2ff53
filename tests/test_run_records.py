"""Byte-stable declared outputs and the run records (issue 22): a stage rerun on identical inputs
writes the same bytes to every output dvc.yaml declares (model files, sidecars, .npz, metrics,
curves), because the run card and every timing go to the stage's run record ``runs/<stage>.json``
(``ltcl.runrecord``), which dvc.yaml declares as an output that is not a metric."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, all_keys, make_project
from ltcl.io import load_checkpoint

# dvc.yaml stage -> its script and argument: every stage of the default pipeline but the report
# (which shows the run records) and those of external encoders
SCRIPTS = {"make-lt-dataset": ("make_lt_dataset.py",), "ood-pool": ("ood_pool.py",),
           "ood-sampling": ("ood_sampling.py",), "pretrain": ("pretrain.py",), "distill": ("distill.py",),
           "linear-probe@pretrain": ("linear_probe.py", "pretrain"),
           "linear-probe@distill": ("linear_probe.py", "distill"),
           "reference-probe-pixels": ("reference_probe.py", "pixels"),
           "reference-probe-random": ("reference_probe.py", "random"),
           "cluster@pretrain": ("cluster.py", "pretrain"), "cluster@distill": ("cluster.py", "distill"),
           "export@distill": ("export.py", "distill")}
TIMING_KEYS = {"run", "seconds", "seconds_per_epoch", "images_per_s", "setup_seconds", "wall_s", "peak_rss_mb"}
RUN_CARD_KEYS = {"precision", "wall_s", "peak_rss_mb", "cpu", "cores", "torch_threads", "gpu", "torch", "python"}


def declared_outputs(stage: str) -> list[str]:
    """Every path dvc.yaml declares as an output of ``stage`` (outs, metrics, plots; a foreach
    stage ``name@item`` with ``${item}`` substituted)."""
    name, _, item = stage.partition("@")
    st = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    st = st.get("do", st)
    paths = []
    for key in ("outs", "metrics", "plots"):
        for entry in st.get(key) or []:
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            paths.append(path.replace("${item}", item))
    return paths


def digest(path: Path) -> str | dict:
    if path.is_dir():
        return {str(p.relative_to(path)): digest(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dvc_yaml_declares_a_run_record_per_stage_and_none_as_metric():
    """Each stage that runs through ``run_stage`` declares ``runs/<stage>.json`` (``@`` as ``-``)
    as a (cached) output, never as a metric; the report depends on the records it shows.  No stage
    but ``runtime`` (always run) has a ``cache: false`` output other than metrics and plots, nor a
    persistent one: DVC then skips the stage's run cache (dvc/stage/__init__.py ``run``:
    ``no_cache_outs``; dvc/stage/cache.py ``_can_hash``: ``out.persist``)."""
    from ltcl.report.html import RUN_STAGES
    from ltcl.runrecord import run_record_path

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in SCRIPTS:
        name, _, item = stage.partition("@")
        do = stages[name].get("do", stages[name])
        outs = {next(iter(e)) if isinstance(e, dict) else e: e[next(iter(e))] if isinstance(e, dict) else {}
                for e in do["outs"]}
        record = f"runs/{name}-${{item}}.json" if item else run_record_path(stage).as_posix()
        assert outs[record] == {}, stage
        assert not any(next(iter(e)).startswith("runs/") for e in do.get("metrics") or [])
    deps = stages["report"]["deps"]
    assert [d for d in deps if d.startswith("runs/")] == [run_record_path(s).as_posix() for s in RUN_STAGES]
    for name, st in stages.items():
        for e in st.get("do", st).get("outs") or []:
            opts = e[next(iter(e))] if isinstance(e, dict) else {}
            assert not opts.get("persist"), (name, e)
            assert opts.get("cache", True) or name == "runtime", (name, e)


@pytest.fixture(scope="module")
def rerun(tmp_path_factory):
    """The pipeline (data, pool, warm-up + first OOD update, pre-training with one re-sampling,
    distillation, probes, reference rows, clusters, an export) run twice on identical inputs,
    every declared output removed before its stage as DVC removes it: (project, outputs after run
    1, after run 2)."""
    proj = make_project(tmp_path_factory.mktemp("rerun"), {"ood": {"strategy": "kdup"}, "pretrain": {"epochs": 3},
                                                          "cluster": {"tsne_samples": 20}})
    runs = []
    for _ in range(2):
        for stage, script in SCRIPTS.items():
            for rel in declared_outputs(stage):
                p = proj.path(rel)
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
            proj.stage(*script)
        runs.append({rel: digest(proj.path(rel)) for stage in SCRIPTS for rel in declared_outputs(stage)})
    return proj, runs[0], runs[1]


def test_stage_rerun_writes_identical_declared_outputs(rerun):
    proj, first, second = rerun
    records = {rel for rel in first if rel.startswith("runs/")}
    assert records == {f"runs/{s.replace('@', '-')}.json" for s in SCRIPTS}
    stable = {rel: h for rel, h in first.items() if rel not in records}
    # what the comparison covers: model files and sidecars, npz, metrics, curves, the probe's CSV
    assert {"data/lt", "data/ood/pool.npy", "data/models/pretrain.pt", "data/models/distill.pt.sha256",
            "data/ood/selection.npz", "data/ood/warmup.pt", "data/ood/pretrain_diagnostics.npz",
            "metrics/pretrain.json", "metrics/probe/pretrain_per_class.csv", "dvclive/pretrain/plots/metrics",
            "metrics/cluster/distill_tsne.csv", "metrics/probe/ref-random.json",
            "metrics/probe/ref-random_details.json", "metrics/ood_details.json", "export/distill"} <= set(stable)
    assert stable["dvclive/pretrain/plots/metrics"]  # the curves exist (a folder of TSV files)
    assert json.loads(proj.path("metrics/pretrain.json").read_text())["ood_updates"] == 1  # a re-sampling ran
    diff = sorted(rel for rel in stable if second[rel] != stable[rel])
    assert diff == [], diff


def test_metrics_hold_no_timings_and_the_run_records_do(rerun):
    """No metrics file holds the run card or a timing; each stage's run record holds its run card
    (wall time, peak memory, host, versions) and the timings its metrics used to carry, consistent
    with the metrics (one entry per epoch, per update)."""
    proj, _, _ = rerun
    for path in proj.path("metrics").rglob("*.json"):
        keys = set(all_keys(json.loads(path.read_text())))
        assert not keys & TIMING_KEYS and not [k for k in keys if k.endswith("_s")], (path, keys)
    rec = {s: json.loads(proj.path(f"runs/{s.replace('@', '-')}.json").read_text()) for s in SCRIPTS}
    for stage, r in rec.items():  # the precision decision: of the stages that set up torch's runtime
        assert r["stage"] == stage and set(r["run"]) - {"precision"} == RUN_CARD_KEYS - {"precision"}
        assert r["run"]["wall_s"] > 0
    for stage in ("ood-sampling", "pretrain", "distill", "linear-probe@pretrain", "cluster@distill"):
        assert rec[stage]["run"]["precision"]["precision"] == "fp32"  # the tiny params: runtime.amp false
    metrics = {s: json.loads(proj.path(f"metrics/{f}.json").read_text())
               for s, f in (("ood-sampling", "ood_details"), ("pretrain", "pretrain"), ("distill", "distill"))}
    warm = rec["ood-sampling"]["timings"]["warmup"]
    assert len(warm["per_epoch"]) == metrics["ood-sampling"]["warmup"]["epochs"] == 1
    assert set(rec["ood-sampling"]["timings"]["seconds"]) == {"embedding", "clustering", "tailness", "budget",
                                                              "sampling", "total"}
    pre = rec["pretrain"]["timings"]
    assert [e["epoch"] for e in pre["per_epoch"]] == [2, 3] and metrics["pretrain"]["epochs"] == 2
    assert pre["images_per_s"] == pytest.approx(np.mean([e["images_per_s"] for e in pre["per_epoch"]]))
    assert pre["seconds_per_epoch"] == pytest.approx(pre["seconds"] / 2)
    history = pre["ood_update_history"]
    assert [u["epoch"] for u in history] == [u["epoch"] for u in metrics["pretrain"]["ood_update_history"]] == [2]
    for step in ("embedding", "clustering", "tailness", "budget", "sampling", "total"):
        assert pre[f"ood_update_{step}_s"] == pytest.approx(np.mean([u[step] for u in history]))
    dis = rec["distill"]["timings"]
    assert len(dis["per_epoch"]) == metrics["distill"]["epochs"] == 1 and dis["setup_seconds"] >= 0
    assert rec["linear-probe@pretrain"]["timings"] == {}
    # the model files' history: loss, lr, steps, loss terms per epoch, no timings
    for rel in ("data/models/pretrain.pt", "data/models/distill.pt", "data/ood/warmup.pt"):
        hist = load_checkpoint(proj.path(rel))["history"]
        assert hist and all(set(h) == {"epoch", "loss", "lr", "steps", "parts"} for h in hist), rel
    assert not list(proj.path("dvclive").rglob("images_per_s.tsv"))


def test_run_stage_writes_the_record_and_removes_a_stale_one_on_failure(tmp_path, monkeypatch):
    from ltcl.errors import UserError
    from ltcl.stage import run_stage

    monkeypatch.chdir(tmp_path)
    run_stage("cluster@ext-x", lambda: {"seconds": 1.5}, outputs=[])
    rec = json.loads((tmp_path / "runs/cluster-ext-x.json").read_text())
    assert rec["stage"] == "cluster@ext-x" and rec["timings"] == {"seconds": 1.5} and rec["run"]["wall_s"] >= 0

    def fail():
        raise UserError("bad")

    with pytest.raises(SystemExit):
        run_stage("cluster@ext-x", fail, outputs=[])
    assert not (tmp_path / "runs/cluster-ext-x.json").exists()  # no record of a run that did not finish
    run_stage("cluster@ext-x", lambda: None, outputs=[], record=False)  # a torchrun rank other than 0
    assert list((tmp_path / "runs").iterdir()) == []

"""Probe accuracy of the embedded default in each precision, over seeds: does `runtime.amp: auto`
(bf16 where the CPU computes it natively) train encoders as good as fp32?

    PYTHONPATH=src python scripts/amp_seeds.py [--seeds 0 1 2] [--amp false auto] [--out amp_seeds.json]

Each (amp, seed) runs the whole default pipeline (params.yaml; seed s sets data.split_seed, which
permutes which class gets which count, and the pretrain / ood / distill / probe seeds) as the
stages' scripts in a temporary folder, and records the run card's precision decision, the wall
time of pre-training and the linear-probe accuracies (All, Many, Medium, Few; full and few-shot) of
f and g. The summary gives mean +- std (ddof 1) per amp setting and the difference of the means
beside the combined spread sqrt(s1^2 + s2^2): a difference inside it is not one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = [("make_lt_dataset.py",), ("ood_pool.py",), ("ood_sampling.py",), ("pretrain.py",), ("distill.py",),
          ("linear_probe.py", "pretrain"), ("linear_probe.py", "distill")]
SEED_KEYS = ("data.split_seed", "pretrain.seed", "ood.seed", "distill.seed", "probe.seed")


def run_one(amp, seed: int, work: Path) -> dict:
    proj = work / f"amp-{amp}-s{seed}"
    shutil.rmtree(proj, ignore_errors=True)
    proj.mkdir(parents=True)
    shutil.copytree(REPO / "stages", proj / "stages")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runtime"]["amp"] = amp
    for key in SEED_KEYS:
        sec, k = key.split(".")
        params[sec][k] = seed
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), DVC_NO_ANALYTICS="1")
    t0 = time.perf_counter()
    for stage in STAGES:
        subprocess.run([sys.executable, f"stages/{stage[0]}", *stage[1:]], cwd=proj, env=env, check=True,
                       capture_output=True)
    out = {"amp": amp, "seed": seed, "wall_s": round(time.perf_counter() - t0, 1)}
    run = json.loads((proj / "runs/pretrain.json").read_text())["run"]  # pretrain's run record (ltcl.runrecord)
    out["precision"] = run.get("precision")
    out["pretrain_s"] = run["wall_s"]
    for enc in ("pretrain", "distill"):
        m = json.loads((proj / f"metrics/probe/{enc}.json").read_text())
        for proto in ("full", "few_shot"):
            for g in ("all", "many", "medium", "few"):
                out[f"{enc}.{proto}.{g}"] = m[proto][g]
    shutil.rmtree(proj, ignore_errors=True)
    return out


def summary(runs: list[dict], amps: list) -> dict:
    keys = [k for k in runs[0] if k.count(".") == 2] + ["pretrain_s"]
    out = {}
    for k in keys:
        stats = {}
        for amp in amps:
            v = np.array([r[k] for r in runs if r["amp"] == amp], dtype=float)
            stats[str(amp)] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
        if len(amps) == 2:
            a, b = (stats[str(x)] for x in amps)
            diff, spread = b["mean"] - a["mean"], float(np.hypot(a["std"], b["std"]))
            stats["difference"] = {"value": diff, "spread": spread, "within_spread": abs(diff) <= spread}
        out[k] = stats
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--amp", nargs="+", default=["false", "auto"])
    ap.add_argument("--out", default="amp_seeds.json")
    args = ap.parse_args(argv)
    amps = [yaml.safe_load(a) for a in args.amp]
    work = Path(tempfile.mkdtemp(prefix="ltcl-amp-"))
    runs = []
    try:
        for seed in args.seeds:
            for amp in amps:  # interleaved, so machine drift touches both settings alike
                runs.append(run_one(amp, seed, work))
                print(json.dumps(runs[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"runs": runs, "summary": summary(runs, amps)}
    Path(args.out).write_text(json.dumps(result, indent=2))
    for k in ("pretrain.full.all", "distill.full.all", "distill.few_shot.all", "pretrain_s"):
        print(k, json.dumps(result["summary"][k]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fashion-MNIST-LT study of paper 003's main comparison on CPU (issue 3).

Arms, each over the same splits per seed (the seed also permutes which class gets which count):
SimCLR, SimCLR + COLT, SimCLR + KDUP (f = pre-trained with OOD, g = distilled), and SimCLR given as
many optimisation steps as the KDUP pre-training (warm-up + pretrain) -- the compute-matched baseline
(Table 2); ``psd_random`` / ``psd_colt`` / ``kdup`` -- the KDUP framework with random, COLT and
KDUP sampling (Table 3); the other papers' methods (``sdclr``, ``ts``, ``tase``, ``gloco``, ...).

It runs the real stage scripts of a checkout (default: this one) in a scratch copy with the params
below merged into params.yaml, so every number comes from the same code path as ``dvc repro``.
Results: ``<out>/s<seed>_<arm>/`` (the metrics/ tree, params.yaml, wall.json, runs/ with the run
records) and a summary table.

    python scripts/fmnist_lt_study.py --seeds 0 1 2 --out /tmp/fm_results
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# The CPU budget: one core, ~20 min per seed for all arms. ratio 100 as in the papers; n_max 1000
# keeps 2,480 training images (1000 ... 10 per class); images resized to 16x16 (3x less compute
# than 28x28). OOD embedding in the projection space: on a 28x28 warm-up of seed 0 it gave the Few
# classes' images 0.88x the mean OOD budget per image vs 0.37x in the backbone space (Many: 0.56x
# both), although Spearman(tailness, rarity) was negative in both (-0.12 / -0.25).
COMMON = {
    "data": {"source": "fashion-mnist", "imbalance_ratio": 100.0, "val_per_class": 100,
             "max_per_class": 1000, "few_shot_fraction": 0.01, "max_test_per_class": None,
             "image_size": 16},
    "model": {"backbone": "resnet8", "width": 1.0},
    "runtime": {"amp": False, "threads": 1},
    "augment": {"crop_scale": [0.2, 1.0], "flip": True},
    "ood": {"pool_size": 10000, "warmup_epochs": 10, "interval": 5, "budget": 1500, "knn_k": 40,
            "clusters": 10, "embedding": "projection"},
    "pretrain": {"epochs": 30, "batch_size": 256, "lr": 0.5, "warmup_epochs": 2, "psd": {"k_pos": 1}},
    "distill": {"epochs": 10, "batch_size": 256, "warmup_epochs": 1, "lr": 0.05},
    "probe": {"epochs": 30, "milestones": [10, 20], "few_shot_epochs": 100, "few_shot_milestones": [40, 60]},
    "cluster": {"tsne_samples": 1000},
}
PRE = [("ood_sampling.py",), ("pretrain.py",)]
EVAL_F = [("linear_probe.py", "pretrain"), ("cluster.py", "pretrain")]
SDCLR_HEAD = {"proj_layers": 3}  # model.proj_layers of SDCLR's rows (ltcl.released_code.authors_proj_layers)
EVAL_G = [("distill.py",), ("linear_probe.py", "distill"), ("cluster.py", "distill")]
ARMS = {
    "simclr": ({"ood": {"strategy": "none"}, "pretrain": {"method": "simclr"}}, PRE + EVAL_F),
    "colt": ({"ood": {"strategy": "colt"}, "pretrain": {"method": "simclr"}}, PRE + EVAL_F),
    "kdup": ({"ood": {"strategy": "kdup"}, "pretrain": {"method": "psd"}}, PRE + EVAL_F + EVAL_G),
    # paper 003 Table 3: the KDUP framework (PSD + distillation) with another OOD sampling strategy
    "psd_random": ({"ood": {"strategy": "random"}, "pretrain": {"method": "psd"}}, PRE + EVAL_F + EVAL_G),
    "psd_colt": ({"ood": {"strategy": "colt"}, "pretrain": {"method": "psd"}}, PRE + EVAL_F + EVAL_G),
    # the other papers' methods (issue 4), same epochs; schedules scaled to 30 epochs
    # SDCLR's rows with its dual-BN 3-Linear head (models/resnet_prune_multibn.py, --prune_dual_bn)
    "sdclr": ({"ood": {"strategy": "none"}, "pretrain": {"method": "sdclr"}, "model": SDCLR_HEAD}, PRE + EVAL_F),
    "sdclr_colt": ({"ood": {"strategy": "colt"}, "pretrain": {"method": "sdclr"}, "model": SDCLR_HEAD},
                   PRE + EVAL_F),
    "sdclr_kdup": ({"ood": {"strategy": "kdup"}, "pretrain": {"method": "psd", "pruned_branch": True},
                    "model": SDCLR_HEAD}, PRE + EVAL_F + EVAL_G),
    # SDCLR's balanced reference: the same total size, class-balanced; its per-class CSVs record the counts the
    # long-tailed split gives each class, so its rarity penalty is the control (issue 17). It rebuilds
    # data/lt, so main() runs it after every other arm of the seed.
    "simclr_balanced": ({"data": {"subset": "balanced-subset"}, "ood": {"strategy": "none"},
                         "pretrain": {"method": "simclr"}},
                        [("make_lt_dataset.py",)] + PRE + EVAL_F),
    # TS's protocol: T = 0.2 x pretrain.epochs (t_max 200 of 2,000 epochs in its runs)
    "ts": ({"ood": {"strategy": "none"}, "pretrain": {"method": "ts", "ts": {"period_fraction": 0.2}}}, PRE + EVAL_F),
    "tase": ({"ood": {"strategy": "none"}, "pretrain": {"method": "tase", "tase": {"warmup": 5, "refresh": 5,
                                                                                "full": 15}}}, PRE + EVAL_F),
    # BCL-I (issue 25): the released rand_k 1, strength 30, beta 0.97
    "bcl": ({"ood": {"strategy": "none"}, "pretrain": {"method": "bcl"}}, PRE + EVAL_F),
    # SimCLR + GH (issue 25) as its released runs, scaled to 30 epochs: L_GH after half the epochs with the
    # two-stage cosine (ltcl.released_code.GH_PROTOCOL), K = 10 targets (its --target_dim is the class
    # count: 100 on CIFAR-100), the ramp (10 of 1,000) and the prior's period (20) shortened to 3 and 5
    "gh": ({"ood": {"strategy": "none"},
            "pretrain": {"method": "simclr", "lr_schedule": "two-stage", "lr_split": 0.5, "lr_stage1_min": 0.6,
                         "lr_stage2_max": 0.6, "gh": {"enabled": True, "warmup_fraction": 0.5, "target_dim": 10,
                                                      "ramp_epochs": 3, "prior_every": 5}}}, PRE + EVAL_F),
    # SimCLR + MAK (issue 25), MAK's protocol: its sampling model trained as long as the final one (the
    # warm-up, 30 epochs), then SimCLR from scratch on ID + the 1,500 selected (released ood.mak values)
    "mak": ({"ood": {"strategy": "mak", "warmup_epochs": 30}, "pretrain": {"method": "simclr"}}, PRE + EVAL_F),
    "gloco": ({"ood": {"strategy": "none"}, "pretrain": {"method": "gloco"}}, PRE + EVAL_F),
    "gloco-proco": ({"ood": {"strategy": "none"}, "pretrain": {"method": "gloco-proco"}}, PRE + EVAL_F),
    "gml": ({"ood": {"strategy": "none"}, "pretrain": {"method": "gml"}, "distill": {"method": "gml", "epochs": 30, "gml": {"k": 1024}}},
            PRE + EVAL_F + EVAL_G),
}


def merge(a: dict, b: dict) -> dict:
    for k, v in b.items():
        if isinstance(v, dict):
            merge(a.setdefault(k, {}), v)
        else:
            a[k] = v
    return a


class Runner:
    def __init__(self, work: Path, out: Path, overrides: dict):
        self.work, self.out = work, out
        # the checkout's params as copied (work/params.yaml is rewritten by every run: reading it
        # would carry the previous run's keys - e.g. pretrain.pruned_branch - into the next invocation)
        self.base = yaml.safe_load((work / "params.base.yaml").read_text())
        self.overrides = overrides
        self.env = dict(os.environ, PYTHONPATH=str(work / "src"), DVC_NO_ANALYTICS="1")

    def run(self, seed: int, arm: str, updates: dict, stages: list) -> Path | None:
        seeded = {"data": {"split_seed": seed}, "pretrain": {"seed": seed}, "distill": {"seed": seed},
                  "ood": {"seed": seed}, "probe": {"seed": seed}}
        p = merge(merge(merge(merge(json.loads(json.dumps(self.base)), COMMON), self.overrides), seeded), updates)
        (self.work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        if arm != "data":  # no metrics of an earlier arm may be copied with this one's
            for sub in ("probe", "cluster"):
                shutil.rmtree(self.work / "metrics" / sub, ignore_errors=True)
            for f in ("distill.json", "pretrain.json", "ood.json", "ood_details.json"):
                (self.work / "metrics" / f).unlink(missing_ok=True)
            for f in (self.work / "runs").glob("*.json"):  # nor run records (the data stages' are shared)
                if f.stem not in ("make-lt-dataset", "ood-pool"):
                    f.unlink()
        t0 = time.time()
        for st in stages:
            r = subprocess.run([sys.executable, f"stages/{st[0]}", *st[1:]], cwd=self.work, env=self.env,
                               capture_output=True, text=True)
            if r.returncode:
                print(f"s{seed} {arm} {st} FAILED\n{r.stderr[-3000:]}", flush=True)
                return None
        d = self.out / f"s{seed}_{arm}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(self.work / "metrics", d)
        if (self.work / "runs").is_dir():  # the run records (timings: ltcl compare's training minutes)
            shutil.copytree(self.work / "runs", d / "runs")
        shutil.copy(self.work / "params.yaml", d)
        (d / "wall.json").write_text(json.dumps({"wall_s": time.time() - t0}))
        print(f"s{seed} {arm} done in {time.time() - t0:.0f} s", flush=True)
        return d


def copy_checkout(repo: Path, work: Path) -> None:
    """The code and params of a checkout, without its data, venv or git state."""
    work.mkdir(parents=True)
    for d in ("src", "stages"):
        shutil.copytree(repo / d, work / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "params.yaml", work / "params.yaml")
    shutil.copy(repo / "params.yaml", work / "params.base.yaml")


def summarise(out: Path) -> str:
    """Mean +- std over seeds of the full-protocol groups, per arm/encoder."""
    import numpy as np
    rows: dict[str, list[dict]] = {}
    for d in sorted(out.glob("s*_*")):
        if d.name.endswith("_data"):
            continue
        arm = d.name.split("_", 1)[1]
        distills = any("distill.py" in st for st in ARMS.get(arm, ((), ()))[1])
        for enc in ("pretrain", "distill"):
            if enc == "distill" and not distills:
                continue  # an arm without distillation (files of an earlier arm may linger in work/metrics)
            f = d / "probe" / f"{enc}.json"
            if f.exists():
                m = json.loads(f.read_text())
                sub = {"gml": (" teacher", " student")}.get(arm, (" (f)", " (g)") if distills else ("", ""))
                name = arm + sub[enc == "distill"]
                rows.setdefault(name, []).append(m)
                stage = d / f"{enc}.json"
                clf = json.loads(stage.read_text()).get("classifier") if stage.exists() else None
                if clf:  # GML's own classifier, on the same test set (no few-shot protocol)
                    rows.setdefault(name + " classifier", []).append({"full": clf, "few_shot": {"all": float("nan")}})
    lines = ["| arm | n | Many | Med | Few | STD | All | few-shot All |", "|---|---|---|---|---|---|---|---|"]
    for name, ms in rows.items():
        def ms_(key, proto="full"):
            v = np.array([m[proto][key] for m in ms], dtype=float)
            return f"{v.mean():.2f} +- {v.std():.2f}"
        lines.append(f"| {name} | {len(ms)} | " + " | ".join(ms_(k) for k in ("many", "medium", "few", "std", "all"))
                     + f" | {ms_('all', 'few_shot')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["kdup", "simclr", "colt", "simclr_matched"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/fm_results"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/fm_work"))
    ap.add_argument("--set", default="{}", help="JSON merged into every run's params (after the study's)")
    ap.add_argument("--summary-only", action="store_true")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.summary_only:
        print(summarise(a.out))
        return 0
    if not a.work.exists():
        copy_checkout(REPO, a.work)
    r = Runner(a.work, a.out, json.loads(a.set))
    for seed in a.seeds:
        if r.run(seed, "data", {}, [("make_lt_dataset.py",), ("ood_pool.py",)]) is None:
            return 1
        for arm in sorted(a.arms, key=lambda arm: arm == "simclr_balanced"):  # it rebuilds data/lt: last
            if arm == "simclr_matched":
                kd = a.out / f"s{seed}_kdup"
                if not (kd / "pretrain.json").exists():
                    print(f"s{seed} simclr_matched skipped: no kdup run", flush=True)
                    continue
                steps = json.loads((kd / "pretrain.json").read_text())["steps"] \
                    + json.loads((kd / "ood_details.json").read_text())["warmup"]["steps"]  # ltcl.headline
                n_id = json.loads((a.out / f"s{seed}_data" / "dataset.json").read_text())["size_lt"]
                per_epoch = n_id // COMMON["pretrain"]["batch_size"]
                ep = math.ceil(steps / per_epoch)
                print(f"s{seed} compute-matched SimCLR: {ep} epochs for {steps} KDUP steps", flush=True)
                r.run(seed, arm, {"ood": {"strategy": "none"}, "pretrain": {"method": "simclr", "epochs": ep}},
                      PRE + EVAL_F)
            else:
                r.run(seed, arm, *ARMS[arm])
    print(summarise(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark (issue 21, "Scale"): an unlabeled folder of 100,000 synthetic 64 x 64 image files.

1. Writes N PNG files (default 100,000; smooth random colour fields, 64 x 64) under a nested
   tree of date / camera folders, no class structure.
2. Runs make-lt-dataset (``data.source: images``, ``image_size: 64``) in a fresh process: wall
   time and peak resident memory (ru_maxrss of that process).  Every file is decoded once and
   streamed into ``data/lt/lt_x.npy`` in chunks of 256.
3. Runs 200 SimCLR pre-training steps (ResNet-8, batch 256, the stage's own method, augmentation
   and optimiser step; ``ltcl.train.loop``'s batches) reading from that split, in a fresh process:
   wall time, steps per second, peak memory.  The 1.2 GB split is read by rows
   (``ltcl.data.rows.DiskRows``), never loaded whole.
4. Steps 1-3 also run on ``--reference-images`` (default 10,000): the peak a run has whatever its
   data size. Peak memory must not grow with the number of images: the note compares the two.

    PYTHONPATH=src python benchmarks/bench_collection.py [--images 100000] [--work /tmp/ltcl_collection]

Prints one JSON line with every figure; the work folder is deleted unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_listdata import REPO, measured  # noqa: E402  (the fresh-process wall / peak probe)

STEPS = 200
TRAIN = f"""
import time, torch
from ltcl.params import load_params
from ltcl.methods.base import TrainSet
from ltcl.methods.contrastive import SimCLR
from ltcl.runtime import setup_runtime
from ltcl.train.loop import build_optimizer, epoch_batches, lr_at, optimizer_step
from ltcl.train.session import build_augment, load_train_split, new_encoder
p = load_params()
cfg = p.pretrain
x, y, manifest = load_train_split("data/lt")
runtime = setup_runtime(p.runtime, cfg.seed)
model, spec = new_encoder(p.model, x, runtime)
augment = build_augment(p.augment, spec, runtime.device)
data = TrainSet.from_numpy(x, y, 0, runtime.device)
method = SimCLR(model, data, cfg, runtime, augment, refresh_every=1)
opt = build_optimizer(method.parameters(), cfg)
batches, epoch = [], 0
while len(batches) < {STEPS}:  # the loop's shuffled batches, epoch after epoch
    batches += epoch_batches(len(data), cfg.batch_size, torch.Generator().manual_seed(epoch))
    epoch += 1
batches = batches[:{STEPS}]
method.model.train()
t0 = time.perf_counter()
for step, idx in enumerate(batches):
    for g in opt.param_groups:
        g["lr"] = lr_at(step / len(batches), cfg)
    optimizer_step(method.step(idx).loss, opt)
import json
json.dump({{"steps_s": time.perf_counter() - t0, "held_as": type(data.x).__name__}}, open("steps.json", "w"))
"""


def _write_images(job: tuple[str, list[tuple[str, int]]]) -> int:
    from PIL import Image

    root, items = job
    for rel, seed in items:
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(small).resize((64, 64), Image.BICUBIC).save(path)
    return len(items)


def write_collection(root: Path, n: int) -> None:
    cams = ("pixel7", "canon", "scanner")
    items = [(f"2024-{1 + i // 10000 % 12:02d}-{1 + i // 400 % 28:02d}/{cams[i % 3]}/IMG_{i:06d}.png", i)
             for i in range(n)]
    jobs = [(str(root), items[s: s + 1000]) for s in range(0, n, 1000)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        assert sum(ex.map(_write_images, jobs)) == n


def run_size(work: Path, n: int) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    proj = work / "proj"
    proj.mkdir(parents=True)
    result: dict = {"images": n}
    t0 = time.perf_counter()
    write_collection(work / "images", n)
    result["write_pngs_s"] = round(time.perf_counter() - t0, 1)
    shutil.copytree(REPO / "stages", proj / "stages")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] = {"source": "images", "root": str(work / "images"), "image_size": 64}
    params["ood"]["strategy"] = "none"
    params["pretrain"].update(method="simclr", batch_size=256, warmup_epochs=0)
    params["model"].update(backbone="resnet8")
    params["runtime"]["threads"] = os.cpu_count() or 1
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    wall, peak = measured([sys.executable, "stages/make_lt_dataset.py"], proj)
    manifest = json.loads((proj / "data/lt/manifest.json").read_text())
    assert manifest["sizes"]["train"] == n, manifest["sizes"]
    result.update(make_lt_dataset_s=round(wall, 1), make_lt_dataset_peak_mib=round(peak),
                  images_per_s=round(n / wall), split_bytes=(proj / "data/lt/lt_x.npy").stat().st_size)
    (proj / "train.py").write_text(TRAIN)
    wall, peak = measured([sys.executable, "train.py"], proj)
    steps = json.loads((proj / "steps.json").read_text())
    result.update(pretrain_process_s=round(wall, 1), pretrain_200_steps_s=round(steps["steps_s"], 1),
                  steps_per_s=round(STEPS / steps["steps_s"], 2), pretrain_peak_mib=round(peak),
                  data_held_as=steps["held_as"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--reference-images", type=int, default=10_000)
    ap.add_argument("--work", default="/tmp/ltcl_collection")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    ref = run_size(Path(args.work) / "reference", args.reference_images)
    big = run_size(Path(args.work) / "full", args.images)
    out = {"reference": ref, "full": big,
           "make_lt_dataset_growth_mib": big["make_lt_dataset_peak_mib"] - ref["make_lt_dataset_peak_mib"],
           "pretrain_growth_mib": big["pretrain_peak_mib"] - ref["pretrain_peak_mib"]}
    print(json.dumps(out))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark 6 (issue 14, "Scale"): a list-file dataset of 20,000 synthetic 224 x 224 images.

1. Writes N JPEG files (default 20,000; 100 classes; 256 x 320 smooth random colour fields,
   quality 85) laid out as ImageNet-style lists: a long-tailed train list (Pareto-like counts),
   and val / test lists of 5 images per class.
2. Runs the make-lt-dataset stage (``data.source: list``, ``image_size: 224``) in a fresh
   process and reports its wall time and peak resident memory (ru_maxrss of that process).
   The stage decodes every file once and streams the images into ``data/lt/*_x.npy`` in chunks
   of 256: the target is a peak under 2 GB for ~3 GB of pixels.
3. Runs one SimCLR pre-training epoch over the stored train split (``ood.strategy: none``,
   ResNet-10 at width 0.25 with the ImageNet stem, batch 64, so that the epoch fits this CPU)
   in a fresh process: the split is read by rows (``ltcl.data.rows.DiskRows``), never loaded
   whole; the target is a peak under 2 GB plus the model.
4. Steps 1-3 also run on ``--reference-images`` (2,000): the peak a run has whatever its data
   size (interpreter, torch, model, one batch's activations and augmentation). The growth from
   the reference to the full run is what the data costs in memory.

    PYTHONPATH=src python benchmarks/bench_listdata.py [--images 20000] [--work /tmp/ltcl_listdata]

Prints one JSON line with every figure; the work folder is deleted unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CLASSES = 100


def _write_images(job: tuple[str, list[tuple[str, int]]]) -> int:
    from PIL import Image

    root, items = job
    for rel, seed in items:
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((320, 256), Image.BICUBIC)
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path, quality=85)
    return len(items)


def write_dataset(root: Path, n: int) -> dict[str, Path]:
    per_eval = 5
    n_train = n - 2 * per_eval * CLASSES
    ranks = np.arange(CLASSES)
    weights = 1.0 / (1 + ranks) ** 1.1  # Pareto-like: head ~1/5 of the images, tail a handful
    counts = np.maximum(5, np.floor(weights / weights.sum() * n_train)).astype(int)
    counts[0] += n_train - counts.sum()
    lists: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for c in range(CLASSES):
        lists["train"] += [(f"train/c{c:03d}/{i}.jpg", c) for i in range(counts[c])]
        lists["val"] += [(f"val/c{c:03d}/{i}.jpg", c) for i in range(per_eval)]
        lists["test"] += [(f"test/c{c:03d}/{i}.jpg", c) for i in range(per_eval)]
    items = [(rel, k) for k, (rel, _) in enumerate(x for v in lists.values() for x in v)]
    jobs = [(str(root), items[s: s + 500]) for s in range(0, len(items), 500)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        assert sum(ex.map(_write_images, jobs)) == n
    files = {}
    for role, lines in lists.items():
        files[role] = root / f"{role}.txt"
        files[role].write_text("".join(f"{rel} {lab}\n" for rel, lab in lines))
    return files


def measured(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of ``cmd`` run in a fresh process."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:]); w = time.perf_counter() - t; "
             "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(r.returncode)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    wall, peak = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(peak)


def run_size(work: Path, n: int, epoch: bool) -> dict:
    """Write ``n`` images, build the dataset and (``epoch``) pre-train one epoch; the figures."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "proj").mkdir(parents=True)
    result: dict = {"images": n}
    t0 = time.perf_counter()
    files = write_dataset(work / "images", n)
    result["write_jpegs_s"] = round(time.perf_counter() - t0, 1)
    result["jpeg_bytes"] = sum(p.stat().st_size for p in (work / "images").rglob("*.jpg"))

    proj = work / "proj"
    shutil.copytree(REPO / "stages", proj / "stages")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="list", split="community", root=str(work / "images"), image_size=224,
                          lists={k: str(v) for k, v in files.items()}, group_rule="thresholds",
                          max_test_per_class=None)
    params["ood"]["strategy"] = "none"
    params["pretrain"].update(method="simclr", epochs=1, warmup_epochs=0, batch_size=64, checkpoint_every=1)
    params["model"].update(backbone="resnet10", width=0.25, stem="imagenet")
    params["runtime"]["threads"] = os.cpu_count() or 1
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    wall, peak = measured([sys.executable, "stages/make_lt_dataset.py"], proj)
    manifest = json.loads((proj / "data/lt/manifest.json").read_text())
    result.update(make_lt_dataset_s=round(wall, 1), make_lt_dataset_peak_mib=round(peak),
                  sizes=manifest["sizes"],
                  stored_bytes=sum((proj / "data/lt" / f).stat().st_size for f in manifest["files"]),
                  train_pixel_bytes=manifest["sizes"]["train"] * 224 * 224 * 3)
    if epoch:
        wall, peak = measured([sys.executable, "stages/pretrain.py"], proj)
        result.update(epoch_s=round(wall, 1), epoch_peak_mib=round(peak))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--reference-images", type=int, default=2_000,
                    help="the same stages on this many images: the peak a run has whatever the data size")
    ap.add_argument("--work", default="/tmp/ltcl_listdata")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-epoch", action="store_true")
    args = ap.parse_args()
    ref = run_size(Path(args.work) / "reference", args.reference_images, not args.no_epoch)
    big = run_size(Path(args.work) / "full", args.images, not args.no_epoch)
    out = {"reference": ref, "full": big,
           "make_lt_dataset_growth_mib": big["make_lt_dataset_peak_mib"] - ref["make_lt_dataset_peak_mib"]}
    out["pass_make_lt_dataset_under_2gb"] = big["make_lt_dataset_peak_mib"] < 2048
    if not args.no_epoch:
        # the model's own memory (weights, activations of a batch, augmentation) is the reference run's
        # peak; what the data adds must stay far below the 3 GB of pixels
        out["epoch_growth_mib"] = big["epoch_peak_mib"] - ref["epoch_peak_mib"]
        out["pass_epoch_under_2gb_plus_model"] = out["epoch_growth_mib"] < 2048
    print(json.dumps(out))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()

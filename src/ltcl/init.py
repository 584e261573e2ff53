"""``ltcl init``: the params of a first KDUP run on a user's own folders, chosen from the folders.

    ltcl init --images DIR [--labeled DIR] [--ood DIR]     # then: make repro (or dvc repro)

Reads the folders (every file's name; the image headers of at most :data:`SIZE_SAMPLE` files, for
their sizes) and writes ``params.yaml``: the project's current params with ``data`` set to the
unlabeled collection (``data.source: images``) and its labeled set, and the image size, backbone,
epochs, batch size, OOD pool and budgets fitted to them.  Every choice is printed with its reason
and written as a comment at the top of the file.  The rules, all in :func:`choose`:

* image size: the largest of :data:`SIZES` not above the median short side of the images (no
  upsampling of the typical image), at most 64 px without a GPU (CPU training time grows with
  the pixels; a GPU allows up to 224);
* backbone: ResNet-18 on a GPU, else ResNet-8 (the CPU default of the embedded example);
* batch size: the largest power of two <= N / 8 in [32, 256] (a few batches per epoch even on a
  small collection; SimCLR's negatives grow with it);
* epochs: about :data:`TARGET_STEPS` optimiser steps (CPU 1,500, GPU 20,000; the warm-up's epochs
  on the N ID images, the others on N + N_b), between 20 and 2,000 epochs; the OOD warm-up 1/5 of
  them, an OOD update every 1/6, distillation half;
* OOD: budget N_b = 0.9 N (paper 003: 10,000 for CIFAR-10-LT's 11,203 images); the pool 10 N_b
  crops (at least 1,000, at most 100,000) of the ``--ood`` folder's photos, or of the photos
  bundled with scikit-image / scikit-learn; clusters N_c = the labeled set's classes, else 10.

The device is detected (``torch.cuda.is_available()``), never assumed.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import yaml

from ltcl.compare.experiments import flatten
from ltcl.data.sources.folder import list_image_files
from ltcl.errors import UserError
from ltcl.params import PARAMS_FILE, read_yaml, validate
from ltcl.presets import merged

SIZES = (16, 24, 28, 32, 48, 64, 96, 128, 160, 224)
SIZE_SAMPLE = 2000  # image headers read for the size statistics (evenly spaced over the sorted files)
TARGET_STEPS = {"cpu": 1500, "gpu": 20000}
CPU_MAX_SIZE = 64


def image_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    """(width, height) of up to :data:`SIZE_SAMPLE` evenly spaced files (headers only; unreadable ones skipped)."""
    from PIL import Image

    step = max(1, len(paths) // SIZE_SAMPLE)
    sizes = []
    for p in paths[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(p) as im:
                sizes.append(im.size)
        except (OSError, ValueError, SyntaxError):
            continue
    return sizes


def labeled_layout(root: Path) -> tuple[str, list[str]]:
    """(layout, class names) of a labeled folder: ``train-test`` when it holds train/ and test/, else ``classes``."""
    if not root.is_dir():
        raise UserError(f"--labeled {root} is not a folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        layout, classes_dir = "train-test", root / "train"
    else:
        layout, classes_dir = "classes", root
    names = sorted(e.name for e in os.scandir(classes_dir) if e.is_dir())
    if len(names) < 2:
        raise UserError(f"--labeled {root}: expected class sub-folders (at least 2)"
                        + (" under train/" if layout == "train-test" else "") + f", found {names}")
    return layout, names


def choose(n_images: int, sizes: list[tuple[int, int]], gpu: bool, n_classes: int | None,
           ood_files: int | None) -> tuple[dict, list[str]]:
    """(params overrides, reasons): the rules of the module docstring."""
    if not sizes:
        raise UserError("no readable image among the files sampled for their sizes")
    short = statistics.median(min(w, h) for w, h in sizes)
    cap = SIZES[-1] if gpu else CPU_MAX_SIZE
    size = max([s for s in SIZES if s <= min(short, cap)] or [SIZES[0]])
    batch = int(min(256, max(32, 2 ** int(math.log2(max(n_images // 8, 1))))))
    batch = min(batch, n_images)
    budget = max(1, round(0.9 * n_images))
    pool = int(min(100_000, max(1_000, 10 * budget)))
    budget = min(budget, pool // 2)
    # steps: the warm-up's first fifth of the epochs on the N ID images, the rest on N + N_b
    steps_id, steps_all = max(1, n_images // batch), max(1, (n_images + budget) // batch)
    target = TARGET_STEPS["gpu" if gpu else "cpu"]
    epochs = int(min(2000, max(20, round(target / (0.2 * steps_id + 0.8 * steps_all)))))
    clusters = n_classes or 10
    warmup = max(1, epochs // 5)
    interval = max(1, epochs // 6)
    over = {
        "data": {"image_size": size},
        "model": {"backbone": "resnet18" if gpu else "resnet8"},
        "pretrain": {"method": "psd", "epochs": epochs, "batch_size": batch, "warmup_epochs": max(1, epochs // 20)},
        "distill": {"enabled": True, "method": "kdup", "epochs": max(1, epochs // 2), "batch_size": batch,
                    "warmup_epochs": max(1, epochs // 40), "kdup": {"clusters": clusters}},
        "ood": {"strategy": "kdup", "pool_size": pool, "budget": budget, "clusters": clusters,
                "warmup_epochs": warmup, "interval": interval},
    }
    dims = sorted({f"{w}x{h}" for w, h in sizes})
    why = [
        f"data.image_size {size}: median short side of {len(sizes)} sampled images is {short:g} px "
        f"(sizes seen: {', '.join(dims[:6])}{' ...' if len(dims) > 6 else ''}); at most {cap} px "
        f"{'on a GPU' if gpu else 'without a GPU'}",
        f"model.backbone {over['model']['backbone']}: {'a GPU is available' if gpu else 'no GPU found (CPU)'}",
        f"pretrain.batch_size {batch}: the largest power of two <= N/8 in [32, 256] for N = {n_images}",
        f"pretrain.epochs {epochs}: about {target} optimiser steps ({steps_id} per warm-up epoch on the ID images, "
        f"{steps_all} per epoch with the OOD images) "
        f"(distill.epochs {over['distill']['epochs']}, ood.warmup_epochs {warmup}, ood.interval {interval})",
        f"ood.budget {budget}: 0.9 x the {n_images} images (paper 003: 10,000 OOD images for ~11K ID images); "
        f"ood.pool_size {pool}: 10 x the budget, " + (
            f"crops of the {ood_files} photos of --ood" if ood_files else "crops of the photos bundled with "
            "scikit-image / scikit-learn (no --ood folder given)"),
        f"ood.clusters / distill.kdup.clusters {clusters}: " + (
            f"the labeled set's {n_classes} classes" if n_classes else "10 (no labeled set to count classes)"),
    ]
    return over, why


def init_params(images: str, labeled: str | None = None, ood: str | None = None,
                params_file: str | Path = PARAMS_FILE, gpu: bool | None = None) -> tuple[dict, list[str]]:
    """(the new params, the reasons), validated; ``gpu`` None = detect."""
    root = Path(images).expanduser()
    if not root.is_dir():
        raise UserError(f"--images {root} is not a folder")
    paths = list_image_files(root)
    if not paths:
        raise UserError(f"--images {root}: no image files at any depth")
    if gpu is None:
        import torch

        gpu = bool(torch.cuda.is_available())
    n_classes = None
    data: dict = {"source": "images", "root": str(images), "images": None, "on_bad_image": "error",
                  "split": "generated", "subset": "longtail"}
    notes = []
    if labeled is not None:
        layout, names = labeled_layout(Path(labeled).expanduser())
        n_classes = len(names)
        data["labeled"] = {"root": str(labeled), "layout": layout, "groups": "none"}
        notes.append(f"data.labeled: {labeled} ({layout}, {n_classes} classes: {', '.join(names[:8])}"
                     f"{' ...' if n_classes > 8 else ''}); Many / Medium / Few are absent: if the labeled set is "
                     "a random sample of the collection set data.labeled.groups: sample, or give the collection's "
                     "class counts with groups: counts and counts_file")
    ood_files = None
    if ood is not None:
        ood_root = Path(ood).expanduser()
        if not ood_root.is_dir():
            raise UserError(f"--ood {ood_root} is not a folder")
        ood_files = len(list_image_files(ood_root))
        if not ood_files:
            raise UserError(f"--ood {ood_root}: no image files")
    over, why = choose(len(paths), image_sizes(paths), gpu, n_classes, ood_files)
    over["data"] = {**data, **over["data"]}
    over["ood"].update({"source": "folder", "path": str(ood)} if ood is not None else
                       {"source": "bundled", "path": None})
    base = read_yaml(params_file) if Path(params_file).is_file() else {}
    base.pop("data", None)  # the data section is replaced whole: no benchmark key survives
    params = {"data": over.pop("data"), **merged(base, flatten(over))}
    # every key written out (the schema's defaults included): dvc.yaml names single keys such as
    # data.group_rule, and DVC refuses a stage whose params key is missing from params.yaml
    params = validate(params, params_file).model_dump(mode="json")
    return params, [f"data.source images: {len(paths)} image files under {images}"] + why + notes


def write_params(params: dict, reasons: list[str], path: str | Path = PARAMS_FILE) -> None:
    from ltcl.io import write_text

    header = ("# Written by `ltcl init` for a first KDUP run on your own images. Its choices:\n"
              + "".join(f"#   {r}\n" for r in reasons)
              + "# Every key is described in the params schema (src/ltcl/params.py).\n\n")
    write_text(path, header + yaml.safe_dump(params, sort_keys=False))

"""List-file datasets (``data.source: list``): ImageNet-100-LT, Places-LT or a user's own lists.

A root folder plus list files of ``<relative path> <label>`` lines, one per role:

========== ========= ===========================================================================
role       required  split(s) it gives
========== ========= ===========================================================================
train      yes       ``lt`` (the long-tailed pre-training set) and ``train`` (longtail subset)
balanced   no        ``train`` with ``subset: balanced-subset``
val        yes       ``val`` (the probes' model selection)
test       yes       ``test``
probe_full no        ``probe_full``; without it the full-shot probe trains on ``train``'s list
                     (the bundles ship no full balanced training list; to probe on all
                     ImageNet-100 training images, as the CIFAR protocol probes on the whole
                     training set, give that list here)
few_shot   no        ``few_shot`` and ``one_percent``; without it a class-balanced
                     ``few_shot_fraction`` of ``probe_full`` drawn by ``split_seed``
========== ========= ===========================================================================

``ms`` (TASE's minimum sampling) is drawn from ``lt`` by ``split_seed`` as for every source.

Checks before any decoding: every list parses, labels lie in ``[0, C)`` with C = 1 + the
largest training label and every class has training images, and every listed file exists
(how many are missing, the first few, and the usual causes). Then each list is decoded once,
resized to ``image_size`` x ``image_size`` (PIL bilinear, no crop: the whole image, aspect
ratio not kept) and streamed in chunks into ``<split>_x.npy``, so peak memory is one chunk.
The papers instead decode the full-size JPEG every epoch and take a RandomResizedCrop of it;
here crops are taken from the stored 224 x 224 image, which loses the resolution a crop of a
larger original would have had. A file that fails to decode stops the build after the whole
list was tried (the message names the first few and counts them) and nothing is written:
the build happens in a temporary folder renamed over ``out_dir`` at the end.  A user's own
lists may set ``data.on_bad_image: skip``: each unreadable file is then logged, left out of its
split and listed in the manifest's ``skipped_images``; a shipped bundle is a published subset
and is taken exactly.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from ltcl.data.lists import (
    BUNDLE_ROOTS,
    BUNDLE_SOURCES,
    ListFile,
    bundle_files,
    check_files_exist,
    file_record,
    read_list,
)
from ltcl.data.rows import DiskRows, NpyWriter
from ltcl.data.sources.folder import read_image_files
from ltcl.data.splits import (
    INDICES_FILE,
    SPLIT_NAMES,
    _rng,
    _round_half_up,
    _sample_per_class,
    ms_indices,
    split_files,
    write_manifest,
)
from ltcl.errors import UserError
from ltcl.io import atomic_dir, save_npz

logger = logging.getLogger(__name__)

CHUNK = 256  # images decoded and written at a time
REQUIRED = ("train", "val", "test")


def read_lists(lists) -> tuple[dict[str, ListFile], str | None]:
    """Parse every list of ``data.lists`` (bundle name or role -> path mapping)."""
    files, bundle = bundle_files(lists)
    missing = [r for r in REQUIRED if r not in files]
    if missing:
        raise UserError(f"data.lists needs the roles {', '.join(missing)}")
    return {role: read_list(path) for role, path in files.items()}, bundle


def class_names_of(train: ListFile, num_classes: int) -> list[str]:
    """Each label's name: the folder its training images lie in (``train/<name>/file``), the
    most common one where a label's images lie in several."""
    by_label: dict[int, Counter] = {}
    for rel, lab in zip(train.paths, train.labels.tolist()):
        parts = Path(rel).parts
        folder = "/".join(parts[1:-1] if len(parts) > 2 else parts[:-1]) or str(lab)
        by_label.setdefault(lab, Counter())[folder] += 1
    return [by_label[c].most_common(1)[0][0] if c in by_label else str(c) for c in range(num_classes)]


def check_labels(lists: dict[str, ListFile]) -> int:
    """Number of classes C (from the training list); every label of every list in [0, C) and
    every class present in the training list."""
    train = lists["train"]
    num_classes = int(train.labels.max()) + 1
    empty = np.flatnonzero(train.counts(num_classes) == 0)
    if empty.size:
        raise UserError(f"{train.path}: labels 0..{num_classes - 1}, but classes {empty[:10].tolist()} have no "
                        f"training image ({empty.size} in all)")
    for role, lf in lists.items():
        bad = np.flatnonzero(lf.labels >= num_classes)
        if bad.size:
            raise UserError(f"{lf.path}: {bad.size} labels outside 0..{num_classes - 1} (the training list's "
                            f"classes), first at entry {bad[0] + 1}: {lf.paths[bad[0]]} {lf.labels[bad[0]]}")
    return num_classes


def decode_list(root: Path, rel_paths: list[str], out: Path, size: int, what: str,
                on_bad_image: str) -> list[int]:
    """Decode ``rel_paths`` under ``root`` to ``out`` (uint8 N x size x size x 3) chunk by chunk,
    gray images replicated to 3 channels; returns the rows (indices into ``rel_paths``) that failed
    to decode.  ``on_bad_image="error"``: every file is tried and nothing is logged as skipped (the
    caller raises one error naming the failures; ``out`` then holds zeros in their rows);
    ``"skip"``: each failure is logged and its row removed from ``out`` (rewritten in chunks), so
    ``out`` holds exactly the decoded images in list order."""
    bad: list[int] = []
    with NpyWriter(out, (len(rel_paths), size, size, 3)) as writer:
        for s in range(0, len(rel_paths), CHUNK):
            paths = [root / p for p in rel_paths[s: s + CHUNK]]
            images, _ = read_image_files(paths, size, "skip", warn=on_bad_image == "skip")
            chunk = np.zeros((len(paths), size, size, 3), np.uint8)
            for i, im in enumerate(images):
                if im is None:
                    bad.append(s + i)
                else:
                    chunk[i] = np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im
            writer.write(chunk)
    if bad and on_bad_image == "skip":
        keep = np.setdiff1d(np.arange(len(rel_paths)), bad)
        compact = out.with_name(out.name + ".compact")
        _subset_file(out, keep, compact)
        os.replace(compact, out)
    return bad


def _subset_file(src: Path, rows: np.ndarray, out: Path) -> None:
    """``out`` = the rows ``rows`` of the image file ``src`` (read and written in chunks)."""
    disk = DiskRows(src)
    with NpyWriter(out, (len(rows), *disk.row_shape)) as writer:
        for s in range(0, len(rows), CHUNK):
            writer.write(disk.take(rows[s: s + CHUNK]).numpy())


def _balanced_draw(labels: np.ndarray, num_classes: int, fraction: float, seed: int) -> np.ndarray:
    """Rows of a class-balanced ``fraction`` of ``labels`` (k = max(1, round(f N / C)) per class,
    fewer where a class has fewer), the rule of the generated splits."""
    pools = [np.flatnonzero(labels == c) for c in range(num_classes)]
    k = max(1, _round_half_up(fraction * len(labels) / num_classes))
    return _sample_per_class(pools, [min(k, len(p)) for p in pools], _rng(seed, "few_shot"))


def build_list_dataset(cfg, out_dir: str | os.PathLike, extra_manifest: Callable[[np.ndarray], dict]) -> dict:
    """Decode the lists of ``cfg`` (DataParams, source list) into ``out_dir``; returns the manifest,
    to which ``extra_manifest(lt_counts)`` adds its keys."""
    if cfg.image_size is None:
        raise UserError("data.source: list needs data.image_size (the stored resolution, e.g. 224): "
                        "listed images differ in size")
    if cfg.on_bad_image != "error" and isinstance(cfg.lists, str):
        raise UserError(f"data.lists: {cfg.lists} is a published subset, taken exactly: data.on_bad_image: skip "
                        "would change the protocol (set it to error and restore the unreadable files)")
    if cfg.subset == "balanced-subset" and not (isinstance(cfg.lists, str) and cfg.lists == "imagenet100-lt"
                                                or isinstance(cfg.lists, dict) and cfg.lists.get("balanced")):
        raise UserError("subset: balanced-subset needs a 'balanced' list in data.lists")
    lists, bundle = read_lists(cfg.lists)
    num_classes = check_labels(lists)
    root = Path(cfg.root).expanduser()
    roles = ["train", "val", "test"] + [r for r in ("probe_full", "few_shot") if r in lists]
    if cfg.subset == "balanced-subset":
        roles.append("balanced")
    hint = BUNDLE_ROOTS.get(bundle or "", "")
    for role in roles:
        check_files_exist(root, lists[role].paths, f"data.lists {role} ({lists[role].path})", hint)

    with atomic_dir(out_dir) as tmp:
        manifest = _build(cfg, lists, roles, bundle, num_classes, root, tmp, extra_manifest)
    return manifest


def _build(cfg, lists, roles, bundle, num_classes, root, tmp, extra_manifest) -> dict:
    size = int(cfg.image_size)
    file_of = {"train": "lt", "val": "val", "test": "test", "probe_full": "probe_full", "few_shot": "few_shot",
               "balanced": "train"}
    bad: list[str] = []
    for role in roles:
        fx, fy = split_files(file_of[role])
        rows = decode_list(root, lists[role].paths, tmp / fx, size, role, cfg.on_bad_image)
        bad += [str(root / lists[role].paths[i]) for i in rows]
        np.save(tmp / fy, np.delete(lists[role].labels, rows) if cfg.on_bad_image == "skip" else lists[role].labels)
    if bad and cfg.on_bad_image == "error":
        raise UserError(f"{len(bad)} listed images could not be decoded (first: {', '.join(bad[:5])}); "
                        "nothing was written. Re-copy or re-download those files, or set data.on_bad_image: "
                        "skip to leave them out (each is then logged and listed in the manifest)")
    if bad:
        logger.warning("data.on_bad_image: skip: %d listed images could not be decoded and were left out "
                       "(listed in data/lt/manifest.json skipped_images)", len(bad))
    labels = {split: np.load(tmp / split_files(split)[1]) for split in
              {file_of[r] for r in roles}}
    lt_y = labels["lt"]
    lt_counts = np.bincount(lt_y, minlength=num_classes)
    if bad and (lt_counts == 0).any():
        raise UserError(f"after leaving out {len(bad)} unreadable images, classes "
                        f"{np.flatnonzero(lt_counts == 0)[:10].tolist()} have no training image left")
    arrays = {"lt": "lt", "val": "val", "test": "test",
              "train": "train" if cfg.subset == "balanced-subset" else "lt",
              "probe_full": "probe_full" if "probe_full" in lists else "lt"}
    indices = {"lt": np.arange(len(lt_y)), "val": np.arange(len(labels["val"])),
               "test": np.arange(len(labels["test"])),
               "train": np.arange(len(labels[arrays["train"]])), "probe_full": np.arange(len(labels[arrays["probe_full"]]))}

    def derived(split: str, src: str, rows: np.ndarray) -> None:
        _subset_file(tmp / split_files(src)[0], rows, tmp / split_files(split)[0])
        np.save(tmp / split_files(split)[1], labels[src][rows])
        labels[split] = labels[src][rows]
        arrays[split], indices[split] = split, rows

    if "few_shot" in lists:
        arrays["few_shot"] = arrays["one_percent"] = "few_shot"
        indices["few_shot"] = indices["one_percent"] = np.arange(len(labels["few_shot"]))
    else:
        probe_y = labels[arrays["probe_full"]]
        derived("few_shot", arrays["probe_full"], _balanced_draw(probe_y, num_classes, cfg.few_shot_fraction,
                                                                 cfg.split_seed))
        derived("one_percent", arrays["probe_full"], _balanced_draw(probe_y, num_classes, 0.01, cfg.split_seed))
    ms_rows, k_ms = ms_indices(np.arange(len(lt_y)), lt_y, num_classes, cfg.split_seed)
    derived("ms", "lt", ms_rows)

    save_npz(tmp / INDICES_FILE, **{k: np.asarray(v, np.int64) for k, v in indices.items()})
    split_arrays = {name: dict(zip(("x", "y"), split_files(arrays[name]))) for name in SPLIT_NAMES}
    counts = {name: np.bincount(labels[arrays[name]], minlength=num_classes) for name in SPLIT_NAMES}
    records = {role: file_record(lists[role].path) for role in roles}
    params = {
        "dataset": bundle or "lists", "split": "community", "lists": bundle or "user", "subset": cfg.subset,
        "split_seed": int(cfg.split_seed), "image_shape": [size, size, 3], "root": str(root),
        "few_shot_fraction": float(cfg.few_shot_fraction), "ms_per_class": k_ms,
        "stored_resolution": f"{size}x{size} (bilinear resize of the whole image, no crop)",
    }
    if bundle:
        params["list_source"] = BUNDLE_SOURCES[bundle]
    manifest = write_manifest(tmp, dataset=params["dataset"], class_names=class_names_of(lists["train"], num_classes),
                              class_order=np.argsort(-lt_counts, kind="stable"), counts=counts,
                              train_counts=counts["train"], lt_counts=lt_counts, params=params, arrays=split_arrays,
                              split_records=records, extra_manifest={**extra_manifest(lt_counts),
                                                                     "skipped_images": bad})
    return manifest

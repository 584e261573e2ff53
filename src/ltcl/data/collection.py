"""An unlabeled collection (``data.source: images``) and its optional labeled evaluation set.

The collection is used as it is: every image file under ``data.root`` (any depth, any file
names, any sizes; sorted walk, symlinks leaving the root refused) or every path of the list file
``data.images``, in that order, is one row of the training split.  No long tail is drawn, nothing
is held out, no label is made up: ``train_y.npy`` holds -1 for every row and the manifest says
``labels.train: false`` (docs/data-manifest.md).  The path of every row is written to
``train_files.txt`` (one per line, row order), listed in the manifest with its sha256.

Each image is decoded once, converted to RGB (a gray image's channel replicated), resized to
``data.image_size`` squared with PIL bilinear (the whole image, no crop) and streamed in chunks
of :data:`~ltcl.data.listdata.CHUNK` into ``lt_x.npy``, so 100,000+ images stay within one
chunk's memory.  Unreadable files: by default one error naming them (after every file was
tried; nothing written); with ``data.on_bad_image: skip`` each is logged, left out, listed in the
manifest's ``skipped_images`` and counted in metrics/dataset.json; nothing else is lost.

``data.labeled`` (optional) gives the evaluation splits: ``probe_full`` (the probe's training
part), ``few_shot`` / ``one_percent`` (class-balanced shares of it, the rule of every source),
``val`` and ``test``, the class names, and (``groups``) the Many / Medium / Few groups: from the
labeled set's class counts when it is a sample of the collection, from a counts file, or absent.
Layouts: ``classes`` (one folder of class sub-folders, split per class with the seeded streams of
``ltcl.data.splits``: test first, then val, the rest probe-train), ``train-test`` (separate
folders, val drawn from train) and ``lists`` (``<relative path> <label>`` list files).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from ltcl.data.groups import class_groups
from ltcl.data.listdata import _balanced_draw, _subset_file, check_labels, class_names_of, decode_list
from ltcl.data.lists import check_files_exist, file_record, read_list
from ltcl.data.sources.folder import IMAGE_EXTENSIONS, list_image_files
from ltcl.data.splits import INDICES_FILE, _rng, split_files, write_manifest
from ltcl.errors import MissingInputError, UserError
from ltcl.io import atomic_dir, save_npz, write_text

logger = logging.getLogger(__name__)

TRAIN_FILES = "train_files.txt"  # the path of every training row, in row order
EVAL_SPLITS = ("probe_full", "few_shot", "one_percent", "val", "test")


# ----------------------------------------------------------------------------- the collection
def collection_paths(root: Path, images_list: str | None) -> list[str]:
    """The collection's image paths relative to ``root``: the lines of ``images_list`` (a list
    file of paths; a trailing label is not allowed: the collection is unlabeled) or every image
    file under ``root`` in sorted walk order."""
    if images_list is not None:
        entries = read_list(Path(images_list).expanduser(), need_labels=False)
        if (entries.labels >= 0).any():
            first = int(np.flatnonzero(entries.labels >= 0)[0])
            raise UserError(f"data.images {entries.path}: line {first + 1} ({entries.paths[first]!r} "
                            f"{entries.labels[first]}) ends in a label; the collection's list holds paths only "
                            "(labeled images go to data.labeled)")
        check_files_exist(root, entries.paths, f"data.images ({entries.path})")
        return entries.paths
    if not root.is_dir():
        raise MissingInputError(f"data.root {root} is not a folder (data.source: images reads every image file "
                                "under it, or the paths of data.images)")
    paths = [str(p.relative_to(root)) for p in list_image_files(root)]
    if not paths:
        raise UserError(f"data.root {root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) at any depth")
    return paths


# ----------------------------------------------------------------------------- the labeled set
def _class_folder_entries(folder: Path, real_root: str, class_names: list[str] | None = None):
    """(relative-to-folder paths, labels, class names) of ``folder/<class>/**``."""
    if not folder.is_dir():
        raise MissingInputError(f"data.labeled: {folder} not found (expected class sub-folders in it)")
    names = class_names or sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=True))
    if not names:
        raise UserError(f"data.labeled: {folder} has no class sub-folders")
    present = sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=True))
    unknown = sorted(set(present) - set(names))
    if unknown:
        raise UserError(f"data.labeled: classes {unknown} of {folder} have no training folder")
    paths: list[str] = []
    labels: list[int] = []
    for c, name in enumerate(names):
        if not (folder / name).is_dir():
            continue
        found = list_image_files(folder / name, real_root)
        paths += [str(p.relative_to(folder)) for p in found]
        labels += [c] * len(found)
    return paths, np.asarray(labels, np.int64), names


def _stratified(labels: np.ndarray, num_classes: int, fraction: float, seed: int, stream: str) -> np.ndarray:
    """Rows of a per-class ``round(fraction * n_c)`` share of ``labels`` (at least one where the
    class has two or more images and the fraction is positive), drawn by the split seed's stream."""
    rng = _rng(seed, stream)
    picked = []
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        k = int(np.floor(fraction * len(rows) + 0.5))
        if fraction > 0 and k == 0 and len(rows) >= 2:
            k = 1
        picked.append(rng.choice(rows, size=min(k, len(rows) - 1 if len(rows) > 1 else 0), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def labeled_entries(lab, split_seed: int) -> tuple[Path, dict[str, tuple[list[str], np.ndarray]], list[str], dict]:
    """(root, role -> (paths relative to root, labels) for probe_full / val / test, class names,
    the list files' records) of ``data.labeled``."""
    root = Path(lab.root).expanduser()
    real_root = os.path.realpath(root)
    records: dict = {}
    if lab.layout == "lists":
        lists = {role: read_list(Path(p).expanduser()) for role, p in lab.lists.items()}
        num_classes = check_labels(lists)  # the list-file source's checks: labels in range, no empty class
        for role, lf in lists.items():
            check_files_exist(root, lf.paths, f"data.labeled.lists {role} ({lf.path})")
        names = class_names_of(lists["train"], num_classes)
        train = (lists["train"].paths, lists["train"].labels)
        test = (lists["test"].paths, lists["test"].labels)
        val = (lists["val"].paths, lists["val"].labels) if "val" in lists else None
        records = {role: file_record(lf.path) for role, lf in lists.items()}
    elif lab.layout == "train-test":
        tr_paths, tr_y, names = _class_folder_entries(root / "train", real_root)
        te_paths, te_y, _ = _class_folder_entries(root / "test", real_root, names)
        train = (["train/" + p for p in tr_paths], tr_y)
        test = (["test/" + p for p in te_paths], te_y)
        val = None
    else:
        paths, labels, names = _class_folder_entries(root, real_root)
        test_rows = _stratified(labels, len(names), lab.test_fraction, split_seed, "test")
        rest = np.setdiff1d(np.arange(len(labels)), test_rows)
        test = ([paths[i] for i in test_rows], labels[test_rows])
        train = ([paths[i] for i in rest], labels[rest])
        val = None
    num_classes = len(names)
    if val is None:  # val from the training part
        val_rows = _stratified(train[1], num_classes, lab.val_fraction, split_seed, "val")
        rest = np.setdiff1d(np.arange(len(train[1])), val_rows)
        val = ([train[0][i] for i in val_rows], train[1][val_rows])
        train = ([train[0][i] for i in rest], train[1][rest])
    empty = np.flatnonzero(np.bincount(train[1], minlength=num_classes) == 0)
    if empty.size:
        raise UserError(f"data.labeled: classes {[names[c] for c in empty[:10]]} have no image left for the probe's "
                        "training split (a class needs at least 2 images, more with val_fraction / test_fraction)")
    if num_classes < 2:
        raise UserError(f"data.labeled: {num_classes} class found under {root}; a probe needs at least 2 classes")
    return root, {"probe_full": train, "val": val, "test": test}, names, records


def read_counts_file(path: str, class_names: list[str]) -> np.ndarray:
    """Per-class counts (in ``class_names`` order) of a ``class,count`` CSV (a header line allowed)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"data.labeled.counts_file {path} not found")
    counts: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for no, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise UserError(f"data.labeled.counts_file {path}:{no}: expected 'class,count', got {row}")
            name, value = row[0].strip(), row[1].strip()
            if no == 1 and not value.isdigit():
                continue  # header
            if not value.isdigit():
                raise UserError(f"data.labeled.counts_file {path}:{no}: count {value!r} is not a whole number")
            counts[name] = int(value)
    missing = [n for n in class_names if n not in counts]
    if missing:
        raise UserError(f"data.labeled.counts_file {path}: no count for classes {missing[:10]} "
                        f"({len(missing)} of {len(class_names)})")
    return np.asarray([counts[n] for n in class_names], np.int64)


# ----------------------------------------------------------------------------- the build
def build_collection(cfg, out_dir: str | os.PathLike) -> dict:
    """Write the splits of ``cfg`` (DataParams, source images) into ``out_dir`` (built in a
    temporary folder renamed over it at the end); returns the manifest."""
    root = Path(cfg.root).expanduser()
    paths = collection_paths(root, cfg.images)
    labeled = labeled_entries(cfg.labeled, cfg.split_seed) if cfg.labeled is not None else None
    with atomic_dir(out_dir) as tmp:
        manifest = _build(cfg, root, paths, labeled, tmp)
    return manifest


def _decode(root: Path, rel: list[str], out: Path, size: int, on_bad: str, what: str) -> tuple[list[int], list[str]]:
    rows = decode_list(root, rel, out, size, what, on_bad)
    bad = [str(root / rel[i]) for i in rows]
    if bad and on_bad == "error":
        raise UserError(f"{what}: {len(bad)} of {len(rel)} images could not be decoded (first: {', '.join(bad[:5])}); "
                        "nothing was written. Re-copy those files, or set data.on_bad_image: skip to leave them "
                        "out (each is logged, listed in the manifest's skipped_images and counted in "
                        "metrics/dataset.json)")
    if bad:  # each was logged by read_image_files as it was skipped
        logger.warning("%s: %d of %d images could not be decoded and were left out (data.on_bad_image: skip; "
                       "listed in the manifest's skipped_images)", what, len(bad), len(rel))
    return rows, bad


def _build(cfg, root: Path, paths: list[str], labeled, tmp: Path) -> dict:
    size = int(cfg.image_size)
    fx, fy = split_files("lt")
    bad_rows, skipped = _decode(root, paths, tmp / fx, size, cfg.on_bad_image, f"data.root {root}")
    dropped = set(bad_rows)
    kept = [p for i, p in enumerate(paths) if i not in dropped]
    if not kept:
        raise UserError(f"data.root {root}: none of the {len(paths)} images could be decoded")
    np.save(tmp / fy, np.full(len(kept), -1, np.int64))
    write_text(tmp / TRAIN_FILES, "".join(p + "\n" for p in kept))
    arrays = {"lt": {"x": fx, "y": fy}, "train": {"x": fx, "y": fy}}
    indices = {"lt": np.arange(len(kept)), "train": np.arange(len(kept))}
    sizes = {"train": len(kept), "lt": len(kept)}
    counts: dict[str, np.ndarray] = {}
    names: list[str] = []
    records: dict = {}
    groups = group_counts = group_source = None
    if labeled is not None:
        lroot, roles, names, records = labeled
        num_classes = len(names)
        labels: dict[str, np.ndarray] = {}
        for role in ("probe_full", "val", "test"):
            rel, y = roles[role]
            rx, ry = split_files(role)
            rows, bad = _decode(lroot, rel, tmp / rx, size, cfg.on_bad_image, f"data.labeled {role}")
            skipped += bad
            labels[role] = np.delete(y, rows)
            np.save(tmp / ry, labels[role])
            arrays[role] = {"x": rx, "y": ry}
            indices[role] = np.arange(len(labels[role]))
        for split, fraction in (("few_shot", cfg.few_shot_fraction), ("one_percent", 0.01)):
            rows = _balanced_draw(labels["probe_full"], num_classes, fraction, cfg.split_seed)
            sx, sy = split_files(split)
            _subset_file(tmp / arrays["probe_full"]["x"], rows, tmp / sx)
            labels[split] = labels["probe_full"][rows]
            np.save(tmp / sy, labels[split])
            arrays[split] = {"x": sx, "y": sy}
            indices[split] = rows
        counts = {split: np.bincount(labels[split], minlength=num_classes) for split in EVAL_SPLITS}
        sizes.update({split: int(c.sum()) for split, c in counts.items()})
        lab = cfg.labeled
        if lab.groups == "sample":
            group_counts = sum(counts[s] for s in ("probe_full", "val", "test"))
            group_source = "labeled set (a sample of the collection)"
        elif lab.groups == "counts":
            group_counts = read_counts_file(lab.counts_file, names)
            group_source = f"counts file {lab.counts_file}"
            records["counts_file"] = file_record(Path(lab.counts_file).expanduser())
        if group_counts is not None:
            groups = class_groups(group_counts, cfg.group_rule).tolist()
    save_npz(tmp / INDICES_FILE, **{k: np.asarray(v, np.int64) for k, v in indices.items()})
    note = ("the training images are unlabeled; " + (
        f"accuracies come from the labeled set under {cfg.labeled.root} ({len(names)} classes)"
        if labeled is not None else "no labeled set (data.labeled): no accuracy can be computed"))
    params = {"dataset": "images", "split": "generated", "root": str(root), "images": cfg.images,
              "image_shape": [size, size, 3], "split_seed": int(cfg.split_seed),
              "few_shot_fraction": float(cfg.few_shot_fraction),
              "stored_resolution": f"{size}x{size} (PIL bilinear resize of the whole image, no crop; RGB)",
              "labeled": cfg.labeled.model_dump(mode="json") if cfg.labeled is not None else None}
    order = (np.argsort(-np.asarray(group_counts), kind="stable") if group_counts is not None
             else np.arange(len(names)))
    extra = {"labels": {"train": False, "eval": labeled is not None, "note": note},
             "groups": groups, "group_rule": cfg.group_rule if groups else None,
             "group_counts": None if group_counts is None else np.asarray(group_counts).tolist(),
             "group_source": group_source, "source": cfg.source, "image_shape": [size, size, 3],
             "skipped_images": skipped, "train_files": TRAIN_FILES}
    manifest = write_manifest(tmp, dataset="images", class_names=names, class_order=order, counts=counts,
                              train_counts=None, lt_counts=None, params=params, arrays=arrays,
                              split_records=records, extra_manifest=extra, sizes=sizes,
                              extra_files=[TRAIN_FILES])
    return manifest

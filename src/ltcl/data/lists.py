"""The community's split files, shipped in ``ltcl/data/lists/`` (its README: source repositories
and commits), and the parser of ``<relative path> <label>`` list files.

* SDCLR's CIFAR-10/-100 index lists (VITA-Group/SDCLR@f1490fc, ``split/``): per split k = 1..5
  ``D_i`` (long-tailed pre-training set), ``D_b`` (balanced subset of about the same size),
  ``S_b`` (few-shot set), and ``valIdxList``; all index the official 50,000 training images in
  the python batches' order.
* List bundles of ``<path> <label>`` lines: SDCLR's ImageNet-100-LT lists and COLT's Places-LT
  lists (JianhongBai/COLT@3c4507b), and COLT's ImageNet-R pool list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltcl.errors import MissingInputError, UserError
from ltcl.io import sha256_file

LISTS_DIR = Path(__file__).resolve().parent / "lists"
SDCLR_SOURCE = "VITA-Group/SDCLR@f1490fce26e6bb67d2c21b450db5a6e3184e6bc3 split/"
COLT_SOURCE = "JianhongBai/COLT@3c4507b494e8bd83c99eba684fc4e0faa822a2b0 split/"
CIFAR_SPLITS = range(1, 6)

# role -> file of each shipped bundle (roles: see ltcl.data.sources.listfile)
BUNDLES: dict[str, dict[str, str]] = {
    "imagenet100-lt": {
        "train": "imagenet100/imageNet_100_LT_train.txt",
        "balanced": "imagenet100/imageNet_100_BL_train.txt",
        "val": "imagenet100/ImageNet_100_val.txt",
        "test": "imagenet100/ImageNet_100_test.txt",
        "few_shot": "imagenet100/imageNet_100_sub_balance_train_0.01.txt",
    },
    "places-lt": {
        "train": "places365/Places_LT_train.txt",
        "val": "places365/Places_LT_val.txt",
        "test": "places365/Places_LT_test.txt",
    },
}
BUNDLE_SOURCES = {"imagenet100-lt": SDCLR_SOURCE + "imagenet100/", "places-lt": COLT_SOURCE + "places365/"}
# what each bundle's root must hold, for the error message of a missing file
BUNDLE_ROOTS = {
    "imagenet100-lt": "an ILSVRC-2012 root with train/<wnid>/*.JPEG and the official validation images sorted into "
                      "val/<wnid>/ folders",
    "places-lt": "a Places365-Standard root with train/<category>/*.jpg and the validation images sorted into "
                 "val/<category>/ folders",
}
POOL_LISTS = {"imagenet-r": "imagenet100/imagenet-r.txt"}
POOL_SOURCES = {"imagenet-r": COLT_SOURCE + "imagenet100/imagenet-r.txt"}


def file_record(path: str | os.PathLike) -> dict[str, str]:
    """``{"file", "sha256"}`` of a list file, as the manifest and run card record it; shipped
    files are named relative to ``ltcl/data/lists``."""
    path = Path(path)
    try:
        name = str(path.resolve().relative_to(LISTS_DIR))
    except ValueError:
        name = str(path)
    return {"file": name, "sha256": sha256_file(path)}


# ----------------------------------------------------------------------------- CIFAR index lists
def cifar_index_files(dataset: str, split_index: int) -> dict[str, Path]:
    """SDCLR's index lists of ``dataset`` (cifar10 | cifar100) split ``split_index`` (1..5):
    roles ``lt`` (D_i), ``balanced`` (D_b), ``few_shot`` (S_b), ``val`` (valIdxList)."""
    if dataset not in ("cifar10", "cifar100"):
        raise UserError(f"SDCLR's split files exist for cifar10 and cifar100, not {dataset!r}")
    if split_index not in CIFAR_SPLITS:
        raise UserError(f"data.split_index must be 1..5 (SDCLR published five splits), got {split_index}")
    folder = LISTS_DIR / dataset
    return {"lt": folder / f"split{split_index}_D_i.npy", "balanced": folder / f"split{split_index}_D_b.npy",
            "few_shot": folder / f"split{split_index}_S_b.npy", "val": folder / "valIdxList.npy"}


def read_index_list(path: Path, n_images: int) -> np.ndarray:
    """A 1-D int64 index list, checked: unique entries in ``[0, n_images)``."""
    if not path.is_file():
        raise MissingInputError(f"split file {path} not found (it ships with ltcl: reinstall the package)")
    idx = np.load(path, allow_pickle=False)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise UserError(f"{path}: expected a 1-D integer index array, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_images):
        raise UserError(f"{path}: indices must lie in [0, {n_images}) (the official training set), "
                        f"got {idx.min()}..{idx.max()}")
    if len(np.unique(idx)) != len(idx):
        raise UserError(f"{path}: repeated indices")
    return idx


# ----------------------------------------------------------------------------- path lists
@dataclass
class ListFile:
    """One parsed list file: relative paths and labels (-1 where a line has none)."""

    path: Path
    paths: list[str]
    labels: np.ndarray

    def counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels[self.labels >= 0], minlength=num_classes)


def read_list(path: str | os.PathLike, need_labels: bool = True) -> ListFile:
    """Parse ``<relative path> <label>`` lines (blank lines skipped; the path may hold spaces,
    the label is the last field). Absolute paths and ``..`` components are refused: every
    path must stay inside the root it is joined to."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"list file {path} not found")
    paths: list[str] = []
    labels: list[int] = []
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                rel, label = parts[0], int(parts[1])
            elif need_labels:
                raise UserError(f"{path}:{no}: expected '<relative path> <label>', got {line!r}")
            else:
                rel, label = line, -1
            if os.path.isabs(rel) or ".." in Path(rel).parts:
                raise UserError(f"{path}:{no}: {rel!r} must be a path relative to the data root, without '..'")
            if need_labels and label < 0:
                raise UserError(f"{path}:{no}: negative label {label}")
            paths.append(rel)
            labels.append(label)
    if not paths:
        raise UserError(f"list file {path} has no entries")
    return ListFile(path, paths, np.asarray(labels, dtype=np.int64))


def bundle_files(lists) -> tuple[dict[str, Path], str | None]:
    """The role -> list file mapping of ``data.lists`` (a bundle name or a mapping of paths) and
    the bundle's name (None for a user's own lists)."""
    if isinstance(lists, str):
        if lists not in BUNDLES:
            raise UserError(f"unknown list bundle {lists!r}; shipped: {', '.join(BUNDLES)}")
        return {role: LISTS_DIR / rel for role, rel in BUNDLES[lists].items()}, lists
    files = {role: Path(p).expanduser() for role, p in dict(lists).items() if p}
    return files, None


def pool_list_file(path_or_name: str) -> Path:
    """``ood.path`` of ``ood.source: list``: a shipped pool list's name or a list file."""
    return LISTS_DIR / POOL_LISTS[path_or_name] if path_or_name in POOL_LISTS else Path(path_or_name).expanduser()


def check_files_exist(root: Path, rel_paths: list[str], what: str, hint: str = "") -> None:
    """Stop before any work if listed files are missing: how many, the first few, the usual cause."""
    missing = [p for p in rel_paths if not (root / p).is_file()]
    if not missing:
        return
    first = ", ".join(str(root / p) for p in missing[:5])
    cause = ("Usual causes: a different release (ImageNet 2010 instead of ILSVRC-2012, Places365-Challenge "
             "instead of -Standard), a validation folder not sorted into class sub-folders, or data.root "
             "pointing one level too high or too low")
    raise MissingInputError(f"{what}: {len(missing)} of {len(rel_paths)} listed files are missing under {root} "
                            f"(first: {first}). {cause}." + (f" Expected {hint}." if hint else ""))

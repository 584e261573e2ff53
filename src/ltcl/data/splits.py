"""Long-tailed pre-training splits and the evaluation splits around them.

Protocol (SDCLR, Jiang et al. 2021; COLT; KDUP paper 003 Sec. 4.1; TASE paper
000 Sec. 4.2), in the order the arrays are drawn from the official train set:

1. ``val``: ``val_per_class`` images of every class, held out first.
2. ``probe_full``: everything else (the balanced "full" linear-probe set).
3. ``lt``: the long-tailed pre-training split D_i: class ``class_order[r]``
   gets the r-th largest count of :func:`~ltcl.data.longtail.longtail_counts`
   (n_max = smallest per-class remainder after val unless given), drawn from
   probe_full.
4. ``train``: ``lt`` (``subset="longtail"``) or SDCLR's D_b
   (``subset="balanced-subset"``): a class-balanced subset of probe_full with
   the same total size as ``lt`` (N // C per class, the N % C remaining images
   going to randomly chosen classes).
5. ``few_shot``: class-balanced ``few_shot_fraction`` of probe_full (SDCLR's
   few-shot probe): ``k = max(1, round_half_up(f * |probe_full| / C))`` per
   class (fewer only if a class has fewer images).
6. ``one_percent``: TASE's "1%S LP": class-balanced random 1% of probe_full,
   same rule with f = 0.01. It uses the same random stream as ``few_shot``, so
   with the default ``few_shot_fraction=0.01`` the two are identical (SDCLR's
   1% few-shot and TASE's 1%S are one protocol).
7. ``ms``: TASE's "MS LP" (balanced *minimum sampling*, from TS, Kukleva et
   al. 2023): from the LT split, every class contributes min_c(lt count) images,
   i.e. the tail-class count, so the set is exactly balanced and lies inside the
   pre-training data. Paper 000 says MS and 1%S "both use 1% of the full data
   set": with ratio 100 the tail count is n_max/100, i.e. 45 per class = 1% on
   CIFAR-10-LT (450 images) and 4 per class (0.9%) on CIFAR-100-LT.
8. ``test``: the official test set (optionally at most ``max_test_per_class``
   per class, for quick runs).

Every random choice uses its own stream ``default_rng([split_seed, stream])``
so that, e.g., changing ``few_shot_fraction`` leaves the LT split unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ltcl.data.longtail import longtail_counts
from ltcl.data.sources import RawDataset
from ltcl.errors import MissingInputError, UserError
from ltcl.io import read_json, save_npy, save_npz, sha256_file, write_json

SPLIT_NAMES = ("train", "probe_full", "few_shot", "val", "test", "ms", "lt", "one_percent")
SUBSETS = ("longtail", "balanced-subset")
MANIFEST = "manifest.json"
INDICES_FILE = "indices.npz"
_STREAMS = {"val": 1, "class_order": 2, "lt": 3, "balanced": 4, "few_shot": 5, "ms": 6, "test": 7, "tie": 8}

Split = tuple[np.ndarray, np.ndarray]


@dataclass
class Splits:
    """All splits of one data set / seed. Each split is ``(x, y)``.

    ``counts`` are the per-class counts (indexed by class id) of ``train``;
    ``lt_counts`` those of ``lt``. ``class_order[r]`` is the class that got the
    r-th largest long-tailed count. ``indices[name]`` index the raw train set
    (``test``: the raw test set).
    """

    dataset: str
    train: Split
    probe_full: Split
    few_shot: Split
    val: Split
    test: Split
    ms: Split
    lt: Split
    one_percent: Split
    counts: np.ndarray
    lt_counts: np.ndarray
    class_order: np.ndarray
    class_names: list[str]
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    split_files: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> {file, sha256} (community)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def get(self, name: str) -> Split:
        """Split ``name`` (one of :data:`SPLIT_NAMES`)."""
        if name not in SPLIT_NAMES:
            raise UserError(f"unknown split {name!r}; known splits: {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)

    def split_counts(self, name: str) -> np.ndarray:
        """Per-class counts of split ``name``."""
        return np.bincount(self.get(name)[1], minlength=self.num_classes)


def _rng(split_seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([int(split_seed), _STREAMS[stream]])


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _sample_per_class(pools: Sequence[np.ndarray], k: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Draw ``k[c]`` indices without replacement from ``pools[c]``; sorted union."""
    picked = [rng.choice(pool, size=int(n), replace=False) for pool, n in zip(pools, k)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def _resolve_class_order(class_order: str | Sequence[int], num_classes: int, split_seed: int) -> np.ndarray:
    if isinstance(class_order, str):
        if class_order == "given":
            return np.arange(num_classes)
        if class_order == "permuted":
            return _rng(split_seed, "class_order").permutation(num_classes)
        raise UserError(f"class_order must be 'given', 'permuted' or a permutation of 0..C-1, got {class_order!r}")
    order = np.asarray(class_order, dtype=np.int64)
    if order.shape != (num_classes,) or not np.array_equal(np.sort(order), np.arange(num_classes)):
        raise UserError(f"class_order must be a permutation of 0..{num_classes - 1}, got {order.tolist()}")
    return order


def _take(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
    return x[idx], y[idx].astype(np.int64)


def ms_indices(lt_idx: np.ndarray, y: np.ndarray, num_classes: int, split_seed: int) -> tuple[np.ndarray, int]:
    """TASE's minimum sampling: every class's tail count (min of the LT counts) drawn from the LT
    split ``lt_idx`` (``y`` indexed by it) with the ``ms`` stream; (indices, per-class count)."""
    lt_by_class = [lt_idx[y[lt_idx] == c] for c in range(num_classes)]
    k_ms = int(min(len(ix) for ix in lt_by_class))
    return _sample_per_class(lt_by_class, [k_ms] * num_classes, _rng(split_seed, "ms")), k_ms


def test_indices(y_test: np.ndarray, num_classes: int, max_test_per_class: int | None, split_seed: int) -> np.ndarray:
    """The test set: all of it, or at most ``max_test_per_class`` per class drawn with the ``test`` stream."""
    if max_test_per_class is None:
        return np.arange(len(y_test))
    pools = [np.flatnonzero(y_test == c) for c in range(num_classes)]
    return _sample_per_class(pools, [min(max_test_per_class, len(p)) for p in pools], _rng(split_seed, "test"))


def make_splits(
    raw: RawDataset,
    *,
    imbalance_ratio: float,
    val_per_class: int,
    max_per_class: int | None,
    profile: str,
    pareto_min: int,
    class_order: str | Sequence[int],
    split_seed: int,
    few_shot_fraction: float,
    subset: str,
    max_test_per_class: int | None,
    draw: bool = True,
) -> Splits:
    """Build the long-tailed pre-training split and the probe/val/test splits (see module doc).

    Args:
        raw: the data set (official train/test).
        imbalance_ratio: n_max / n_min of the LT profile (>= 1).
        val_per_class: validation images held out per class before anything else.
        max_per_class: n_max, the head-class count; default = the smallest
            number of images any class has left after val.
        profile: ``"exp"`` | ``"pareto"`` | ``"balanced"``.
        pareto_min: smallest class count of the pareto profile.
        class_order: ``"permuted"`` (random by split_seed), ``"given"`` (class 0
            is the head) or an explicit permutation (class_order[r] gets rank r).
        split_seed: seed of every random choice.
        few_shot_fraction: fraction of probe_full in the few-shot split.
        subset: ``"longtail"`` (train = D_i) or ``"balanced-subset"`` (train = D_b).
        max_test_per_class: cap on test images per class (None = all).
        draw: cut the long tail (steps 2-3); False keeps the source's own counts: ``lt`` is every
            image left after val (a user's collection, already as long-tailed as it is), and
            ``imbalance_ratio`` / ``max_per_class`` / ``profile`` / ``class_order`` are not read.

    Raises:
        ValueError: bad arguments, val_per_class leaving a class empty, or a
            class with fewer images than its long-tailed (or balanced) count.
    """
    if subset not in SUBSETS:
        raise UserError(f"subset must be one of {SUBSETS}, got {subset!r}")
    if int(val_per_class) != val_per_class or val_per_class < 0:
        raise UserError(f"val_per_class must be a non-negative int, got {val_per_class!r}")
    if not 0 < few_shot_fraction <= 1:
        raise UserError(f"few_shot_fraction must be in (0, 1], got {few_shot_fraction!r}")
    if max_test_per_class is not None and max_test_per_class < 1:
        raise UserError(f"max_test_per_class must be >= 1 or None, got {max_test_per_class!r}")
    if max_per_class is not None and (int(max_per_class) != max_per_class or max_per_class < 1):
        raise UserError(f"max_per_class must be a positive int or None, got {max_per_class!r}")
    num_classes = len(raw.class_names)
    y = np.asarray(raw.y_train, dtype=np.int64)
    by_class = [np.flatnonzero(y == c) for c in range(num_classes)]
    available = np.array([len(ix) for ix in by_class])

    # 1. validation, held out first
    too_small = np.flatnonzero(available <= val_per_class)
    if too_small.size:
        detail = ", ".join(f"{raw.class_names[c]} has {available[c]}" for c in too_small[:10])
        raise UserError(
            f"val_per_class={val_per_class} leaves no training images for {too_small.size} class(es) ({detail}); "
            f"val_per_class must be < {available.min()}"
        )
    rng_val = _rng(split_seed, "val")
    shuffled = [rng_val.permutation(ix) for ix in by_class]
    val_idx = np.sort(np.concatenate([s[:val_per_class] for s in shuffled]))
    rest = [np.sort(s[val_per_class:]) for s in shuffled]
    remaining = available - val_per_class
    probe_idx = np.sort(np.concatenate(rest))

    # 2. long-tailed counts under the class order (or the source's own counts, kept as they are)
    if draw:
        n_max = int(remaining.min()) if max_per_class is None else int(max_per_class)
        ranked = longtail_counts(n_max, num_classes, imbalance_ratio, profile=profile,
                                 min_count=pareto_min if profile == "pareto" else None)
        order = _resolve_class_order(class_order, num_classes, split_seed)
        lt_counts = np.empty(num_classes, dtype=np.int64)
        lt_counts[order] = ranked
    else:
        lt_counts = remaining.astype(np.int64)
        order = np.argsort(-lt_counts, kind="stable")
        n_max = int(lt_counts.max())
    short = np.flatnonzero(lt_counts > remaining)
    if short.size:
        detail = ", ".join(f"class {raw.class_names[c]} needs {lt_counts[c]} but has {remaining[c]}" for c in short[:10])
        raise UserError(
            f"n_max={n_max} (max_per_class) is too large: {detail} after holding out val_per_class={val_per_class}; "
            f"use max_per_class <= {remaining.min()}"
        )
    lt_idx = _sample_per_class(rest, lt_counts, _rng(split_seed, "lt"))

    # 3. training split: LT or a balanced subset of the same size (SDCLR's D_b)
    if subset == "longtail":
        train_idx, train_counts = lt_idx, lt_counts.copy()
    else:
        total = int(lt_counts.sum())
        train_counts = np.full(num_classes, total // num_classes, dtype=np.int64)
        extra = _rng(split_seed, "tie").permutation(num_classes)[: total % num_classes]
        train_counts[extra] += 1
        short = np.flatnonzero(train_counts > remaining)
        if short.size:
            raise UserError(
                f"balanced-subset needs {train_counts.max()} images per class but classes "
                f"{[raw.class_names[c] for c in short]} have fewer after val"
            )
        train_idx = _sample_per_class(rest, train_counts, _rng(split_seed, "balanced"))

    # 4. balanced few-shot / 1% / minimum-sampling probes
    n_probe = len(probe_idx)
    k_few = max(1, _round_half_up(few_shot_fraction * n_probe / num_classes))
    k_one = max(1, _round_half_up(0.01 * n_probe / num_classes))
    few_idx = _sample_per_class(rest, np.minimum(k_few, remaining), _rng(split_seed, "few_shot"))
    one_idx = _sample_per_class(rest, np.minimum(k_one, remaining), _rng(split_seed, "few_shot"))
    ms_idx, k_ms = ms_indices(lt_idx, y, num_classes, split_seed)

    # 5. test
    y_test = np.asarray(raw.y_test, dtype=np.int64)
    test_idx = test_indices(y_test, num_classes, max_test_per_class, split_seed)

    x = raw.x_train
    indices = {"train": train_idx, "probe_full": probe_idx, "few_shot": few_idx, "val": val_idx,
               "test": test_idx, "ms": ms_idx, "lt": lt_idx, "one_percent": one_idx}
    params = {
        "dataset": raw.name, "imbalance_ratio": float(imbalance_ratio), "val_per_class": int(val_per_class),
        "n_max": n_max, "max_per_class": max_per_class, "profile": profile, "pareto_min": int(pareto_min),
        "class_order": class_order if isinstance(class_order, str) else "explicit",
        "split_seed": int(split_seed), "few_shot_fraction": float(few_shot_fraction), "subset": subset,
        "max_test_per_class": max_test_per_class, "few_shot_per_class": k_few,
        "one_percent_per_class": k_one, "ms_per_class": k_ms, "image_shape": list(x.shape[1:]),
        "longtail_draw": bool(draw),
    }
    return Splits(
        dataset=raw.name,
        train=_take(x, y, train_idx),
        probe_full=_take(x, y, probe_idx),
        few_shot=_take(x, y, few_idx),
        val=_take(x, y, val_idx),
        test=_take(raw.x_test, y_test, test_idx),
        ms=_take(x, y, ms_idx),
        lt=_take(x, y, lt_idx),
        one_percent=_take(x, y, one_idx),
        counts=train_counts,
        lt_counts=lt_counts,
        class_order=order,
        class_names=list(raw.class_names),
        indices=indices,
        params=params,
    )


# --------------------------------------------------------------------------
# persistence
# --------------------------------------------------------------------------


def split_files(name: str) -> tuple[str, str]:
    """The (images, labels) file names of split ``name``."""
    return f"{name}_x.npy", f"{name}_y.npy"


def save_splits(splits: Splits, out_dir: str | os.PathLike, extra_manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every split as ``<split>_x.npy`` / ``<split>_y.npy``, ``indices.npz`` and ``manifest.json``.

    A split whose indices equal an earlier split's (``train`` = ``lt`` for a long-tailed run,
    ``one_percent`` = ``few_shot``) is not written twice: the manifest's ``arrays`` names the files
    each split reads. Returns the manifest (see :func:`write_manifest`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, dict[str, str]] = {}
    for name in SPLIT_NAMES:
        # test indexes the official test set, every other split the training set
        same = [w for w in arrays if (w == "test") == (name == "test") and w in splits.indices
                and name in splits.indices and np.array_equal(splits.indices[w], splits.indices[name])]
        if same:
            arrays[name] = arrays[same[0]]
            continue
        x, y = splits.get(name)
        fx, fy = split_files(name)
        save_npy(out / fx, x)
        save_npy(out / fy, np.asarray(y, dtype=np.int64))
        arrays[name] = {"x": fx, "y": fy}
    save_npz(out / INDICES_FILE, **{k: np.asarray(v, dtype=np.int64) for k, v in splits.indices.items()})
    return write_manifest(out, dataset=splits.dataset, class_names=splits.class_names,
                          class_order=splits.class_order, counts={n: splits.split_counts(n) for n in SPLIT_NAMES},
                          train_counts=splits.counts, lt_counts=splits.lt_counts, params=splits.params,
                          arrays=arrays, split_records=splits.split_files, extra_manifest=extra_manifest)


def write_manifest(out: Path, *, dataset: str, class_names, class_order, counts: dict[str, np.ndarray],
                   train_counts, lt_counts, params: dict[str, Any], arrays: dict[str, dict[str, str]],
                   split_records: dict[str, dict[str, str]], extra_manifest: dict[str, Any] | None,
                   sizes: dict[str, int] | None = None, extra_files: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Write ``manifest.json`` last (its presence means every file is complete): class names and
    order, per-split per-class counts and sizes, seeds, params, the files each split reads
    (``arrays``), the list files the split came from with their sha256 (``split_files``), and the
    sha256 of every array file; ``extra_manifest`` keys are added at top level (a key clashing
    with a built-in one raises).  ``sizes`` gives the size of a split without per-class counts
    (an unlabeled training split: ``train_counts`` / ``lt_counts`` are then None); ``extra_files``
    are further files of ``out`` hashed into ``files``."""
    files = {f: sha256_file(out / f) for f in sorted({f for a in arrays.values() for f in a.values()})}
    files[INDICES_FILE] = sha256_file(out / INDICES_FILE)
    for f in extra_files:
        files[f] = sha256_file(out / f)
    as_list = lambda c: None if c is None else np.asarray(c).tolist()  # noqa: E731
    manifest: dict[str, Any] = {
        "format": 2,
        "dataset": dataset,
        "split": params.get("split", "generated"),
        "split_files": split_records,
        "class_names": list(class_names),
        "class_order": np.asarray(class_order).tolist(),
        "counts": {name: np.asarray(c).tolist() for name, c in counts.items()},
        "train_counts": as_list(train_counts),
        "lt_counts": as_list(lt_counts),
        "sizes": {**{name: int(np.asarray(c).sum()) for name, c in counts.items()}, **(sizes or {})},
        "seeds": {"split_seed": params.get("split_seed")},
        "params": dict(params),
        "arrays": arrays,
        "files": files,
    }
    for key, value in (extra_manifest or {}).items():
        if key in manifest:
            raise UserError(f"extra_manifest key {key!r} clashes with a built-in manifest key")
        manifest[key] = value
    write_json(out / MANIFEST, manifest)
    return manifest


def load_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``out_dir/manifest.json`` (FileNotFoundError naming it if absent)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise MissingInputError(f"split manifest {path} not found (run the split stage first)")
    return read_json(path)


def verify_file(out_dir: str | os.PathLike, filename: str, manifest: dict[str, Any] | None = None) -> None:
    """Raise ValueError naming the file if its sha256 differs from the manifest."""
    manifest = load_manifest(out_dir) if manifest is None else manifest
    path = Path(out_dir) / filename
    expected = manifest["files"].get(filename)
    if expected is None:
        raise UserError(f"{path} is not listed in {Path(out_dir) / MANIFEST}")
    actual = sha256_file(path)
    if actual != expected:
        raise UserError(f"hash mismatch for {path}: {Path(out_dir) / MANIFEST} has sha256 {expected}, the file has "
                         f"{actual} (changed or corrupt since make-lt-dataset wrote it); restore it with "
                         f"`dvc checkout` or rebuild it with `dvc repro -f make-lt-dataset`")


def load_split(out_dir: str | os.PathLike, name: str, verify: bool = True) -> Split:
    """Split ``name`` as ``(x, y)``, both files checked against the manifest's sha256: ``x`` is a
    read-only memory map of the uint8 images (a paper-scale split is never read whole here),
    ``y`` the int64 labels."""
    manifest = load_manifest(out_dir)
    arrays = manifest.get("arrays", {})
    if name not in arrays or name not in SPLIT_NAMES:
        raise UserError(f"unknown split {name!r} in {out_dir}; known splits: {', '.join(arrays)}")
    if manifest.get("format") != 2:
        raise UserError(f"{Path(out_dir) / MANIFEST} has an older format; rebuild it with "
                        f"`dvc repro -f make-lt-dataset`")
    fx, fy = arrays[name]["x"], arrays[name]["y"]
    if verify:
        verify_file(out_dir, fx, manifest)
        verify_file(out_dir, fy, manifest)
    x = np.load(Path(out_dir) / fx, mmap_mode="r", allow_pickle=False)
    y = np.load(Path(out_dir) / fy, allow_pickle=False).astype(np.int64, copy=False)
    return x, y


def load_indices(out_dir: str | os.PathLike, verify: bool = True) -> dict[str, np.ndarray]:
    """Indices of every split into the raw train set (test: raw test set)."""
    if verify:
        verify_file(out_dir, INDICES_FILE)
    with np.load(Path(out_dir) / INDICES_FILE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}

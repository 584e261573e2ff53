"""CIFAR-10-LT / CIFAR-100-LT on SDCLR's published index lists (``data.split: community``).

The splits SDCLR published and COLT and KDUP (paper 003) reused, so that a run is comparable
row for row with their tables (``ltcl/data/lists/README.md`` for the files and what was checked).
Split ``k`` (``data.split_index``) of ``dataset``, every list in its own order:

* ``lt``: ``split{k}_D_i`` (the long-tailed pre-training set, 11,165 / 9,754 images);
* ``train``: ``lt``, or ``split{k}_D_b`` with ``subset: balanced-subset`` (11,160 / 9,700);
* ``val``: ``valIdxList`` (5,000);
* ``probe_full``: every training image not in val (45,000). On CIFAR-10 that is SDCLR's
  ``trainIdxList`` in its order; on CIFAR-100 ``trainIdxList`` is *not* the complement of val
  (1,117 D_i indices of split 1 lie outside it), so the complement in index order is used;
* ``few_shot`` and ``one_percent``: ``split{k}_S_b`` (450 / 400; SDCLR's 1% few-shot set);
* ``ms``: TASE's minimum sampling (tail count per class) drawn from ``lt`` by ``split_seed``,
  as for generated splits (no list exists);
* ``test``: the official test set.
"""

from __future__ import annotations

import numpy as np

from ltcl.data.lists import LISTS_DIR, cifar_index_files, file_record, read_index_list
from ltcl.data.sources import RawDataset
from ltcl.data.splits import Splits, _take, ms_indices, test_indices
from ltcl.errors import UserError


def community_splits(raw: RawDataset, *, split_index: int, subset: str, split_seed: int,
                     max_test_per_class: int | None = None) -> Splits:
    """The splits of SDCLR's split ``split_index`` of ``raw`` (cifar10 | cifar100; see module doc)."""
    dataset = raw.name
    files = cifar_index_files(dataset, split_index)
    n = len(raw.y_train)
    if n != 50_000:
        raise UserError(f"{dataset}: SDCLR's lists index the official 50,000 training images; this copy has {n}")
    idx = {role: read_index_list(path, n) for role, path in files.items()}
    y = np.asarray(raw.y_train, dtype=np.int64)
    num_classes = len(raw.class_names)
    for role in ("lt", "balanced", "few_shot"):
        overlap = np.intersect1d(idx[role], idx["val"]).size
        if overlap:
            raise UserError(f"{files[role]}: {overlap} indices are also in {files['val']}")
    lt_counts = np.bincount(y[idx["lt"]], minlength=num_classes)
    if (lt_counts == 0).any():
        raise UserError(f"{files['lt']}: classes {np.flatnonzero(lt_counts == 0).tolist()} have no image; "
                        f"is this {dataset}'s official training set in the python batches' order?")
    if dataset == "cifar10":
        probe = read_index_list(LISTS_DIR / "cifar10" / "trainIdxList.npy", n)
    else:
        probe = np.setdiff1d(np.arange(n), idx["val"])
    train = idx["lt"] if subset == "longtail" else idx["balanced"]
    ms, k_ms = ms_indices(idx["lt"], y, num_classes, split_seed)
    y_test = np.asarray(raw.y_test, dtype=np.int64)
    test = test_indices(y_test, num_classes, max_test_per_class, split_seed)
    x = raw.x_train
    indices = {"train": train, "probe_full": probe, "few_shot": idx["few_shot"], "val": idx["val"], "test": test,
               "ms": ms, "lt": idx["lt"], "one_percent": idx["few_shot"]}
    records = {role: file_record(path) for role, path in files.items()}
    if dataset == "cifar10":
        records["probe_full"] = file_record(LISTS_DIR / "cifar10" / "trainIdxList.npy")
    params = {
        "dataset": dataset, "split": "community", "split_index": int(split_index), "subset": subset,
        "split_seed": int(split_seed), "max_test_per_class": max_test_per_class, "ms_per_class": k_ms,
        "few_shot_per_class": int(np.bincount(y[idx["few_shot"]], minlength=num_classes).max()),
        "image_shape": list(x.shape[1:]),
    }
    order = np.argsort(-lt_counts, kind="stable")
    return Splits(
        dataset=dataset,
        **{name: _take(x, y, ix) for name, ix in indices.items() if name != "test"},
        test=_take(raw.x_test, y_test, test),
        counts=np.bincount(y[train], minlength=num_classes),
        lt_counts=lt_counts,
        class_order=order,
        class_names=list(raw.class_names),
        indices=indices,
        params=params,
        split_files=records,
    )

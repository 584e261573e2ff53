"""make-lt-dataset: the data source made long-tailed -> split files, manifest and dataset metrics.

Three ways to the splits, chosen by ``data.source`` and ``data.split``:

* generated (default): read the source, draw the long-tailed training split and the val /
  probe / few-shot / test splits from ``split_seed`` (``ltcl.data.splits``);
* community CIFAR (``cifar10``/``cifar100`` with ``split: community``): SDCLR's published index
  lists, split ``split_index`` (``ltcl.data.community``);
* list files (``source: list``): decode the listed images once into on-disk arrays
  (``ltcl.data.listdata``);
* an unlabeled collection (``source: images``), with an optional labeled evaluation set
  (``ltcl.data.collection``): every image is the training split, nothing drawn or held out.

A labeled source is cut to a long tail only where ``data.longtail`` says so (``auto``: the
benchmark sources, not a user's own folder / npz); what the draw leaves out of pre-training is
printed as a warning and recorded (manifest ``subsampling``, metrics ``unused_images``).
The manifest's ``labels`` / ``groups`` keys (docs/data-manifest.md) tell later stages which
labels are real.

Many/Medium/Few groups come from the long-tailed counts. Writes ``data/lt/`` (``<split>_x.npy``
/ ``<split>_y.npy`` + manifest.json, naming the list files and their sha256 for community
splits), ``image.json`` (the image shape, all ood-pool depends on), metrics/dataset.json and the
class-count table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ltcl.data.groups import class_groups
from ltcl.io import atomic_write, write_json

logger = logging.getLogger(__name__)

IMAGE_FILE = "image.json"  # data/lt/image.json: the ID images' shape (ood-pool's dependency)


def _extra_manifest(cfg, lt_counts: np.ndarray, image_shape, skipped: list[str]) -> dict:
    """The manifest keys of a labeled source (docs/data-manifest.md): real labels everywhere,
    groups from the long-tailed training split's counts."""
    groups = {rule: class_groups(lt_counts, rule).tolist() for rule in ("thirds", "thresholds")}
    return {"groups": groups[cfg.group_rule], "group_rule": cfg.group_rule, "groups_by_rule": groups,
            "group_counts": np.asarray(lt_counts).tolist(), "group_source": "long-tailed training split",
            "labels": {"train": True, "eval": True, "note": f"labels of the {cfg.source} source"},
            "source": cfg.source, "image_shape": list(image_shape), "skipped_images": skipped}


def subsampling_record(splits) -> dict | None:
    """What a long-tailed draw left out of pre-training (None when nothing was): the source's
    training images, those kept in the training split, those held out for val, and the rest,
    which only the probes see (probe_full)."""
    n_source = int(sum(len(v) for k, v in splits.indices.items() if k in ("probe_full", "val")))
    kept = int(len(splits.indices["train"]))
    held_out = int(len(splits.indices["val"]))
    unused = n_source - kept - held_out
    if unused == 0:
        return None
    p = splits.params
    if p.get("split") == "community":
        reason = (f"the community split's list (SDCLR's split {p['split_index']}, subset {p['subset']}) names the "
                  "pre-training images")
    else:
        reason = (f"long-tailed draw (data.longtail: draw or auto on a benchmark source): imbalance_ratio "
                  f"{p['imbalance_ratio']}, n_max {p['n_max']} (data.max_per_class {p['max_per_class']}), profile "
                  f"{p['profile']}, subset {p['subset']}")
    return {"source_images": n_source, "kept": kept, "held_out": held_out, "unused": unused, "reason": reason}


def split_name(cfg) -> str:
    """What the split is, for metrics and ``ltcl compare``: ``generated``, ``sdclr-<dataset>-split<k>``,
    a shipped list bundle's name, or ``user-lists``."""
    if cfg.split != "community":
        return "generated"
    if cfg.source == "list":
        return cfg.lists if isinstance(cfg.lists, str) else "user-lists"
    return f"sdclr-{cfg.source}-split{cfg.split_index}"


def build(cfg, out_dir: str | Path) -> dict:
    """Write the splits of ``cfg`` (DataParams) to ``out_dir``; returns the manifest."""
    if cfg.unlabeled:
        from ltcl.data.collection import build_collection

        return build_collection(cfg, out_dir)
    if cfg.source == "list":
        from ltcl.data.listdata import build_list_dataset

        return build_list_dataset(cfg, out_dir, lambda counts: _extra_manifest(
            cfg, counts, [cfg.image_size, cfg.image_size, 3], []))
    from ltcl.data.sources import load_source
    from ltcl.data.splits import make_splits, save_splits

    raw = load_source(cfg.source, root=cfg.root, download=cfg.download, image_size=cfg.image_size,
                      on_bad_image=cfg.on_bad_image)
    if cfg.split == "community":
        from ltcl.data.community import community_splits

        splits = community_splits(raw, split_index=cfg.split_index, subset=cfg.subset, split_seed=cfg.split_seed,
                                  max_test_per_class=cfg.max_test_per_class)
    else:
        splits = make_splits(raw, imbalance_ratio=cfg.imbalance_ratio, val_per_class=cfg.val_per_class,
                             max_per_class=cfg.max_per_class, profile=cfg.profile, pareto_min=cfg.pareto_min,
                             class_order=cfg.class_order, split_seed=cfg.split_seed,
                             few_shot_fraction=cfg.few_shot_fraction, subset=cfg.subset,
                             max_test_per_class=cfg.max_test_per_class, draw=cfg.draws_longtail)
    # Groups always come from the long-tailed counts (also for a balanced-subset run, so the
    # groups of D_b and D_l are the same classes and their accuracies can be subtracted).
    extra = _extra_manifest(cfg, splits.lt_counts, splits.train[0].shape[1:], list(raw.skipped or []))
    record = subsampling_record(splits)
    if record:
        extra["subsampling"] = record
        logger.warning(
            "make-lt-dataset: pre-training uses %d of the source's %d training images (%d held out for val; the "
            "other %d are left out of pre-training and used only by the full probe). Why: %s.%s",
            record["kept"], record["source_images"], record["held_out"], record["unused"], record["reason"],
            " To pre-train on every image of your own data set, set data.longtail: as-is."
            if cfg.source in ("folder", "npz") else "")
    return save_splits(splits, out_dir, extra_manifest=extra)


def run(params, out_dir: str | Path, metrics_path: str | Path, counts_csv: str | Path) -> dict:
    cfg = params.data
    manifest = build(cfg, out_dir)
    # what ood-pool reads: its own file, so that a new split of same-size images keeps the pool
    write_json(Path(out_dir) / IMAGE_FILE, {"image_shape": manifest["image_shape"]})
    labels = manifest["labels"]
    metrics = {
        "source": cfg.source,
        "split": manifest["split"],
        "split_name": split_name(cfg),
        "subset": cfg.subset,
        "train_labels": labels["train"],
        "eval_labels": labels["eval"],
        "num_classes": len(manifest["class_names"]),
        "image_shape": "x".join(str(s) for s in manifest["image_shape"]),
        "group_source": manifest["group_source"] or "none",
        "skipped_images": len(manifest["skipped_images"]),
        **{f"size_{k}": v for k, v in manifest["sizes"].items()},
    }
    if manifest["lt_counts"] is not None:  # the training split's own class counts
        lt_counts = np.asarray(manifest["lt_counts"])
        n_max, n_min = int(lt_counts.max()), int(lt_counts.min())
        metrics.update(imbalance_ratio=round(n_max / max(n_min, 1), 3), n_max=n_max, n_min=n_min)
    if manifest.get("subsampling"):
        metrics["unused_images"] = manifest["subsampling"]["unused"]
    write_json(metrics_path, metrics)
    write_class_counts(manifest, counts_csv)
    return manifest


def write_class_counts(manifest: dict, counts_csv: str | Path) -> None:
    """The class-count table (one row per class, largest group count first): the training split's
    counts where its labels are real, and the counts the groups come from; header only when the
    data set has no classes (an unlabeled collection without a labeled set)."""
    names = manifest["class_names"]
    group_counts = manifest.get("group_counts")
    key = np.asarray(group_counts if group_counts is not None else [0] * len(names))
    order = np.argsort(-key, kind="stable")
    train = manifest.get("train_counts")
    groups = manifest.get("groups")
    df = pd.DataFrame({
        "rank": np.arange(len(order), dtype=np.int64), "class": order.astype(np.int64),
        "name": [names[i] for i in order],
        "count": [train[i] for i in order] if train is not None else [None] * len(order),
        "lt_count": [group_counts[i] for i in order] if group_counts is not None else [None] * len(order),
        "group": [groups[i] for i in order] if groups else [None] * len(order),
    }, columns=["rank", "class", "name", "count", "lt_count", "group"])
    with atomic_write(counts_csv, "w") as fh:
        df.to_csv(fh, index=False)

"""make-lt-dataset: the data source made long-tailed -> split files, manifest and dataset metrics.

Three ways to the splits, chosen by ``data.source`` and ``data.split``:

* generated (default): read the source, draw the long-tailed training split and the val /
  probe / few-shot / test splits from ``split_seed`` (``ltcl.data.splits``);
* community CIFAR (``cifar10``/``cifar100`` with ``split: community``): SDCLR's published index
  lists, split ``split_index`` (``ltcl.data.community``);
* list files (``source: list``): decode the listed images once into on-disk arrays
  (``ltcl.data.listdata``).

Many/Medium/Few groups come from the long-tailed counts. Writes ``data/lt/`` (``<split>_x.npy``
/ ``<split>_y.npy`` + manifest.json, naming the list files and their sha256 for community
splits), ``image.json`` (the image shape, all ood-pool depends on), metrics/dataset.json and the
class-count table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ltcl.data.groups import class_groups
from ltcl.io import atomic_write, write_json

IMAGE_FILE = "image.json"  # data/lt/image.json: the ID images' shape (ood-pool's dependency)


def _extra_manifest(cfg, lt_counts: np.ndarray, image_shape, skipped: list[str]) -> dict:
    groups = {rule: class_groups(lt_counts, rule).tolist() for rule in ("thirds", "thresholds")}
    return {"groups": groups[cfg.group_rule], "group_rule": cfg.group_rule, "groups_by_rule": groups,
            "source": cfg.source, "image_shape": list(image_shape), "skipped_images": skipped}


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
                             max_test_per_class=cfg.max_test_per_class)
    # Groups always come from the long-tailed counts (also for a balanced-subset run, so the
    # groups of D_b and D_l are the same classes and their accuracies can be subtracted).
    skipped = list(getattr(raw, "skipped", []) or [])
    return save_splits(splits, out_dir, extra_manifest=_extra_manifest(
        cfg, splits.lt_counts, splits.train[0].shape[1:], skipped))


def run(params, out_dir: str | Path, metrics_path: str | Path, counts_csv: str | Path) -> dict:
    cfg = params.data
    manifest = build(cfg, out_dir)
    # what ood-pool reads: its own file, so that a new split of same-size images keeps the pool
    write_json(Path(out_dir) / IMAGE_FILE, {"image_shape": manifest["image_shape"]})
    lt_counts = np.asarray(manifest["lt_counts"])
    train_counts = np.asarray(manifest["train_counts"])
    n_max, n_min = int(lt_counts.max()), int(lt_counts.min())
    metrics = {
        "source": cfg.source,
        "split": manifest["split"],
        "split_name": split_name(cfg),
        "subset": cfg.subset,
        "num_classes": len(manifest["class_names"]),
        "image_shape": "x".join(str(s) for s in manifest["image_shape"]),
        "imbalance_ratio": round(n_max / max(n_min, 1), 3),
        "n_max": n_max,
        "n_min": n_min,
        "skipped_images": len(manifest["skipped_images"]),
        **{f"size_{k}": v for k, v in manifest["sizes"].items()},
    }
    write_json(metrics_path, metrics)
    order = np.argsort(-lt_counts, kind="stable")
    groups = manifest["groups"]
    df = pd.DataFrame({
        "rank": np.arange(len(order)), "class": order, "name": [manifest["class_names"][i] for i in order],
        "count": train_counts[order], "lt_count": lt_counts[order], "group": [groups[i] for i in order],
    })
    with atomic_write(counts_csv, "w") as fh:
        df.to_csv(fh, index=False)
    return manifest

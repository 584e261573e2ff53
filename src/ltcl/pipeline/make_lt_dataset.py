"""make-lt-dataset: the data source made long-tailed -> split files, manifest and dataset metrics.

Reads the source (``data.source``), draws the long-tailed training split and the val / probe /
few-shot / test splits (``ltcl.data.splits``), assigns Many/Medium/Few groups from the long-tailed
counts, and writes ``data/lt/`` (uint8 NHWC .npz per split + manifest.json), metrics/dataset.json
and the class-count table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ltcl.data.groups import class_groups
from ltcl.data.sources import load_source
from ltcl.data.splits import make_splits, save_splits
from ltcl.io import atomic_write, write_json


def run(params, out_dir: str | Path, metrics_path: str | Path, counts_csv: str | Path) -> dict:
    cfg = params.data
    raw = load_source(cfg.source, root=cfg.root, download=cfg.download, image_size=cfg.image_size,
                      on_bad_image=cfg.on_bad_image)
    splits = make_splits(raw, imbalance_ratio=cfg.imbalance_ratio, val_per_class=cfg.val_per_class,
                         max_per_class=cfg.max_per_class, profile=cfg.profile, pareto_min=cfg.pareto_min,
                         class_order=cfg.class_order, split_seed=cfg.split_seed,
                         few_shot_fraction=cfg.few_shot_fraction, subset=cfg.subset,
                         max_test_per_class=cfg.max_test_per_class)
    # Groups always come from the long-tailed counts (also for a balanced-subset run, so the
    # groups of D_b and D_l are the same classes and their accuracies can be subtracted).
    lt_counts = splits.lt_counts
    groups = {rule: class_groups(lt_counts, rule).tolist() for rule in ("thirds", "thresholds")}
    skipped = list(getattr(raw, "skipped", []) or [])
    manifest = save_splits(splits, out_dir, extra_manifest={
        "groups": groups[cfg.group_rule], "group_rule": cfg.group_rule, "groups_by_rule": groups,
        "source": cfg.source, "image_shape": list(splits.train[0].shape[1:]), "skipped_images": skipped,
    })
    x_train = splits.train[0]
    n_max, n_min = int(lt_counts.max()), int(lt_counts.min())
    metrics = {
        "source": cfg.source,
        "subset": cfg.subset,
        "num_classes": splits.num_classes,
        "image_shape": "x".join(str(s) for s in x_train.shape[1:]),
        "imbalance_ratio": round(n_max / max(n_min, 1), 3),
        "n_max": n_max,
        "n_min": n_min,
        "skipped_images": len(skipped),
        **{f"size_{k}": v for k, v in manifest["sizes"].items()},
    }
    write_json(metrics_path, metrics)
    order = np.argsort(-lt_counts, kind="stable")
    df = pd.DataFrame({
        "rank": np.arange(len(order)), "class": order, "name": [splits.class_names[i] for i in order],
        "count": splits.counts[order], "lt_count": lt_counts[order],
        "group": [groups[cfg.group_rule][i] for i in order],
    })
    with atomic_write(counts_csv, "w") as fh:
        df.to_csv(fh, index=False)
    return manifest

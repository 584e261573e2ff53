"""cluster@<encoder>: how well the frozen features separate the classes (paper 003 Table 4,
Fig. 3; paper 001 Sec. 4 geometry), on the balanced test split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltcl.data.splits import load_split
from ltcl.eval.cluster_metrics import cluster_metrics, tsne_embedding
from ltcl.eval.geometry import class_geometry
from ltcl.eval.protocols import encoder_features, load_frozen
from ltcl.io import atomic_write, write_json


def run(params, ckpt_path, lt_dir, metrics_path, tsne_path) -> dict:
    cfg = params.cluster
    model, spec, manifest, device, amp = load_frozen(params, ckpt_path, lt_dir)
    x, y = load_split(lt_dir, "test")
    feats = encoder_features(model, spec, x, device, amp).numpy()
    num_classes = len(manifest["class_names"])
    groups = np.asarray(manifest["groups"])
    metrics = cluster_metrics(feats, y, num_classes, seed=cfg.seed, l2_normalize=cfg.l2_normalize)
    metrics["geometry"] = class_geometry(feats, y, groups)
    idx, coords = tsne_embedding(feats, n_max=cfg.tsne_samples, seed=cfg.seed, labels=y)
    write_json(metrics_path, metrics)
    df = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "label": y[idx], "group": groups[y[idx]]})
    with atomic_write(tsne_path, "w") as fh:
        df.to_csv(fh, index=False, float_format="%.4f")
    return metrics

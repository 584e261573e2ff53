"""Evaluate one frozen encoder with the linear-probe protocols and kNN (SDCLR/KDUP Sec. 4.1).

Features are the backbone's pooled output (before the projection head), extracted once per
split without augmentation; every protocol then trains a linear classifier on them, picks
the best epoch on ``val`` and reports on the balanced ``test`` split, per Many/Medium/Few
group of the long-tailed split's class counts.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import torch

from ltcl.data.groups import accuracy_report, class_groups
from ltcl.eval.features import extract_features
from ltcl.eval.knn import knn_predict
from ltcl.eval.probe import train_linear_probe

# protocol name -> split that trains the probe
PROTOCOL_SPLITS = {"full": "probe_full", "few_shot": "few_shot", "ms": "ms", "lt": "lt",
                   "one_percent": "one_percent"}


def encoder_features(model, spec: dict, x: np.ndarray, device: torch.device, amp: bool,
                     batch_size: int = 1024) -> torch.Tensor:
    return extract_features(model.features, x, batch_size=batch_size, device=device,
                            mean=spec["mean"], std=spec["std"], amp=amp)


def evaluate_features(feats: dict[str, torch.Tensor], labels: dict[str, np.ndarray], train_counts,
                      num_classes: int, cfg, rule: str, protocols: Iterable[str],
                      device: torch.device | str = "cpu") -> tuple[dict, pd.DataFrame]:
    """Metrics dict (``full.many`` ... ``knn.k10``) and a per-class accuracy table."""
    metrics: dict[str, dict] = {}
    per_class = pd.DataFrame({"class": np.arange(num_classes), "train_count": np.asarray(train_counts),
                              "group": class_groups(train_counts, rule)})
    test_x, test_y = feats["test"], labels["test"]
    for proto in protocols:
        split = PROTOCOL_SPLITS[proto]
        few = proto != "full"
        res = train_linear_probe(
            feats[split], labels[split], feats["val"], labels["val"], test_x, test_y, num_classes,
            epochs=cfg.few_shot_epochs if few else cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
            weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
            milestones=tuple(cfg.few_shot_milestones if few else cfg.milestones), seed=cfg.seed,
            feature_norm=cfg.feature_norm, device=device,
        )
        rep = accuracy_report(test_y, res.test_pred, train_counts, num_classes, rule)
        per_class[proto] = rep.pop("per_class")
        metrics[proto] = {**rep, "best_epoch": res.best_epoch, "val": res.best_val_acc}
    knn = {}
    for k in cfg.knn_k:
        k_eff = min(k, len(labels["probe_full"]))
        pred = knn_predict(feats["probe_full"], labels["probe_full"], test_x, k_eff, num_classes)
        rep = accuracy_report(test_y, pred, train_counts, num_classes, rule)
        per_class[f"knn{k}"] = rep.pop("per_class")
        knn[f"k{k}"] = rep["all"]
        knn[f"k{k}_few"] = rep["few"]
    metrics["knn"] = knn
    return metrics, per_class


def load_frozen(params, ckpt_path, lt_dir):
    """(encoder in eval mode, its spec, the split manifest, device, amp on?) for an evaluation stage.

    ltcl's own encoders (f, g) are checked against the ``model`` params; an imported external
    encoder (``ext-<name>.pt``) declares its own architecture and is checked against the images only."""
    from pathlib import Path

    from ltcl.data.splits import load_manifest
    from ltcl.models.checkpoint import load_encoder
    from ltcl.runtime import amp_dtype_for, resolve_device

    device = resolve_device(params.runtime.device)
    amp = amp_dtype_for(device, params.runtime.amp) is not None
    manifest = load_manifest(lt_dir)
    model_cfg = None if Path(ckpt_path).name.startswith("ext-") else params.model
    model, spec, _ = load_encoder(ckpt_path, device, model_cfg=model_cfg, image_shape=manifest.get("image_shape"))
    return model, spec, manifest, device, amp

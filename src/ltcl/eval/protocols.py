"""Evaluate one frozen representation with the linear-probe protocols and kNN (SDCLR/KDUP Sec. 4.1).

Features are the backbone's pooled output (before the projection head), extracted once per
split without augmentation (or, for the reference rows, the standardised pixels); every protocol
then trains a linear classifier on them, picks the best epoch on ``val`` and reports on the
balanced ``test`` split, per Many/Medium/Few group of the manifest's ``group_counts``.  The record
goes to ``<encoder>_details.json``, its headline (:func:`probe_headline`) to the DVC metrics file.

Which labels are real decides what runs (docs/data-manifest.md, :func:`ltcl.data.groups.label_facts`):
without evaluation labels nothing is trained and the details say why (:func:`absent_metrics`; no headline);
without training-split labels the protocols that train on them (``lt``, ``ms``) are skipped with
their reason; without groups the accuracies are All and per class only.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from ltcl.data.groups import GROUP_NAMES, LabelFacts, accuracy_report, class_groups
from ltcl.models.features import extract_features
from ltcl.eval.knn import knn_predict
from ltcl.eval.probe import train_linear_probe

# protocol name -> split that trains the probe
PROTOCOL_SPLITS = {"full": "probe_full", "few_shot": "few_shot", "ms": "ms", "lt": "lt",
                   "one_percent": "one_percent"}
# the protocols whose probe trains on the long-tailed split's labels (``ms`` is drawn from it)
TRAIN_LABEL_PROTOCOLS = ("lt", "ms")
# a protocol's headline accuracies, in the papers' column order
HEADLINE_GROUP_KEYS = (*GROUP_NAMES, "std", "all")

NO_EVAL_LABELS = ("no labeled evaluation set: the split has no real class labels for val / test / probe_full "
                  "(labels.eval is false in data/lt/manifest.json), so no accuracy can be measured. To get "
                  "accuracies, set data.labeled to a labeled set (a folder of class sub-folders, or train / test "
                  "folders, or list files) and rerun make-lt-dataset")


def encoder_features(model, spec: dict, x: np.ndarray, device: torch.device, amp: bool,
                     batch_size: int = 1024) -> torch.Tensor:
    return extract_features(model.features, x, batch_size=batch_size, device=device,
                            mean=spec["mean"], std=spec["std"], amp=amp)


def absent_metrics(facts: LabelFacts) -> dict:
    """The probe metrics of a split without evaluation labels: why accuracy is absent."""
    reason = NO_EVAL_LABELS + (f" ({facts.note})" if facts.note else "")
    return {"labels": "absent", "reason": reason, "group_source": None}


def runnable_protocols(facts: LabelFacts, requested: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """(the requested protocols that can run, {skipped protocol: why}): ``lt`` and ``ms`` train on
    the long-tailed split's labels and are skipped when those are not real (``labels.train`` false)."""
    run, skipped = [], {}
    for proto in requested:
        if proto in TRAIN_LABEL_PROTOCOLS and not facts.train:
            skipped[proto] = (f"the {proto} protocol trains its probe on the long-tailed training split's labels, "
                              "and that split has none (labels.train is false: an unlabeled collection); "
                              f"remove {proto} from probe.protocols")
        else:
            run.append(proto)
    return run, skipped


def per_class_columns(protocols: Iterable[str], knn_k: Iterable[int]) -> list[str]:
    """The columns of a probe's per-class CSV (without the group column, present only with groups)."""
    return ["class", "name", "train_count", *protocols, *(f"knn{k}" for k in knn_k)]


def evaluate_features(feats: dict[str, torch.Tensor], labels: dict[str, np.ndarray], group_counts,
                      num_classes: int, cfg, rule: str, protocols: Iterable[str],
                      device: torch.device | str = "cpu", *, train_counts) -> tuple[dict, pd.DataFrame]:
    """Metrics dict (``full.many`` ... ``knn.k10``) and a per-class accuracy table.

    ``group_counts`` define the Many / Medium / Few groups (``rule``); ``None``: no groups, and no
    group key (``many`` ... ``std``, ``knn.k<k>_few``) is written at all. ``train_counts`` fill the
    table's ``train_count`` column (the long-tailed split's counts; ``None`` when its labels are
    not real: the column is then empty)."""
    metrics: dict[str, dict] = {}
    counts = np.full(num_classes, np.nan) if train_counts is None else np.asarray(train_counts)
    per_class = pd.DataFrame({"class": np.arange(num_classes), "train_count": counts})
    if group_counts is not None:
        per_class["group"] = class_groups(group_counts, rule)
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
        rep = accuracy_report(test_y, res.test_pred, group_counts, num_classes, rule)
        per_class[proto] = rep.pop("per_class")
        metrics[proto] = {**rep, "best_epoch": res.best_epoch, "val": res.best_val_acc}
    knn = {}
    for k in cfg.knn_k:
        k_eff = min(k, len(labels["probe_full"]))
        pred = knn_predict(feats["probe_full"], labels["probe_full"], test_x, k_eff, num_classes)
        rep = accuracy_report(test_y, pred, group_counts, num_classes, rule)
        per_class[f"knn{k}"] = rep.pop("per_class")
        knn[f"k{k}"] = rep["all"]
        if group_counts is not None:
            knn[f"k{k}_few"] = rep["few"]
    metrics["knn"] = knn
    return metrics, per_class


def probe_representation(featurize: Callable[[np.ndarray], torch.Tensor], lt_dir, manifest: dict,
                         facts: LabelFacts, cfg, rule: str, device) -> tuple[dict, pd.DataFrame]:
    """Every runnable protocol of ``cfg.protocols`` and kNN on the features ``featurize`` gives each
    split's uint8 images: the one path the encoders and the reference rows share. The metrics record
    the groups' source (``group_source``, None without groups) and any skipped protocol's reason."""
    from ltcl.data.splits import load_split

    protocols, skipped = runnable_protocols(facts, cfg.protocols)
    feats, labels = {}, {}
    for split in sorted({"val", "test", "probe_full"} | {PROTOCOL_SPLITS[p] for p in protocols}):
        x, y = load_split(lt_dir, split)
        feats[split] = featurize(x)
        labels[split] = y
    metrics, per_class = evaluate_features(feats, labels, facts.group_counts, len(manifest["class_names"]), cfg,
                                           rule, protocols, device,
                                           train_counts=manifest.get("lt_counts") if facts.train else None)
    per_class.insert(1, "name", manifest["class_names"])
    metrics["group_source"] = facts.group_source
    if skipped:
        metrics["skipped"] = skipped
    return metrics, per_class


def probe_headline(metrics: dict) -> dict:
    """The headline of a probe record (``metrics/probe/<encoder>.json``, a DVC metric): per protocol
    run, in :data:`PROTOCOL_SPLITS` order, its Many, Medium, Few, STD and All (the keys present:
    All alone without groups), then ``knn``: the kNN All at each ``probe.knn_k`` (``k1``, ``k10``), by k.
    Nothing else (best epoch, val accuracy, kNN on Few, the groups' source, a skipped protocol's
    reason: the details file); a record without evaluation labels has none: ``{}``."""
    out = {proto: {k: metrics[proto][k] for k in HEADLINE_GROUP_KEYS if k in metrics[proto]}
           for proto in PROTOCOL_SPLITS if isinstance(metrics.get(proto), dict)}
    knn = {k: v for k, v in (metrics.get("knn") or {}).items() if k[1:].isdigit()}  # k<k>, not k<k>_few
    if knn:
        out["knn"] = dict(sorted(knn.items(), key=lambda kv: int(kv[0][1:])))
    return out


def write_probe_outputs(metrics: dict, per_class: pd.DataFrame, metrics_path, per_class_path) -> None:
    """The probe stage's files: the headline metrics JSON (:func:`probe_headline`: the protocols in
    :data:`PROTOCOL_SPLITS` order, then kNN; ``dvc exp show`` makes its columns in file order, so
    ``full.many`` leads), the whole record beside it (``<encoder>_details.json``,
    :func:`ltcl.headline.write_metrics`) and the per-class CSV."""
    from ltcl.headline import write_metrics
    from ltcl.io import atomic_write

    write_metrics(metrics_path, metrics, probe_headline(metrics))
    with atomic_write(per_class_path, "w") as fh:
        per_class.to_csv(fh, index=False, float_format="%.4f")


def write_absent_outputs(facts: LabelFacts, cfg, metrics_path, per_class_path) -> dict:
    """Without evaluation labels: the metrics that say why accuracy is absent and a per-class CSV with
    its header only (no class has a measured accuracy)."""
    metrics = absent_metrics(facts)
    protocols, _ = runnable_protocols(facts, cfg.protocols)
    write_probe_outputs(metrics, pd.DataFrame(columns=per_class_columns(protocols, cfg.knn_k)),
                        metrics_path, per_class_path)
    return metrics


def eval_device(params) -> tuple[torch.device, bool]:
    """(device, bf16 autocast on?) of an evaluation stage, from the ``runtime`` params."""
    from ltcl.runtime import amp_dtype_for, resolve_device

    device = resolve_device(params.runtime.device)
    return device, amp_dtype_for(device, params.runtime.amp) is not None


def load_frozen(params, ckpt_path, lt_dir):
    """(encoder in eval mode, its spec, the split manifest, device, amp on?) for an evaluation stage.

    ltcl's own encoders (f, g) are checked against the ``model`` params; an imported external
    encoder (``ext-<name>.pt``) declares its own architecture and is checked against the images only."""
    from pathlib import Path

    from ltcl.data.splits import load_manifest
    from ltcl.models.checkpoint import load_encoder

    device, amp = eval_device(params)
    manifest = load_manifest(lt_dir)
    model_cfg = None if Path(ckpt_path).name.startswith("ext-") else params.model
    model, spec, _ = load_encoder(ckpt_path, device, model_cfg=model_cfg, image_shape=manifest.get("image_shape"))
    return model, spec, manifest, device, amp

"""linear-probe@<encoder>: the frozen encoder (f = pretrain, g = distill) under the linear-probe
protocols and kNN (SDCLR / KDUP Sec. 4.1), per Many/Medium/Few group of the long-tailed split.

Features are the backbone's pooled output, extracted once per split without augmentation; each
protocol in ``probe.protocols`` trains a linear classifier on its split (``ltcl.eval.protocols``).
"""

from __future__ import annotations

from ltcl.data.splits import load_split
from ltcl.eval.protocols import PROTOCOL_SPLITS, encoder_features, evaluate_features, load_frozen
from ltcl.io import atomic_write, write_json


def run(params, ckpt_path, lt_dir, metrics_path, per_class_path) -> dict:
    """Evaluate the encoder at ``ckpt_path`` on every protocol in ``params.probe``."""
    cfg = params.probe
    model, spec, manifest, device, amp = load_frozen(params, ckpt_path, lt_dir)
    needed = {"val", "test", "probe_full"} | {PROTOCOL_SPLITS[p] for p in cfg.protocols}
    feats, labels = {}, {}
    for split in sorted(needed):
        x, y = load_split(lt_dir, split)
        feats[split] = encoder_features(model, spec, x, device, amp)
        labels[split] = y
    counts = manifest["lt_counts"]
    num_classes = len(manifest["class_names"])
    metrics, per_class = evaluate_features(feats, labels, counts, num_classes, cfg,
                                           params.data.group_rule, cfg.protocols, device)
    per_class.insert(1, "name", manifest["class_names"])
    write_json(metrics_path, metrics)
    with atomic_write(per_class_path, "w") as fh:
        per_class.to_csv(fh, index=False, float_format="%.4f")
    return metrics

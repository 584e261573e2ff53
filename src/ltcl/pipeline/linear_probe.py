"""linear-probe@<encoder>: the frozen encoder (f = pretrain, g = distill) under the linear-probe
protocols and kNN (SDCLR / KDUP Sec. 4.1), per Many/Medium/Few group of the manifest's
``group_counts`` (the long-tailed split's class counts for the benchmark sources).

Features are the backbone's pooled output, extracted once per split without augmentation; each
protocol in ``probe.protocols`` trains a linear classifier on its split (``ltcl.eval.protocols``).
The headline (Many ... All per protocol, kNN) goes to metrics/probe/<encoder>.json, the DVC metric;
everything (best epoch, val accuracy, kNN on Few, ...) to metrics/probe/<encoder>_details.json.
Without a labeled evaluation set (``labels.eval`` false in the manifest) nothing is trained: the
details say why accuracy is absent, the headline is empty and the per-class CSV has its header only.
"""

from __future__ import annotations

from ltcl.data.groups import label_facts
from ltcl.data.splits import load_manifest
from ltcl.eval.protocols import encoder_features, load_frozen, probe_representation, write_absent_outputs, \
    write_probe_outputs


def run(params, ckpt_path, lt_dir, metrics_path, per_class_path) -> dict:
    """Evaluate the encoder at ``ckpt_path`` on every protocol in ``params.probe``."""
    cfg = params.probe
    facts = label_facts(load_manifest(lt_dir))
    if not facts.eval:
        return write_absent_outputs(facts, cfg, metrics_path, per_class_path)
    model, spec, manifest, device, amp = load_frozen(params, ckpt_path, lt_dir)
    metrics, per_class = probe_representation(lambda x: encoder_features(model, spec, x, device, amp), lt_dir,
                                              manifest, facts, cfg, params.data.group_rule, device)
    write_probe_outputs(metrics, per_class, metrics_path, per_class_path)
    return metrics

"""reference-probe-<pixels | random>: the reference rows of every probe table, on the same splits with
the same protocols, probe params and kNN as linear-probe@<encoder> (``ltcl.eval.reference``).

Writes metrics/probe/ref-<reference>.json (the headline), ref-<reference>_details.json and the per-class
CSV in an encoder's probe schema, the details plus ``reference`` and ``feature_dim``. Without a labeled
evaluation set it writes the same "absent" metrics as the probe stage.
"""

from __future__ import annotations

from ltcl.data.groups import label_facts
from ltcl.data.splits import load_manifest, load_split
from ltcl.errors import UserError
from ltcl.eval.protocols import encoder_features, eval_device, probe_representation, write_absent_outputs, \
    write_probe_outputs
from ltcl.eval.reference import REFERENCES, pixel_features, pixel_stats, random_encoder


def run(params, reference: str, lt_dir, metrics_path, per_class_path) -> dict:
    """Probe the ``reference`` representation (``pixels`` | ``random``) as an encoder is probed."""
    if reference not in REFERENCES:
        raise UserError(f"unknown reference {reference!r}; known: {', '.join(REFERENCES)}")
    cfg = params.probe
    manifest = load_manifest(lt_dir)
    facts = label_facts(manifest)
    if not facts.eval:
        return write_absent_outputs(facts, cfg, metrics_path, per_class_path)
    device, amp = eval_device(params)
    if reference == "pixels":
        mean, std = pixel_stats(load_split(lt_dir, "probe_full")[0])
        featurize = lambda x: pixel_features(x, mean, std)  # noqa: E731
        dim = mean.size
    else:
        model, spec = random_encoder(params.model, load_split(lt_dir, "train")[0], params.pretrain.seed)
        model = model.to(device)
        featurize = lambda x: encoder_features(model, spec, x, device, amp)  # noqa: E731
        dim = model.feature_dim
    metrics, per_class = probe_representation(featurize, lt_dir, manifest, facts, cfg, params.data.group_rule,
                                              device)
    metrics.update(reference=reference, feature_dim=int(dim))
    write_probe_outputs(metrics, per_class, metrics_path, per_class_path)
    return metrics

"""export@<encoder>: a trained encoder as files that leave the pipeline.

Writes ``export/<encoder>/``:

* ``encoder.safetensors``: the backbone only (no projection head, no pruning state), keyed as
  torchvision's ResNet keys its weights (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...,
  no ``fc``), loadable with ``load_state_dict(strict=True)`` (:mod:`ltcl.models.export`); the
  header (``ltcl_spec``) holds the architecture, input size and normalisation, so ``ltcl embed``
  rebuilds the encoder from the export alone;
* ``model_card.json`` and ``model_card.md``: the method (from the stages' metrics) and the params
  the training stage stored in the checkpoint, the data set (source,
  split, the split manifest's sha256), the probe metrics of this encoder beside the two reference
  rows (raw pixels, a random-init encoder) and how far it is above them, the code version, the
  whole preprocessing of an image file (decode, resize, channel conversion, normalisation), which
  layers differ from torchvision's ResNet, and code that loads the weights and embeds image files
  without ltcl installed (its first line names the packages it imports).

Nothing in these files depends on the host or the time of the run (the metrics files it reads hold
no timings, and the stage's run card goes to runs/export-<encoder>.json), so re-exporting the same
checkpoint gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import ltcl
from ltcl.headline import details_path
from ltcl.io import read_json, sha256_file, write_json, write_text
from ltcl.models.checkpoint import load_encoder
from ltcl.models.export import (CARD_JSON, WEIGHTS, export_metadata, layer_differences, load_snippet, preprocessing,
                                save_backbone)
from ltcl.models.resnet import resolve_stem

ROLE = {"pretrain": "f, the pre-trained encoder (paper 003 Sec. 3.1)",
        "distill": "g, the distilled encoder (paper 003 Sec. 3.2)"}


def method_name(pre: dict, dist: dict | None) -> str:
    """The method as the papers name it, from the stages' metrics: pre-training method and OOD
    strategy (``metrics/pretrain.json``), and for g the distillation (``metrics/distill.json``)."""
    name = str(pre.get("method", "?"))
    if pre.get("ood_strategy", "none") != "none":
        name += f", OOD sampling {pre['ood_strategy']}"
    if dist is not None:
        name += f", distilled ({dist.get('method', '?')})" if dist.get("enabled", True) else ", no distillation (g = f)"
    return name


# the reference rows: their probe records are metrics/probe/<name>_details.json (ltcl.headline)
REFERENCES = {"raw pixels": "ref-pixels", "random-init encoder": "ref-random"}
GROUP_KEYS = ("many", "medium", "few", "all")


def _accuracies(metrics: dict) -> dict:
    """protocol -> its accuracies (the group keys present, All, kNN@k) of a probe metrics file,
    or ``{"absent": reason}`` when the data set has no labeled evaluation set."""
    if metrics.get("labels") == "absent":
        return {"absent": metrics.get("reason", "no labeled evaluation set")}
    return dict(metrics)


def reference_gaps(probe: dict, refs: dict[str, dict]) -> dict:
    """protocol -> {reference: this encoder's All minus the reference's All} (percentage points),
    for every protocol both measured: how far the encoder is above raw pixels and a random init."""
    out: dict = {}
    for proto, m in probe.items():
        if not isinstance(m, dict) or "all" not in m:
            continue
        gaps = {name: round(float(m["all"]) - float(r[proto]["all"]), 2) for name, r in refs.items()
                if isinstance(r.get(proto), dict) and "all" in r[proto]}
        if gaps:
            out[proto] = gaps
    return out


def card(encoder: str, spec: dict, ckpt: dict, lt_dir: Path, probe: dict, pre: dict, dist: dict | None,
         ckpt_sha: str, feature_dim: int, refs: dict[str, dict] | None = None) -> dict:
    manifest_path = lt_dir / "manifest.json"
    manifest = read_json(manifest_path)
    labels = manifest.get("labels") or {"train": True, "eval": True}
    refs = {name: _accuracies(r) for name, r in (refs or {}).items()}
    acc = _accuracies(probe)
    return {
        "encoder": encoder,
        "role": ROLE.get(encoder, encoder),
        "method": method_name(pre, dist),
        "weights": WEIGHTS,
        "architecture": {**{k: spec[k] for k in ("backbone", "width", "channels", "image_size")},
                         "stem": resolve_stem(spec["stem"], spec["image_size"])},
        "input": preprocessing(spec),
        "feature_dim": feature_dim,
        "layers_differing_from_torchvision": layer_differences(spec),
        "data": {"source": manifest.get("source", manifest.get("dataset")), "split": manifest.get("split", "generated"),
                 "split_files": manifest.get("split_files", {}),
                 "classes": len(manifest["class_names"]) if labels.get("eval", True) else None,
                 "training_labels": bool(labels.get("train", True)), "group_source": manifest.get("group_source"),
                 "train_images": manifest["sizes"]["train"], "manifest_sha256": sha256_file(manifest_path)},
        "probe": acc,
        "reference_probes": refs,
        "above_references": reference_gaps(acc, refs),
        "params": ckpt.get("params", {}),  # the sections the training stage stored in its checkpoint
        "code": {"ltcl": ltcl.__version__, "checkpoint_sha256": ckpt_sha},
    }


def probe_markdown(c: dict) -> str:
    """The card's probe table: this encoder's rows and the reference rows, with the group columns
    only where groups exist; the reason instead where no labeled evaluation set exists."""
    if "absent" in c["probe"]:
        return f"No accuracy: {c['probe']['absent']}."
    protos = [p for p, m in c["probe"].items() if isinstance(m, dict) and "all" in m]
    if not protos:
        return "(no probe metrics)"
    keys = [k for k in GROUP_KEYS if any(k in c["probe"][p] for p in protos)]
    head = "| protocol | row | " + " | ".join(k.title() for k in keys) + " |\n|---|---|" + "---|" * len(keys)
    lines = []
    for proto in protos:
        rows = [(c["encoder"], c["probe"][proto])] + [
            (f"{name} (reference)", r[proto]) for name, r in c.get("reference_probes", {}).items()
            if isinstance(r.get(proto), dict)]
        for name, m in rows:
            lines.append(f"| {proto} | {name} | " + " | ".join(
                f"{m[k]:.2f}" if isinstance(m.get(k), (int, float)) else "-" for k in keys) + " |")
    gaps = c.get("above_references", {})
    said = "; ".join(f"{proto}: " + ", ".join(f"{'+' if g >= 0 else ''}{g:.2f} over {name}" for name, g in d.items())
                     for proto, d in gaps.items())
    below = sorted({name for d in gaps.values() for name, g in d.items() if g < 0})
    verdict = (f"\n\nAll, in points: {said}." if said else "") + (
        f" **Below {' and '.join(below)}: this encoder is not worth using over them on this data.**" if below else "")
    return head + "\n" + "\n".join(lines) + verdict


def markdown(c: dict, snippet: str) -> str:
    probe = probe_markdown(c)
    arch = c["architecture"]
    diffs = "\n".join(f"- {d}" for d in c["layers_differing_from_torchvision"])
    return f"""# Model card: {c['encoder']} ({c['method']})

{c['role']}, trained by ltcl {c['code']['ltcl']}.

- Architecture: {arch['backbone']}, width {arch['width']:g}, {arch['stem']} stem, {arch['channels']} input
  channel(s), {c['feature_dim']}-d pooled features (backbone only: no projection head, no classifier).
- Input: {c['input']['layout']}; mean {c['input']['mean']}, std {c['input']['std']} (see Preprocessing).
- Data: {c['data']['source']}, split {c['data']['split']}, {data_classes(c['data'])},
  {c['data']['train_images']} training images{'' if c['data']['training_labels'] else ' (unlabeled)'}; split manifest
  sha256 {c['data']['manifest_sha256']}.
- Weights: `{c['weights']}` (safetensors, torchvision's ResNet key layout);
  ltcl checkpoint sha256 {c['code']['checkpoint_sha256']}.

## Linear probe of this encoder (test accuracy, %)

{probe}

## How it differs from torchvision's ResNet

{diffs}

## Preprocessing

An image file becomes the encoder's input as `ltcl embed --images` makes it (the data stage
decodes and resizes image files the same way), in this order:

1. Decode: {c['input']['decode']}.
2. Resize: {c['input']['resize']}.
3. Channels: {c['input']['channel_conversion']}.
4. Scale: {c['input']['scale']}; mean {c['input']['mean']}, std {c['input']['std']}.

The result is {c['input']['layout']}.

## Load it and embed image files without ltcl

Run from this folder (it opens `{c['weights']}` by name). `embed(paths)` gives the features
`ltcl embed --images` writes for the same files, to float32 rounding (ltcl's tests: within 1e-5).
`ltcl embed --encoder <this folder>/{c['weights']}` reads this export directly (backbone features
only: the projection head is not exported).

```python
{snippet.rstrip()}
```

The full parameters are in `model_card.json`.
"""


def data_classes(d: dict) -> str:
    if d.get("classes") is None:
        return "no labeled evaluation set"
    groups = d.get("group_source")
    return f"{d['classes']} classes (Many / Medium / Few from the {groups})" if groups else \
        f"{d['classes']} classes (no Many / Medium / Few groups)"


def run(encoder: str, ckpt_path: str | Path, probe_path: str | Path, metrics_dir: str | Path, lt_dir: str | Path,
        out_dir: str | Path) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, spec, ckpt = load_encoder(ckpt_path, "cpu")
    probe = read_json(probe_path) if Path(probe_path).is_file() else {}
    pre = read_json(Path(metrics_dir) / "pretrain.json")
    dist = read_json(Path(metrics_dir) / "distill.json") if encoder == "distill" else None
    ref_files = {name: details_path(Path(metrics_dir) / "probe" / f"{f}.json") for name, f in REFERENCES.items()}
    refs = {name: read_json(p) for name, p in ref_files.items() if p.is_file()}
    c = card(encoder, spec, ckpt, Path(lt_dir), probe, pre, dist, sha256_file(ckpt_path), model.feature_dim, refs)
    meta = {**export_metadata(spec), "encoder": encoder, "method": c["method"]}
    save_backbone(out / WEIGHTS, model, meta)
    c["weights_sha256"] = sha256_file(out / WEIGHTS)
    write_json(out / CARD_JSON, c)
    write_text(out / "model_card.md", markdown(c, load_snippet(spec, WEIGHTS)))
    return c

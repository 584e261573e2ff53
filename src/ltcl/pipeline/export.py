"""export@<encoder>: a trained encoder as files that leave the pipeline.

Writes ``export/<encoder>/``:

* ``encoder.safetensors``: the backbone only (no projection head, no pruning state), keyed as
  torchvision's ResNet keys its weights (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...,
  no ``fc``), loadable with ``load_state_dict(strict=True)`` (:mod:`ltcl.models.export`); the
  header holds the input size and normalisation;
* ``model_card.json`` and ``model_card.md``: the method (from the stages' metrics) and the params
  the training stage stored in the checkpoint, the data set (source,
  split, the split manifest's sha256), the probe metrics of this encoder, the code version, the
  input size and normalisation, which layers differ from torchvision's ResNet, and the lines of
  plain torch that load the weights without ltcl installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import ltcl
from ltcl.io import read_json, sha256_file, write_json, write_text
from ltcl.models.checkpoint import load_encoder
from ltcl.models.export import layer_differences, load_snippet, save_backbone
from ltcl.models.resnet import resolve_stem

WEIGHTS = "encoder.safetensors"
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


def card(encoder: str, spec: dict, ckpt: dict, lt_dir: Path, probe: dict, pre: dict, dist: dict | None,
         ckpt_sha: str, feature_dim: int) -> dict:
    manifest_path = lt_dir / "manifest.json"
    manifest = read_json(manifest_path)
    return {
        "encoder": encoder,
        "role": ROLE.get(encoder, encoder),
        "method": method_name(pre, dist),
        "weights": WEIGHTS,
        "architecture": {**{k: spec[k] for k in ("backbone", "width", "channels", "image_size")},
                         "stem": resolve_stem(spec["stem"], spec["image_size"])},
        "input": {"size": [spec["image_size"], spec["image_size"]], "channels": spec["channels"],
                  "scale": "uint8 / 255 to [0, 1], then (x - mean) / std per channel",
                  "mean": spec["mean"], "std": spec["std"]},
        "feature_dim": feature_dim,
        "layers_differing_from_torchvision": layer_differences(spec),
        "data": {"source": manifest.get("source", manifest.get("dataset")), "split": manifest.get("split", "generated"),
                 "split_files": manifest.get("split_files", {}), "classes": len(manifest["class_names"]),
                 "train_images": manifest["sizes"]["train"], "manifest_sha256": sha256_file(manifest_path)},
        "probe": {k: v for k, v in probe.items() if k != "run"},
        "params": ckpt.get("params", {}),  # the sections the training stage stored in its checkpoint
        "code": {"ltcl": ltcl.__version__, "checkpoint_sha256": ckpt_sha},
    }


def markdown(c: dict, snippet: str) -> str:
    probe_lines = []
    for proto, m in c["probe"].items():
        if isinstance(m, dict) and "all" in m:
            probe_lines.append(f"| {proto} | " + " | ".join(f"{m.get(k, float('nan')):.2f}"
                                                            for k in ("many", "medium", "few", "all")) + " |")
    probe = ("| protocol | Many | Medium | Few | All |\n|---|---|---|---|---|\n" + "\n".join(probe_lines)
             if probe_lines else "(no probe metrics)")
    arch = c["architecture"]
    diffs = "\n".join(f"- {d}" for d in c["layers_differing_from_torchvision"])
    return f"""# Model card: {c['encoder']} ({c['method']})

{c['role']}, trained by ltcl {c['code']['ltcl']}.

- Architecture: {arch['backbone']}, width {arch['width']:g}, {arch['stem']} stem, {arch['channels']} input
  channel(s), {c['feature_dim']}-d pooled features (backbone only: no projection head, no classifier).
- Input: {arch['image_size']} x {arch['image_size']} images, {c['input']['scale']};
  mean {c['input']['mean']}, std {c['input']['std']}.
- Data: {c['data']['source']}, split {c['data']['split']}, {c['data']['classes']} classes,
  {c['data']['train_images']} training images; split manifest sha256 {c['data']['manifest_sha256']}.
- Weights: `{c['weights']}` (safetensors, torchvision's ResNet key layout);
  ltcl checkpoint sha256 {c['code']['checkpoint_sha256']}.

## Linear probe of this encoder (test accuracy, %)

{probe}

## How it differs from torchvision's ResNet

{diffs}

## Load it (torch and torchvision only)

```python
{snippet.rstrip()}
```

The full parameters are in `model_card.json`.
"""


def run(encoder: str, ckpt_path: str | Path, probe_path: str | Path, metrics_dir: str | Path, lt_dir: str | Path,
        out_dir: str | Path) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, spec, ckpt = load_encoder(ckpt_path, "cpu")
    probe = read_json(probe_path) if Path(probe_path).is_file() else {}
    pre = read_json(Path(metrics_dir) / "pretrain.json")
    dist = read_json(Path(metrics_dir) / "distill.json") if encoder == "distill" else None
    c = card(encoder, spec, ckpt, Path(lt_dir), probe, pre, dist, sha256_file(ckpt_path), model.feature_dim)
    meta = {"ltcl_spec": json.dumps({k: spec[k] for k in ("backbone", "width", "stem", "channels", "image_size",
                                                           "mean", "std")}),
            "encoder": encoder, "method": c["method"]}
    save_backbone(out / WEIGHTS, model, meta)
    c["weights_sha256"] = sha256_file(out / WEIGHTS)
    write_json(out / "model_card.json", c)
    write_text(out / "model_card.md", markdown(c, load_snippet(spec, WEIGHTS)))
    return c

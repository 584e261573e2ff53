"""import-encoder@<name>: an encoder trained outside ltcl (``external.<name>`` in params), made an
ltcl encoder checkpoint ``data/models/ext-<name>.pt`` that the probe and cluster stages evaluate
like f and g.

The checkpoint's weights are mapped onto ltcl's backbone by explicit rules and loaded strictly
(:mod:`ltcl.models.external`: ltcl's export, torchvision state dicts, SDCLR's and COLT's released
layouts); a checkpoint of another architecture stops with the unmatched keys of both sides. It has
no projection head (evaluation reads the backbone's pooled features). Input normalisation, first
found of: ``external.<name>.mean/std``; the export's own (its safetensors header); the checkpoint's
(SDCLR / COLT store ImageNet's); the long-tailed training split's statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ltcl.data.augment import dataset_stats
from ltcl.data.splits import load_split
from ltcl.errors import MissingInputError, UserError
from ltcl.io import read_json, sha256_file
from ltcl.models.checkpoint import save_encoder
from ltcl.models.external import load_external_backbone
from ltcl.models.heads import Encoder


def export_normalisation(path: Path) -> tuple[list[float], list[float]] | None:
    """mean / std recorded in an ltcl export's safetensors header, if any."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    spec = json.loads(meta["ltcl_spec"]) if "ltcl_spec" in meta else {}
    return (spec["mean"], spec["std"]) if "mean" in spec and "std" in spec else None


def normalisation(ext, backbone, lt_dir: Path) -> tuple[list[float], list[float], str]:
    if ext.mean is not None:
        return list(ext.mean), list(ext.std), "params (external.<name>.mean/std)"
    if ext.format == "ltcl-export":
        found = export_normalisation(Path(ext.path))
        if found:
            return list(found[0]), list(found[1]), "the export's header"
    norm = backbone.import_report.get("input_normalization")
    if norm:
        return list(norm["mean"]), list(norm["std"]), f"the {ext.format} checkpoint"
    mean, std = dataset_stats(load_split(lt_dir, "train")[0])
    return list(mean), list(std), "the long-tailed training split"


def run(params, name: str, lt_dir: str | Path, out_path: str | Path) -> dict:
    lt_dir = Path(lt_dir)
    ext = params.external.get(name)
    if ext is None:
        raise MissingInputError(f"no external encoder {name!r} in params.yaml (external: {sorted(params.external)})")
    h, _, c = read_json(lt_dir / "image.json")["image_shape"]
    backbone = load_external_backbone(ext.path, ext.format, ext.backbone, ext.stem, ext.width, int(c), int(h))
    mean, std, norm_from = normalisation(ext, backbone, lt_dir)
    if len(mean) != c:
        raise UserError(f"external.{name}: the normalisation from {norm_from} has {len(mean)} values but the images "
                        f"have {c} channel(s); set external.{name}.mean and .std")
    spec = {"backbone": ext.backbone, "width": float(ext.width), "stem": ext.stem, "proj_hidden": 0, "proj_dim": 0,
            "proj_layers": 0, "head": "none", "channels": int(c), "image_size": int(h), "mean": mean, "std": std}
    report = {**backbone.import_report, "sha256": sha256_file(ext.path), "normalisation_from": norm_from}
    save_encoder(out_path, Encoder(backbone, nn.Identity()), spec, external=report)
    return report

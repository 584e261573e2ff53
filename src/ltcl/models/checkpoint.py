"""Encoder checkpoints as plain dicts (state dict, numbers, strings): loadable with
``torch.load(weights_only=True)`` so a downloaded checkpoint cannot run code."""

from __future__ import annotations

from pathlib import Path

import torch

from ltcl.io import load_checkpoint, save_checkpoint
from ltcl.models.heads import Encoder, build_encoder


def encoder_spec(model_cfg, channels: int, image_size: int, mean, std) -> dict:
    """Everything needed to rebuild an encoder and feed it images."""
    return {
        "backbone": model_cfg.backbone,
        "width": float(model_cfg.width),
        "stem": model_cfg.stem,
        "proj_hidden": int(model_cfg.proj_hidden),
        "proj_dim": int(model_cfg.proj_dim),
        "channels": int(channels),
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


def build_from_spec(spec: dict) -> Encoder:
    return build_encoder(spec["backbone"], spec["channels"], spec["image_size"], width=spec["width"],
                         proj_hidden=spec["proj_hidden"], proj_dim=spec["proj_dim"], stem=spec["stem"])


def save_encoder(path: str | Path, model: Encoder, spec: dict, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"model": state, "spec": spec, **extra})


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> tuple[Encoder, dict, dict]:
    """(encoder in eval mode on ``device``, its spec, the whole checkpoint dict)."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "spec" not in ckpt:
        raise ValueError(f"{path}: not an ltcl encoder checkpoint (keys: {list(ckpt)[:8]})")
    model = build_from_spec(ckpt["spec"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: checkpoint does not match the model it declares "
                         f"({ckpt['spec']['backbone']}): {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), ckpt["spec"], ckpt

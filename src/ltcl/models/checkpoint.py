"""Encoder checkpoints as plain dicts (state dict, numbers, strings): loadable with
``torch.load(weights_only=True)`` so a downloaded checkpoint cannot run code.

Every encoder file gets a ``<file>.sha256`` sidecar (``sha256sum`` format) when it is saved;
:func:`load_encoder` checks the file against it, so a checkpoint replaced or corrupted after
the stage that wrote it is refused with a message naming the file.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import torch

from ltcl.errors import MissingInputError, UserError
from ltcl.io import load_checkpoint, save_checkpoint, sha256_sidecar, verify_sha256_sidecar, write_sha256_sidecar
from ltcl.models.heads import Encoder, build_encoder

# the spec keys that fix the architecture, and the params.yaml key each comes from
MODEL_KEYS = ("backbone", "width", "stem", "proj_hidden", "proj_dim", "proj_layers")
# what a "not an ltcl encoder checkpoint" message offers instead (the formats are
# ltcl.models.external.FORMATS; a test keeps them equal)
ACCEPTED_ENCODERS = (
    "an ltcl encoder checkpoint (.pt: data/models/<encoder>.pt, written by pretrain, distill or import-encoder); "
    "for `ltcl embed` also an ltcl export (export/<encoder>/encoder.safetensors, with its model_card.json "
    "beside it); weights from elsewhere (formats ltcl-export, torchvision, sdclr, colt) are imported first: "
    "list them under `external` in params.yaml, run `dvc repro import-encoder@<name>` and use "
    "data/models/ext-<name>.pt")


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` starts like a safetensors file: an 8-byte little-endian header length that
    fits the file, then the header's JSON ``{`` (a torch checkpoint starts with a zip or pickle)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8


def encoder_spec(model_cfg, channels: int, image_size: int, mean, std) -> dict:
    """Everything needed to rebuild an encoder and feed it images."""
    return {
        "backbone": model_cfg.backbone,
        "width": float(model_cfg.width),
        "stem": model_cfg.stem,
        "proj_hidden": int(model_cfg.proj_hidden),
        "proj_dim": int(model_cfg.proj_dim),
        "proj_layers": int(model_cfg.proj_layers),
        "channels": int(channels),
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


def build_from_spec(spec: dict) -> Encoder:
    """The encoder ``spec`` describes; ``spec["head"] == "none"`` (an encoder imported from outside
    ltcl, evaluated on its backbone features only) gets no projection head.  The head has
    ``spec["proj_layers"]`` Linears (2 or 3, ``ltcl.models.heads``); a spec written before that key
    existed is refused (KeyError: :func:`checked_model` names the file), its encoder being rebuilt
    by rerunning its stage."""
    if spec.get("head") == "none":
        from torch import nn

        from ltcl.models.resnet import build_backbone

        backbone = build_backbone(spec["backbone"], spec["channels"], width=spec["width"], stem=spec["stem"],
                                  image_size=spec["image_size"])
        return Encoder(backbone, nn.Identity())
    return build_encoder(spec["backbone"], spec["channels"], spec["image_size"], width=spec["width"],
                         proj_hidden=spec["proj_hidden"], proj_dim=spec["proj_dim"],
                         proj_layers=spec["proj_layers"], stem=spec["stem"])


def save_encoder(path: str | Path, model: Encoder, spec: dict, **extra) -> None:
    """Write the checkpoint atomically, then its ``<path>.sha256`` sidecar (a stale sidecar is
    removed first, so a crash in between leaves a checkpoint without one, never a wrong one)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    sha256_sidecar(path).unlink(missing_ok=True)
    save_checkpoint(path, {"model": state, "spec": spec, **extra})
    write_sha256_sidecar(path)


def _rebuild_hint(path: Path) -> str:
    stage = path.stem if path.stem in ("pretrain", "distill") else None
    if stage is None:
        return "rerun the stage that wrote it"
    return f"restore it with `dvc checkout {path}` or rebuild it with `dvc repro -f {stage}`"


def check_encoder_spec(spec: dict, path: str | Path, model_cfg=None, image_shape=None) -> None:
    """ValueError naming ``path`` when its encoder spec does not match the ``model`` params
    (backbone, width, stem, projection sizes) or the images it will be fed (H, W, C)."""
    path = Path(path)
    hint = f"rerun {path.stem} (`dvc repro {path.stem}`)" if path.stem in ("pretrain", "distill") else \
        "rerun the stage that made it"
    if model_cfg is not None:
        diffs = []
        for key in MODEL_KEYS:
            want, have = getattr(model_cfg, key), spec.get(key)
            same = float(want) == float(have) if key == "width" and isinstance(have, (int, float)) else want == have
            if not same:
                diffs.append(f"model.{key} is {want!r} in params.yaml but {have!r} in the checkpoint")
        if diffs:
            raise UserError(f"{path} is a checkpoint of a different model: {'; '.join(diffs)}. "
                             f"Set the model params it was made with, or {hint}")
    if image_shape is not None:
        h, w, c = (int(v) for v in image_shape)
        size, ch = spec.get("image_size"), spec.get("channels")
        if (size, size, ch) != (h, w, c):
            raise UserError(f"{path} was trained on {size}x{size}x{ch} images but the data set holds {h}x{w}x{c} "
                             f"images: it belongs to another data set; {hint}")


def checked_model(spec: dict, path, model_cfg=None, image_shape=None) -> Encoder:
    """The untrained model a spec declares, after :func:`check_encoder_spec` (``model_cfg``,
    ``image_shape``): the one construction path of a ``.pt`` checkpoint and a safetensors export."""
    check_encoder_spec(spec, path, model_cfg, image_shape)
    try:
        return build_from_spec(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: its model spec is invalid ({type(exc).__name__}: {exc})") from None


def load_encoder(path: str | Path, device: torch.device | str = "cpu", model_cfg=None,
                 image_shape=None) -> tuple[Encoder, dict, dict]:
    """(encoder in eval mode on ``device``, its spec, the whole checkpoint dict).

    Checks, each failure a ValueError naming the file: the ``<path>.sha256`` sidecar when
    present; that the file is a readable ltcl encoder checkpoint (``weights_only`` load);
    that its weights fit the architecture it declares; and, when given, that it matches the
    ``model`` params (``model_cfg``) and the images it will see (``image_shape`` = H, W, C).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"encoder checkpoint {path} not found (run the stage that makes it first)")
    verify_sha256_sidecar(path, _rebuild_hint(path))
    if is_safetensors(path):
        raise UserError(f"{path} is a safetensors file (an ltcl export?), not an ltcl encoder checkpoint: "
                         f"a stage reads a .pt. Accepted: {ACCEPTED_ENCODERS}")
    try:
        ckpt = load_checkpoint(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, AttributeError, struct.error,
            ValueError) as exc:  # struct.error: a few bytes of junk
        raise UserError(f"{path}: not a readable ltcl encoder checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}). Accepted: {ACCEPTED_ENCODERS}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "spec" not in ckpt:
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"{path}: not an ltcl encoder checkpoint (keys: {keys}). Accepted: {ACCEPTED_ENCODERS}")
    spec = ckpt["spec"]
    if not isinstance(spec, dict):
        raise UserError(f"{path}: not an ltcl encoder checkpoint (its spec is a {type(spec).__name__}). "
                         f"Accepted: {ACCEPTED_ENCODERS}")
    model = checked_model(spec, path, model_cfg, image_shape)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise UserError(f"{path}: checkpoint does not match the model it declares "
                         f"({spec['backbone']}): {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), spec, ckpt

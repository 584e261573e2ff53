"""Import of encoders trained outside ltcl, for evaluation with ltcl's probes.

:func:`load_external_backbone` builds ltcl's backbone (:func:`ltcl.models.resnet.build_backbone`)
and loads a foreign checkpoint into it with ``load_state_dict(strict=True)`` after explicit key
rules (prefix stripping, drops, renames) - never by guessing. Any key left over on either side,
or a tensor of the wrong shape, is a :class:`~ltcl.errors.UserError` that lists them, so a
checkpoint of another architecture (a resnet50 for a resnet18, a 7x7 stem for a CIFAR stem, another
width) is refused. Files are read with ``torch.load(weights_only=True, map_location="cpu")``
(no code runs) or with safetensors.

Formats (``FORMATS``)
---------------------
``ltcl-export``
    A safetensors file written by :func:`ltcl.models.export.save_backbone`; keys used as they are.
``torchvision``
    A ``torch.save``'d state dict of a torchvision ResNet (``fc.weight`` / ``fc.bias`` are
    dropped), bare or under ``"state_dict"`` / ``"model"``; a ``module.`` (DataParallel / DDP)
    prefix is stripped.
``sdclr``
    SDCLR's pre-training checkpoint. Key names from VITA-Group/SDCLR at commit
    34c932ec9c2169a3c615abb1a469c0c8ecadbf86: ``train_simCLR.py`` saves
    ``{"epoch", "state_dict": model.state_dict(), "optim"}`` of a DDP-wrapped model (``module.``
    prefix; SyncBatchNorm keys equal BatchNorm keys). The network (``models/resnet.py``,
    ``models/resnet_prune.py``, ``models/resnet_prune_multibn.py``, ``models/resnet_s_cifar*.py``)
    has torchvision's names plus ``normalize.mean`` / ``normalize.std`` (ImageNet statistics,
    applied to [0, 1] inputs inside the network) and the projection head in ``fc``
    (``fc.fc1.{weight,bias}``, ``fc.bn1.*``, ``fc.fc2.weight``, ``fc.bn2.*``, with ``--prune_dual_bn``
    also ``fc.fc3`` / ``fc.bn3`` and ``fc.bnK.bn_list.{0,1}.*``). With ``--prune_dual_bn`` every
    backbone BatchNorm is a ``batch_norm_multiple`` holding ``bn_list.0`` (bn name ``"nonprune"``,
    the dense network) and ``bn_list.1`` (``"prune"``, the pruned branch), and the downsample is
    ``Downsample_multiple`` (``downsample.conv.weight``, ``downsample.bn.bn_list.{0,1}.*``). The
    pruning masks (``prune_conv2d.prune_mask``) are plain attributes, not in the state dict;
    ``save_mask`` writes them to separate ``mask_<epoch>.pt`` files (``{"epoch", "pruneMask"}``),
    which this loader refuses with a message saying so. Rules, as SDCLR's own
    ``train_cifar.py::cvt_state_dict`` (with ``--bnNameCnt 0``) applies them: strip ``module.``;
    drop ``normalize.*`` and ``fc.*``; ``.bn_list.0.`` -> ``.`` (dense branch kept), ``.bn_list.1.``
    dropped (pruned branch); ``downsample.conv.`` -> ``downsample.0.``, ``downsample.bn.`` ->
    ``downsample.1.``. SDCLR's ``resnet32_s`` (option-A shortcuts, 16/32/64 channels) has ltcl's
    ``resnet32`` key layout.
``colt``
    COLT's pre-training checkpoint. Key names from JianhongBai/COLT at commit
    887db2653c8905887345d385ee0e5f907c3e657e: ``train_simCLR.py`` saves the same
    ``{"epoch", "state_dict", "optim"}`` of a DDP model; ``models/resnet.py`` is SDCLR's single-BN
    ResNet (torchvision names, ``downsample.0`` / ``downsample.1``, ``normalize.mean/std``) with
    ``fc`` = ``models/utils.py::proj_head`` (``fc.fc1``, ``fc.bn1``, ``fc.fc2``, ``fc.bn2``) and two
    parameter-free ``nn.Identity`` heads ``fc2`` / ``id_ood_cls_fc``. COLT does not apply
    ``normalize`` in ``forward`` (commented out) but normalises with the same ImageNet statistics in
    its transforms. Rules: strip ``module.``; drop ``normalize.*``, ``fc.*``, ``fc2.*``,
    ``id_ood_cls_fc.*``. There is no dual BN in COLT, so a ``bn_list`` key is refused.

For ``sdclr`` and ``colt`` the returned module carries the checkpoint's ``normalize`` statistics in
``model.import_report["input_normalization"]`` (``{"mean": [...], "std": [...]}``): both papers'
features are those of [0, 1] images normalised with them, so evaluate with these mean/std, not the
data set's own.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ltcl.errors import MissingInputError, UserError
from ltcl.models.resnet import build_backbone

__all__ = ["FORMATS", "load_external_backbone", "map_external_state", "read_external_state"]

FORMATS = ("ltcl-export", "torchvision", "sdclr", "colt")
MAX_LISTED = 20

_BN_LIST = re.compile(r"\.bn_list\.(\d+)\.")


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    more = f", ... (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return f"[{shown}{more}]"


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip, EOF and (torch >= 2.x) safetensors errors alike
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"{path}: not a checkpoint torch.load(weights_only=True) can read "
                         f"({type(exc).__name__}: {first})") from None


def _find_state_dict(obj, path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: itself, or under ``state_dict`` / ``model``."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a state dict (a dict of tensors), found a {type(obj).__name__}")
    if "pruneMask" in obj:
        raise UserError(f"{path} is an SDCLR pruning-mask file (save_mask: keys {sorted(obj)}), not a model "
                         "checkpoint; pass SDCLR's model.pt / model_<epoch>.pt")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: no {fmt} state dict found (a dict of tensors, bare or under 'state_dict' / "
                         f"'model'); entries that are not tensors: {_listed(bad)}")
    return dict(obj)


def read_external_state(path: str | Path, fmt: str) -> dict[str, torch.Tensor]:
    """The raw state dict stored in ``path`` (keys as the file has them)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path} not found")
    if fmt == "ltcl-export":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...
            raise UserError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    return _find_state_dict(_torch_load(path), path, fmt)


def _strip_module(key: str) -> str:
    return key.removeprefix("module.")


def map_external_state(state: dict[str, torch.Tensor], fmt: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Apply ``fmt``'s key rules (see the module docstring).

    Returns ``(mapped, report)``: ``mapped`` = {ltcl backbone key: tensor}; ``report`` = ``{"dropped":
    {reason: count}, "renamed_from": {new key: original key}, "input_normalization": {...} | None}``.
    Two source keys mapped to one name is a :class:`UserError`.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped: dict[str, int] = {}
    norm: dict[str, list[float]] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    for original, tensor in state.items():
        key = original
        if fmt != "ltcl-export":
            key = _strip_module(key)
        if fmt == "torchvision" and key in ("fc.weight", "fc.bias"):
            drop("classifier fc")
            continue
        if fmt in ("sdclr", "colt"):
            if key in ("normalize.mean", "normalize.std"):
                norm[key.split(".")[1]] = [float(v) for v in tensor.flatten()]
                drop("input normalisation buffers")
                continue
            heads = ("fc.",) if fmt == "sdclr" else ("fc.", "fc2.", "id_ood_cls_fc.")
            if key.startswith(heads):
                drop("projection head")
                continue
        if fmt == "sdclr":
            m = _BN_LIST.search(key)
            if m is not None and m.group(1) == "1":
                drop("pruned-branch BatchNorms (bn_list.1)")
                continue
            if m is not None and m.group(1) == "0":
                key = key[:m.start()] + "." + key[m.end():]
            key = key.replace("downsample.conv.", "downsample.0.").replace("downsample.bn.", "downsample.1.")
        if key in mapped:
            raise UserError(f"checkpoint keys {origin[key]!r} and {original!r} both map to {key!r} ({fmt} rules)")
        mapped[key] = tensor
        origin[key] = original
    renamed = {k: o for k, o in origin.items() if k != o}
    normalization = {"mean": norm["mean"], "std": norm["std"]} if len(norm) == 2 else None
    return mapped, {"dropped": dropped, "renamed_from": renamed, "input_normalization": normalization}


def _mismatch_message(path: Path, fmt: str, what: str, mapped: dict[str, torch.Tensor], origin: dict[str, str],
                      expected: dict[str, torch.Tensor]) -> str | None:
    def shown(key: str) -> str:
        return f"{origin[key]} (-> {key})" if key in origin else key

    unused = [shown(k) for k in mapped if k not in expected]
    # torch fills a missing BatchNorm ``num_batches_tracked`` itself (state dicts from before it
    # existed); it is a step counter that eval-mode forwards do not read.
    missing = [k for k in expected if k not in mapped and not k.endswith(".num_batches_tracked")]
    shapes = [f"{shown(k)}: checkpoint {tuple(mapped[k].shape)}, model {tuple(expected[k].shape)}"
              for k in mapped if k in expected and mapped[k].shape != expected[k].shape]
    if not (unused or missing or shapes):
        return None
    parts = [f"{len(unused)} checkpoint key(s) unused: {_listed(unused)}",
             f"{len(missing)} model key(s) missing: {_listed(missing)}"]
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {_listed(shapes)}")
    return (f"{path}: the {fmt} checkpoint does not fit {what}; " + "; ".join(parts)
            + ". Check the backbone, stem, width and channel settings against the model that made it.")


def load_external_backbone(path: str | Path, fmt: str, backbone: str, stem: str, width: float,
                           in_channels: int, image_size: int) -> nn.Module:
    """ltcl's ``backbone`` (``build_backbone(backbone, in_channels, width, stem, image_size)``) in
    eval mode on the CPU, with the weights of the ``fmt`` checkpoint at ``path`` loaded strictly.

    The module gets an ``import_report`` attribute: ``{"path", "format", "dropped": {reason: count},
    "input_normalization": {"mean", "std"} | None}`` (see the module docstring).
    Raises :class:`UserError` (missing file: :class:`MissingInputError`) naming the file and, on a
    mismatch, the unused checkpoint keys, the missing model keys and wrong shapes (first 20 each).
    """
    path = Path(path)
    state = read_external_state(path, fmt)
    try:
        model = build_backbone(backbone, in_channels, width=width, stem=stem, image_size=image_size)
    except ValueError as exc:
        raise UserError(f"cannot build the backbone to load {path} into: {exc}") from None
    mapped, report = map_external_state(state, fmt)
    what = (f"ltcl's {backbone} (stem {getattr(model, 'stem', stem)}, width {float(width):g}, "
            f"{in_channels} input channel(s))")
    msg = _mismatch_message(path, fmt, what, mapped, report["renamed_from"], model.state_dict())
    if msg:
        raise UserError(msg)
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:  # the checks above should have caught it
        raise UserError(f"{path}: the {fmt} checkpoint does not fit {what}: {str(exc).splitlines()[0]}") from None
    model.import_report = {"path": str(path), "format": fmt, "dropped": report["dropped"],
                           "input_normalization": report["input_normalization"]}
    return model.eval()

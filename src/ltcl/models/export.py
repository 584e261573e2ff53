"""Export of a trained backbone for use outside ltcl: torchvision key layout, safetensors file,
and the plain torch/torchvision code that rebuilds the module the weights fit.

* :func:`backbone_state` - the backbone's weights only (no projection head, no SDCLR pruned-branch
  norms: those live in the method state, not in the encoder), keyed as torchvision keys them.
  For ``resnet10/18/50`` the keys are exactly those of torchvision's ``ResNet`` minus ``fc.*``
  (``conv1.weight``, ``bn1.running_mean``, ``bn1.num_batches_tracked``,
  ``layer1.0.downsample.0.weight``, ...). The small CIFAR ResNets (``resnet8/20/32``) have no
  torchvision counterpart; their keys are ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``
  (also SDCLR's ``resnet32_s`` layout), and :func:`module_code` writes the module they fit.
* :func:`save_backbone` - those weights as a ``.safetensors`` file (written atomically).
* :func:`module_code`, :func:`load_snippet`, :func:`layer_differences`, :func:`preprocessing` - text
  for a model card: code that needs no ltcl (its first line names the packages it imports), the
  whole preprocessing of an image file, and which layers differ from torchvision's.
* :func:`read_export`, :func:`load_export` - the export read back by ltcl (``ltcl embed``): the
  backbone and its preprocessing rebuilt from the file's own header and the card beside it, with
  no access to the pipeline that made it.

``spec`` arguments are ltcl's encoder spec (:func:`ltcl.models.checkpoint.encoder_spec`); only
``backbone``, ``width``, ``stem``, ``channels`` and ``image_size`` are read (``stem="auto"`` is
resolved with ``image_size`` as :func:`ltcl.models.resnet.resolve_stem` does).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import torch
from torch import nn

from ltcl.errors import MissingInputError, UserError
from ltcl.io import atomic_path, read_json, sha256_file
from ltcl.models.checkpoint import ACCEPTED_ENCODERS, checked_model
from ltcl.models.heads import Encoder
from ltcl.models.resnet import BACKBONES, resolve_stem

__all__ = ["backbone_state", "export_metadata", "layer_differences", "load_export", "load_snippet", "module_code",
           "preprocessing", "read_export", "save_backbone"]

WEIGHTS = "encoder.safetensors"  # the export's file names, inside export/<encoder>/
CARD_JSON = "model_card.json"
SPEC_METADATA = "ltcl_spec"  # the safetensors header entry holding SPEC_FIELDS as JSON
SPEC_FIELDS = ("backbone", "width", "stem", "channels", "image_size", "mean", "std")
# How ltcl turns an image file into the encoder's input (ltcl.data.sources.folder.read_image_file,
# then ltcl.data.pool.to_channels); tests check these equal the constants there.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
PIP_NAMES = {"PIL": "pillow"}  # import name -> package name, where they differ
PIP_ORDER = ("torch", "torchvision", "safetensors", "pillow", "numpy")

TORCHVISION_FAMILY = {  # name -> (block class name, blocks per stage)
    "resnet10": ("BasicBlock", [1, 1, 1, 1]),
    "resnet18": ("BasicBlock", [2, 2, 2, 2]),
    "resnet50": ("Bottleneck", [3, 4, 6, 3]),
}
SMALL_CIFAR = {"resnet8": 1, "resnet20": 3, "resnet32": 5}  # name -> blocks per stage (6n + 2 layers)


def _scaled(channels: int, width: float) -> int:
    """The channel rounding of :mod:`ltcl.models.resnet` (kept equal to its ``_scaled``)."""
    return max(1, int(round(channels * width)))


def _backbone_of(encoder: nn.Module) -> nn.Module:
    backbone = getattr(encoder, "backbone", encoder)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"expected an ltcl Encoder or backbone module, got {type(encoder).__name__}")
    return backbone


def backbone_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights in torchvision's key layout, as contiguous CPU tensors.

    ``encoder`` is an ltcl ``Encoder`` (its ``backbone`` is taken; the projection head is left
    out) or a backbone module itself. Floating-point tensors are converted to float32; integer
    buffers (BatchNorm's ``num_batches_tracked``) stay int64 as torchvision stores them. Every
    tensor is a fresh copy (no storage shared with the model or with another entry).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in _backbone_of(encoder).state_dict().items():
        t = value.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.float32)
        out[key] = t.contiguous().clone()
    return out


def save_backbone(path: str | Path, encoder: nn.Module, metadata: dict[str, str]) -> None:
    """Write :func:`backbone_state` of ``encoder`` to ``path`` with ``safetensors.torch.save_file``.

    ``metadata`` (string keys and values, e.g. the encoder spec's entries as text) goes into the
    file's header; ``"format": "pt"`` is added unless given. The file is written to a temporary
    name beside ``path`` and moved over it (:func:`ltcl.io.atomic_path`), so a reader never sees
    a partial file. The same weights and metadata give the same bytes (:func:`_sort_metadata`).
    """
    from safetensors.torch import save_file

    bad = {k: type(v).__name__ for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise UserError(f"safetensors metadata must map str to str; not str: {bad}")
    meta = {"format": "pt", **metadata}
    tensors = backbone_state(encoder)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        _sort_metadata(tmp)


def _sort_metadata(path: Path) -> None:
    """Rewrite, in place, the header's ``__metadata__`` with its keys sorted.

    safetensors (0.8) writes the metadata map in a random order per process (a Rust ``HashMap``),
    so two exports of one checkpoint differed in bytes; the tensor entries are already in a fixed
    order. The header keeps its length (same entries, other order; its padding is kept), so the
    data offsets stay valid."""
    with open(path, "r+b") as fh:
        n = int.from_bytes(fh.read(8), "little")
        raw = fh.read(n)
        header = json.loads(raw)
        if "__metadata__" not in header:
            return
        header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > n:  # cannot happen for the same entries; never write a broken file
            raise RuntimeError(f"{path}: re-serialised safetensors header is longer ({len(text)} > {n} bytes)")
        fh.seek(8)
        fh.write(text + b" " * (n - len(text)))


def export_metadata(spec: dict) -> dict[str, str]:
    """The safetensors header entry that lets the export be rebuilt on its own: ``ltcl_spec``, the
    spec's :data:`SPEC_FIELDS` as JSON (no timings or host facts: the file stays byte-stable)."""
    return {SPEC_METADATA: json.dumps({k: spec[k] for k in SPEC_FIELDS})}


# ----------------------------------------------------------------------------------------------
# Model-card text
# ----------------------------------------------------------------------------------------------


def _arch(spec: dict) -> tuple[str, float, str, int]:
    """(backbone, width, resolved stem, input channels) from an ltcl encoder spec."""
    try:
        name = spec["backbone"]
        width = float(spec["width"])
        channels = int(spec["channels"])
        stem = resolve_stem(spec["stem"], int(spec["image_size"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"invalid encoder spec ({type(exc).__name__}: {exc})") from None
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r} in the encoder spec; known: {sorted(BACKBONES)}")
    if name in SMALL_CIFAR and stem != "cifar":
        raise UserError(f"{name} exists only with the CIFAR stem, the spec says stem {stem!r}")
    if not width > 0:
        raise UserError(f"width must be > 0 in the encoder spec, got {width!r}")
    return name, width, stem, channels


def _small_cifar_code(n: int, channels: int, widths: list[int]) -> str:
    return f'''import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """BasicBlock with an option-A shortcut: stride-2 subsampling plus zero-padded channels."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
        if self.pad > 0:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class CifarResNet(nn.Module):
    """He et al. 2016 (Sect. 4.2) CIFAR ResNet, 6n + 2 layers; returns pooled features (no fc)."""

    def __init__(self, n, in_channels, widths):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin, stages = widths[0], []
        for i, cout in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(Block(cin, cout, 2 if i > 0 and j == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


model = CifarResNet({n}, {channels}, {widths})
'''


def _torchvision_code(name: str, width: float, stem: str, channels: int) -> str:
    block, layers = TORCHVISION_FAMILY[name]
    stem_ch = _scaled(64, width)
    lines = ["import torch"]
    if width != 1.0:
        mapping = {p: _scaled(p, width) for p in (64, 128, 256, 512)}
        lines += [
            f"from torchvision.models.resnet import {block}, ResNet",
            "",
            "",
            "class ScaledResNet(ResNet):",
            f'    """torchvision ResNet with stage widths scaled by {width:g}."""',
            "",
            f"    WIDTHS = {mapping}",
            "",
            "    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):",
            "        if planes == 64:  # layer1: its input is the (scaled) stem output",
            "            self.inplanes = self.WIDTHS[64]",
            "            self.bn1 = self._norm_layer(self.inplanes)",
            "        return super()._make_layer(block, self.WIDTHS[planes], blocks, stride, dilate)",
            "",
            "",
            f"model = ScaledResNet({block}, {layers})",
        ]
    elif name == "resnet10":
        lines += [f"from torchvision.models.resnet import {block}, ResNet", "",
                  f"model = ResNet({block}, {layers})  # resnet10: one block per stage"]
    else:
        lines += ["import torchvision", "", f"model = torchvision.models.{name}()"]
    if stem == "cifar":
        lines += [(f"model.conv1 = torch.nn.Conv2d({channels}, {stem_ch}, kernel_size=3, stride=1, padding=1, "
                   "bias=False)  # CIFAR stem"),
                  "model.maxpool = torch.nn.Identity()"]
    elif channels != 3 or width != 1.0:
        lines += [(f"model.conv1 = torch.nn.Conv2d({channels}, {stem_ch}, kernel_size=7, stride=2, padding=3, "
                   "bias=False)")]
    lines += ["model.fc = torch.nn.Identity()  # the model returns the pooled features"]
    return "\n".join(lines) + "\n"


def module_code(spec: dict) -> str:
    """Plain torch/torchvision code (no ltcl import) that binds ``model`` to a module whose
    ``state_dict`` keys and shapes are those of :func:`backbone_state` and whose forward returns
    the same pooled features as ltcl's backbone (no classifier).

    resnet18/50 with the ImageNet stem, width 1 and 3 channels: ``torchvision.models.resnet18()``
    with ``fc = Identity``. resnet10: torchvision's ``ResNet(BasicBlock, [1, 1, 1, 1])``. CIFAR
    stem: ``conv1`` replaced by a 3x3 stride-1 convolution and ``maxpool`` by ``Identity``.
    Width != 1: a small ``ResNet`` subclass that scales the stage widths exactly as ltcl does.
    resnet8/20/32: a self-contained module (~40 lines) with option-A shortcuts.
    """
    name, width, stem, channels = _arch(spec)
    if name in SMALL_CIFAR:
        return _small_cifar_code(SMALL_CIFAR[name], channels, [_scaled(c, width) for c in (16, 32, 64)])
    return _torchvision_code(name, width, stem, channels)


def preprocessing(spec: dict) -> dict:
    """The whole preprocessing of an image file, as ``ltcl embed --images`` does it (the data
    stage decodes and resizes image files the same way): decode, resize, channel conversion,
    scale and normalisation - the model card's ``input`` entry.  The same steps are
    :func:`load_snippet`'s ``preprocess``."""
    size, channels = int(spec["image_size"]), int(spec["channels"])
    if channels == 3:
        conversion = "a grayscale image is replicated to 3 channels (R = G = B); an RGB image is used as it is"
    elif channels == 1:
        conversion = ("an RGB image becomes 1 channel after the resize: round(0.299 R + 0.587 G + 0.114 B) "
                      "computed in float32, rounded half to even, clipped to 0..255 (ITU-R BT.601 luma; not "
                      "PIL's convert('L'), which rounds 1 in ~2000 pixels differently); a grayscale image is "
                      "used as it is")
    else:
        raise UserError(f"an export takes 1 or 3 input channels, the spec says {channels}")
    return {
        "size": [size, size],
        "channels": channels,
        "decode": (f"PIL Image.open (a GIF: its first frame); modes {', '.join(GRAY_MODES)} -> convert('L'), "
                   "any other mode -> convert('RGB') (alpha dropped)"),
        "resize": (f"the whole image to {size} x {size} with PIL bilinear, im.resize(({size}, {size}), "
                   "Image.BILINEAR) (antialiased when shrinking); no crop, the aspect ratio is not kept; "
                   f"an image already {size} x {size} is not resampled"),
        "channel_conversion": conversion,
        "scale": "uint8 / 255 to [0, 1], then (x - mean) / std per channel",
        "mean": [float(m) for m in spec["mean"]],
        "std": [float(v) for v in spec["std"]],
        "layout": f"float32 N x {channels} x {size} x {size} (NCHW)",
    }


def _pip_line(code: str) -> str:
    """``# pip install ...``: the packages of every top-level module ``code`` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    packages = {PIP_NAMES.get(n, n) for n in names}
    ordered = [p for p in PIP_ORDER if p in packages] + sorted(packages - set(PIP_ORDER))
    return f"# needs no ltcl: pip install {' '.join(ordered)}"


def _preprocess_code(spec: dict) -> str:
    pre = preprocessing(spec)
    size, channels = pre["size"][0], pre["channels"]
    if channels == 3:
        convert = ["    if x.shape[2] == 1:  # grayscale -> R = G = B",
                   "        x = np.repeat(x, 3, axis=2)"]
    else:
        convert = ["    if x.shape[2] == 3:  # RGB -> ITU-R BT.601 luma, rounded half to even (np.rint)",
                   f"        x = np.rint(x.astype(np.float32) @ np.array({list(LUMA)}, dtype=np.float32))",
                   "        x = x.clip(0, 255)[..., None]"]
    return "\n".join([
        f"SIZE = {size}",
        f"MEAN = np.array({pre['mean']}, dtype=np.float32)",
        f"STD = np.array({pre['std']}, dtype=np.float32)",
        f"GRAY_MODES = {GRAY_MODES!r}",  # a tuple: a set's repr changes order between processes
        "",
        "",
        "def preprocess(path):",
        f'    """An image file as ltcl prepares it: float32 array ({channels}, SIZE, SIZE)."""',
        "    with Image.open(path) as im:  # a GIF: its first frame",
        '        im = im.convert("L" if im.mode in GRAY_MODES else "RGB")  # alpha dropped',
        "        if im.size != (SIZE, SIZE):  # the whole image, no crop: the aspect ratio is not kept",
        "            im = im.resize((SIZE, SIZE), Image.BILINEAR)",
        "        x = np.asarray(im, dtype=np.uint8)",
        "    x = x[..., None] if x.ndim == 2 else x  # H x W x C",
        *convert,
        "    x = (x.astype(np.float32) / 255 - MEAN) / STD  # [0, 1], then per channel",
        "    return x.transpose(2, 0, 1)",
        "",
        "",
        "def embed(paths):",
        '    """Pooled features (N, D) of image files, as `ltcl embed --images` computes them."""',
        "    batch = torch.from_numpy(np.stack([preprocess(p) for p in paths]))",
        "    with torch.no_grad():",
        "        return model(batch).numpy()",
    ])


def load_snippet(spec: dict, weights_file: str) -> str:
    """The model-card "load it" code, runnable as written with no ltcl: its first line names the
    packages of every import it makes; it builds the module (:func:`module_code`), loads
    ``weights_file`` with ``safetensors.torch.load_file`` and ``load_state_dict(strict=True)``, and,
    when ``spec`` has mean / std, defines ``preprocess(path)`` (an image file as
    :func:`preprocessing` says, PIL + numpy) and ``embed(paths)`` (the pooled features)."""
    has_norm = spec.get("mean") is not None and spec.get("std") is not None
    lines = (["import numpy as np", "from PIL import Image"] if has_norm else []) + [
        "from safetensors.torch import load_file",
        module_code(spec).rstrip("\n"),
        "",
        f"model.load_state_dict(load_file({str(weights_file)!r}), strict=True)",
        "model.eval()"]
    if has_norm:
        lines += ["", _preprocess_code(spec)]
    code = "\n".join(lines) + "\n"
    return _pip_line(code) + "\n" + code


def layer_differences(spec: dict) -> list[str]:
    """Human-readable lines saying how the exported backbone differs from torchvision's ResNet."""
    name, width, stem, channels = _arch(spec)
    out: list[str] = []
    if name in SMALL_CIFAR:
        n = SMALL_CIFAR[name]
        widths = [_scaled(c, width) for c in (16, 32, 64)]
        out += [
            f"{name} is not in torchvision: the CIFAR ResNet of He et al. 2016 (Sect. 4.2), 6n+2 layers with n={n}",
            f"conv1: 3x3 stride 1 padding 1 with {widths[0]} filters instead of 7x7 stride 2 with 64; no max-pool",
            (f"three stages (layer1-layer3) of {n} BasicBlock(s) with {widths[0]}/{widths[1]}/{widths[2]} "
             "channels instead of four stages with 64/128/256/512; no layer4"),
            ("option-A shortcuts (stride-2 subsampling plus zero-padded channels): no downsample convolutions, "
             "no downsample.* weights"),
        ]
        if width != 1.0:
            out.append(f"width multiplier {width:g}: 16/32/64 channels scaled to {widths[0]}/{widths[1]}/{widths[2]}")
        if channels != 3:
            out.append(f"conv1 takes {channels} input channel(s) instead of 3")
        out.append(f"no fc: the model returns the {widths[2]}-d pooled features")
        return out
    block, layers = TORCHVISION_FAMILY[name]
    if name == "resnet10":
        out.append(f"resnet10 is not a torchvision builder: torchvision's ResNet({block}, {layers}), "
                   "one block per stage (SDCLR's res10)")
    if stem == "cifar":
        out += ["conv1: 3x3 stride 1 padding 1 instead of 7x7 stride 2 padding 3 (CIFAR stem)",
                "no max-pool (maxpool = Identity) instead of 3x3 stride 2"]
    if channels != 3:
        out.append(f"conv1 takes {channels} input channel(s) instead of 3")
    expansion = 4 if block == "Bottleneck" else 1
    if width != 1.0:
        ws = [_scaled(c, width) for c in (64, 128, 256, 512)]
        out.append(f"width multiplier {width:g}: stem and stage widths {'/'.join(map(str, ws))} instead of "
                   f"64/128/256/512 (features {ws[-1] * expansion}-d instead of {512 * expansion}-d)")
    out.append(f"fc = Identity: the model returns the {_scaled(512, width) * expansion}-d pooled features "
               "instead of class logits")
    return out


# ----------------------------------------------------------------------------------------------
# The export read back
# ----------------------------------------------------------------------------------------------


def _header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise UserError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc}). "
                        f"Accepted: {ACCEPTED_ENCODERS}") from None


def _spec_from_card(card: dict) -> dict:
    arch, inp = card.get("architecture", {}), card.get("input", {})
    return {"backbone": arch.get("backbone"), "width": arch.get("width"), "stem": arch.get("stem"),
            "channels": arch.get("channels"), "image_size": arch.get("image_size"), "mean": inp.get("mean"),
            "std": inp.get("std")}


def _card_disagreements(spec: dict, card: dict) -> list[str]:
    """Where the card's architecture / input differ from the header's spec."""
    from_card = _spec_from_card(card)
    out = []
    for key in SPEC_FIELDS:
        have, want = from_card[key], spec[key]
        if key == "stem" and isinstance(want, str) and isinstance(spec["image_size"], int):
            want = resolve_stem(want, spec["image_size"])  # the card states the resolved stem
        same = (float(have) == float(want) if key == "width" and isinstance(have, (int, float)) else have == want)
        if not same:
            out.append(f"{key}: {have!r} in the card, {want!r} in the header")
    size = card.get("input", {}).get("size")
    if size != [spec["image_size"]] * 2:
        out.append(f"input size {size!r} in the card, {spec['image_size']!r} in the header")
    return out


def read_export(path: str | Path) -> tuple[dict, Path | None]:
    """(spec, the model card's path or None) of an ltcl export.

    The spec (:data:`SPEC_FIELDS`) comes from the safetensors header's ``ltcl_spec``, or, in a file
    without one, from ``model_card.json`` beside it.  When the card is there it must describe this
    file: its ``weights_sha256`` is the file's and its architecture and input agree with the
    header.  Each failure is a :class:`UserError` naming the file and what ltcl accepts instead."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"encoder file {path} not found")
    header = _header(path)
    card_path = path.parent / CARD_JSON
    card = None
    if card_path.is_file():
        try:
            card = read_json(card_path)
        except ValueError as exc:
            raise UserError(f"{card_path}: not readable JSON ({exc}); re-export the encoder "
                            "(`dvc repro -f export@<encoder>`)") from None
        if not isinstance(card, dict):
            raise UserError(f"{card_path}: not an ltcl model card (a JSON {type(card).__name__})")
    if SPEC_METADATA in header:
        try:
            spec = json.loads(header[SPEC_METADATA])
        except ValueError as exc:
            raise UserError(f"{path}: its header's {SPEC_METADATA} is not JSON ({exc})") from None
        origin = "its header's " + SPEC_METADATA
    elif card is not None:
        spec, origin = _spec_from_card(card), str(card_path)
    else:
        raise UserError(f"{path} is a safetensors file without ltcl's {SPEC_METADATA} header entry and without a "
                        f"{CARD_JSON} beside it: not an ltcl export. Accepted: {ACCEPTED_ENCODERS}")
    missing = [k for k in SPEC_FIELDS if not isinstance(spec, dict) or spec.get(k) is None]
    if missing:
        raise UserError(f"{path}: {origin} lacks {', '.join(missing)}; re-export the encoder "
                        "(`dvc repro -f export@<encoder>`)")
    spec = {k: spec[k] for k in SPEC_FIELDS}
    if card is not None:
        want = card.get("weights_sha256")
        if want is not None and want != sha256_file(path):
            raise UserError(f"{path} is not the file {card_path} describes (its sha256 differs from the card's "
                            "weights_sha256): the weights were replaced or the card belongs to another export; "
                            "re-export the encoder (`dvc repro -f export@<encoder>`) or remove the stale card")
        diffs = _card_disagreements(spec, card)
        if diffs:
            raise UserError(f"{path}: the header and {card_path} disagree ({'; '.join(diffs)}); re-export the "
                            "encoder (`dvc repro -f export@<encoder>`)")
    return spec, (card_path if card is not None else None)


def load_export(path: str | Path, device: torch.device | str = "cpu",
                image_shape=None) -> tuple[Encoder, dict, dict]:
    """(encoder in eval mode on ``device``, its spec, ``{"format": "ltcl-export", "model_card": path
    or None}``) of an export (:func:`read_export`).

    The encoder is ltcl's backbone with the file's weights loaded strictly and no projection head
    (``spec["head"] == "none"``: the export holds none).  ``image_shape`` (H, W, C), when given, must
    be the size and channels the export was trained on."""
    from safetensors.torch import load_file

    path = Path(path)
    spec, card_path = read_export(path)
    spec = {**spec, "head": "none", "proj_hidden": 0, "proj_dim": 0, "proj_layers": 0}
    model = checked_model(spec, path, None, image_shape)
    try:
        model.backbone.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path}: its weights do not fit the {spec['backbone']} its header declares: "
                        f"{' '.join(str(exc).split())[:600]}") from None
    return model.to(device).eval(), spec, {"format": "ltcl-export",
                                           "model_card": str(card_path) if card_path else None}

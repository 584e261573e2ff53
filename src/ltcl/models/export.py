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
* :func:`module_code`, :func:`load_snippet`, :func:`layer_differences` - text for a model card:
  code that needs only torch/torchvision (no ltcl), and which layers differ from torchvision's.

``spec`` arguments are ltcl's encoder spec (:func:`ltcl.models.checkpoint.encoder_spec`); only
``backbone``, ``width``, ``stem``, ``channels`` and ``image_size`` are read (``stem="auto"`` is
resolved with ``image_size`` as :func:`ltcl.models.resnet.resolve_stem` does).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ltcl.errors import UserError
from ltcl.io import atomic_path
from ltcl.models.resnet import BACKBONES, resolve_stem

__all__ = ["backbone_state", "layer_differences", "load_snippet", "module_code", "save_backbone"]

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
    a partial file.
    """
    from safetensors.torch import save_file

    bad = {k: type(v).__name__ for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad:
        raise UserError(f"safetensors metadata must map str to str; not str: {bad}")
    meta = {"format": "pt", **metadata}
    tensors = backbone_state(encoder)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


# ----------------------------------------------------------------------------------------------
# Model-card text
# ----------------------------------------------------------------------------------------------


def _arch(spec: dict) -> tuple[str, float, str, int]:
    """(backbone, width, resolved stem, input channels) from an ltcl encoder spec."""
    try:
        name = spec["backbone"]
        width = float(spec.get("width", 1.0))
        channels = int(spec.get("channels", 3))
        stem = resolve_stem(spec.get("stem", "auto"), int(spec.get("image_size", 32)))
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


def load_snippet(spec: dict, weights_file: str) -> str:
    """The model-card "how to load it" text: build the module (:func:`module_code`), load
    ``weights_file`` with ``safetensors.torch.load_file`` and ``load_state_dict(strict=True)``."""
    mean, std = spec.get("mean"), spec.get("std")
    lines = [module_code(spec).rstrip("\n"),
             "",
             "from safetensors.torch import load_file",
             "",
             f"model.load_state_dict(load_file({str(weights_file)!r}), strict=True)",
             "model.eval()"]
    if mean is not None and std is not None:
        channels = int(spec.get("channels", len(mean)))
        size = spec.get("image_size")
        shape = f"(N, {channels}, {size}, {size})" if size else f"(N, {channels}, H, W)"
        lines += [f"# input: float images {shape} scaled to [0, 1], then normalised per channel with",
                  (f"# mean={[float(m) for m in mean]}, std={[float(s) for s in std]}; "
                   "output: pooled features (N, D)")]
    return "\n".join(lines) + "\n"


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

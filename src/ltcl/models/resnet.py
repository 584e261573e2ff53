"""ResNet backbones that return pooled features.

Every backbone built here maps ``(N, C, H, W)`` images to ``(N, out_dim)`` features taken after the
global average pool (no classifier). Two families:

* ``resnet10`` / ``resnet18`` / ``resnet50``: torchvision's ResNet (``weights=None``) with ``fc``
  replaced by ``nn.Identity``. With the ``"cifar"`` stem (default for ``image_size <= 64``) ``conv1``
  becomes a 3x3 stride-1 convolution and the max-pool is removed - the CIFAR ResNet-18 of
  SDCLR (Jiang et al. 2021) and COLT (Bai et al. 2023). ``resnet10`` is SDCLR's ``res10``
  (BasicBlock, one block per stage).
* ``resnet8`` / ``resnet20`` / ``resnet32``: the small CIFAR ResNets of He et al. 2016, Sect. 4.2:
  3x3 stride-1 stem with 16 filters, three stages of ``n`` BasicBlocks (n = 1, 3, 5) with 16/32/64
  filters, stride 2 at the start of stages 2 and 3, identity shortcuts with zero-padding where the
  shape changes ("option A" of the paper, no extra parameters).

All of them end in ``nn.AdaptiveAvgPool2d(1)``, so any input size >= 8 works (8x8 digits included).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["BACKBONES", "build_backbone", "count_flops", "resolve_stem", "MIN_IMAGE_SIZE"]

MIN_IMAGE_SIZE = 8
STEMS = ("auto", "cifar", "imagenet")


def _scaled(channels: int, width: float) -> int:
    """Channel count ``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


def resolve_stem(stem: str, image_size: int) -> str:
    """Return ``"cifar"`` or ``"imagenet"``; ``"auto"`` picks ``"cifar"`` for ``image_size <= 64``."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if stem == "auto":
        return "cifar" if image_size <= 64 else "imagenet"
    return stem


# ----------------------------------------------------------------------------------------------
# torchvision ResNets (resnet10 / resnet18 / resnet50)
# ----------------------------------------------------------------------------------------------


@functools.cache
def _torchvision_resnet_class() -> type[nn.Module]:
    """The torchvision ``ResNet`` subclass below, defined on first use.  torchvision is imported here,
    not with this module: its import takes about 2.5 s per process (``torchvision.ops`` imports
    ``torch._dynamo``; measured 5.1 s for ``import torch, torchvision.models.resnet`` against 2.6 s
    for ``import torch``), which every stage process of a run on a small CIFAR ResNet would pay
    for a class it never builds."""
    from torchvision.models.resnet import ResNet

    class _TorchvisionResNet(ResNet):
        """torchvision ``ResNet`` with a width multiplier, adapted stem and ``fc = Identity``.

        torchvision hard-codes 64/128/256/512 stage widths; the width multiplier is applied by
        scaling ``planes`` in ``_make_layer`` (torchvision's own block classes are reused unchanged).
        With ``width == 1`` the network is exactly ``torchvision.models.resnet18/50(weights=None)``
        (same class, same block layout, same initialisation) apart from the stem and ``fc``.
        """

        def __init__(
            self,
            block: type[nn.Module],  # torchvision's BasicBlock or Bottleneck
            layers: list[int],
            in_channels: int,
            width: float,
            stem: str,
        ) -> None:
            # Plain (non-Module) attribute read by _make_layer during ResNet.__init__.
            self._width_mult = width
            super().__init__(block, layers)
            stem_ch = _scaled(64, width)
            if stem == "cifar":
                self.conv1 = nn.Conv2d(in_channels, stem_ch, kernel_size=3, stride=1, padding=1, bias=False)
                self.maxpool = nn.Identity()
            else:
                self.conv1 = nn.Conv2d(in_channels, stem_ch, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.out_dim = _scaled(512, width) * block.expansion
            self.fc = nn.Identity()
            self.stem = stem

        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # noqa: D401 - torchvision hook
            if planes == 64:  # first stage: its input is the stem output
                self.inplanes = _scaled(64, self._width_mult)
                self.bn1 = self._norm_layer(self.inplanes)
            return super()._make_layer(block, _scaled(planes, self._width_mult), blocks, stride, dilate)

    return _TorchvisionResNet


def _tv_resnet(block: str, layers: list[int]):
    """A builder of torchvision's ResNet with ``block`` ("BasicBlock" or "Bottleneck", torchvision's
    classes) and ``layers`` blocks per stage."""

    def build(in_channels: int, width: float, stem: str) -> nn.Module:
        from torchvision.models import resnet as tv

        return _torchvision_resnet_class()(getattr(tv, block), layers, in_channels, width, stem)

    return build


# ----------------------------------------------------------------------------------------------
# Small CIFAR ResNets (He et al. 2016, Sect. 4.2)
# ----------------------------------------------------------------------------------------------


class _CifarBasicBlock(nn.Module):
    """BasicBlock with an "option A" shortcut: stride-2 subsampling plus zero channel padding."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad > 0:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016 (Sect. 4.2) CIFAR ResNet with ``6n + 2`` layers, returning pooled features."""

    def __init__(self, n: int, in_channels: int, width: float) -> None:
        super().__init__()
        widths = [_scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(_CifarBasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]
        self.stem = "cifar"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)


def _cifar_resnet(n: int):
    def build(in_channels: int, width: float, stem: str) -> nn.Module:
        if stem != "cifar":
            raise ValueError(f"stem must be 'cifar' or 'auto' for the small CIFAR ResNets, got {stem!r}")
        return CifarResNet(n, in_channels, width)

    return build


# name -> builder(in_channels, width, resolved_stem)
BACKBONES: dict[str, Callable[[int, float, str], nn.Module]] = {
    "resnet8": _cifar_resnet(1),
    "resnet20": _cifar_resnet(3),
    "resnet32": _cifar_resnet(5),
    "resnet10": _tv_resnet("BasicBlock", [1, 1, 1, 1]),
    "resnet18": _tv_resnet("BasicBlock", [2, 2, 2, 2]),  # == torchvision.models.resnet18
    "resnet50": _tv_resnet("Bottleneck", [3, 4, 6, 3]),  # == torchvision.models.resnet50
}


def build_backbone(
    name: str,
    in_channels: int,
    *,
    width: float,
    stem: str,
    image_size: int,
) -> nn.Module:
    """Build a backbone mapping ``(N, in_channels, H, W)`` to pooled features ``(N, model.out_dim)``.

    Every argument is required: ``width`` and ``stem`` come from the ``model`` params (their
    defaults live there), ``image_size`` from the data.

    Args:
        name: one of ``BACKBONES`` (resnet8, resnet20, resnet32, resnet10, resnet18, resnet50).
        in_channels: number of input channels (1 for grey digits, 3 for RGB).
        width: channel multiplier applied to every stage (1.0 = the published widths).
        stem: ``"cifar"`` (3x3 stride-1 conv, no max-pool), ``"imagenet"`` (7x7 stride-2 conv and
            max-pool) or ``"auto"`` (cifar when ``image_size <= 64``). The small CIFAR ResNets only
            accept ``"cifar"``/``"auto"``.
        image_size: expected input side length; only used to resolve ``stem="auto"`` and to reject
            inputs smaller than 8 pixels.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone name {name!r}; known: {sorted(BACKBONES)}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    return BACKBONES[name](in_channels, float(width), resolve_stem(stem, image_size))


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of ``model`` on one input of ``input_shape`` (``(C, H, W)`` or ``(N, C, H, W)``).

    Uses ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix multiplications and
    convolutions as 2 x multiply-adds (BN, ReLU, pooling and additions are not counted - the usual
    convention of "GFLOPs" tables). A ``(C, H, W)`` shape is counted for a batch of 1. The model is
    run in eval mode under ``no_grad`` (so BN running statistics are not touched) and its training
    flag is restored afterwards.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W) with positive sizes, got {input_shape}")
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())

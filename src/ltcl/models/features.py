"""An encoder run over uint8 images in batches: the one home of feature extraction.

* :func:`extract_features`: frozen features for the linear probe, kNN, cluster metrics, ``ltcl
  embed`` and GML's class means (the probe's normalisation, bf16 autocast when ``amp``);
* :func:`embed_images`: L2-normalised backbone or projection embeddings of a live
  :class:`~ltcl.models.resnet.Encoder` with the training run's precision and eval transform, for
  the OOD sampler (paper 003 Sec. 3.1.1), PSD's neighbours and KDUP's guidance.

Both stream the images batch by batch (a memory-mapped pool is never read whole) into one
preallocated output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ltcl.data.augment import to_float_normalised

ModelFn = Callable[[torch.Tensor], torch.Tensor]


def _channel_stats(
    values: Sequence[float] | torch.Tensor, name: str, channels: int, device: torch.device
) -> torch.Tensor:
    """Return per-channel ``values`` as a float32 (1, C, 1, 1) tensor on ``device``."""
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {t.numel()}")
    if name == "std" and bool((t <= 0).any()):
        raise ValueError("std must be strictly positive")
    return t.to(device).view(1, channels, 1, 1)


def _owning_module(model_fn: ModelFn) -> nn.Module | None:
    """The ``nn.Module`` behind ``model_fn`` (itself, or the owner of a bound method), if any."""
    if isinstance(model_fn, nn.Module):
        return model_fn
    owner = getattr(model_fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def extract_features(
    model_fn: ModelFn,
    x_uint8_nhwc: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    mean: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0),
    std: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
    amp: bool = False,
    *,
    normalise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    l2: bool = False,
) -> torch.Tensor:
    """Run a frozen encoder over uint8 images and return its features.

    Each batch is moved to ``device``, converted to float NCHW in ``channels_last`` memory
    format, scaled to [0, 1] (``/ 255``) and normalised per channel with ``mean`` / ``std``
    (given on the [0, 1] scale, torchvision convention), then passed to ``model_fn`` under
    ``torch.no_grad()`` (not ``inference_mode``, so the returned tensor is an ordinary tensor
    that later code may modify in place or use as autograd input).

    Args:
        model_fn: any callable mapping a float (B, C, H, W) tensor to (B, D) features (outputs
            with more dimensions, e.g. (B, D, 1, 1), are flattened to (B, -1)). If it is an
            ``nn.Module`` or a bound method of one (e.g. ``model.features``), that module is
            switched to ``eval()`` for the call and its previous train/eval mode is restored.
        x_uint8_nhwc: uint8 images, shape (N, H, W, C), numpy array or tensor.
        batch_size: images per forward pass.
        device: where the forward pass runs.
        mean, std: per-channel normalisation statistics (length C).
        amp: run the forward pass under bf16 autocast (output is still float32).
        normalise: in place of the scaling above, a transform of each uint8 NHWC batch on
            ``device`` to the float NCHW input (:func:`embed_images`: the training run's).
        autocast: in place of ``amp``, a factory of the autocast context (``Runtime.autocast``).
        l2: L2-normalise each batch's features on ``device``.

    Returns:
        float32 tensor of shape (N, D) on the CPU.
    """
    x = x_uint8_nhwc  # numpy arrays (memory maps of split files) are converted batch by batch
    if not isinstance(x, (torch.Tensor, np.ndarray)) or x.dtype not in (torch.uint8, np.uint8) or x.ndim != 4:
        raise ValueError("x_uint8_nhwc must be a uint8 array/tensor of shape (N, H, W, C)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if x.shape[0] == 0:
        raise ValueError("x_uint8_nhwc is empty (N = 0)")
    dev = torch.device(device)
    channels = x.shape[-1]
    mean_t = _channel_stats(mean, "mean", channels, dev)
    std_t = _channel_stats(std, "std", channels, dev)
    scale = 1.0 / (255.0 * std_t)
    shift = mean_t / std_t

    module = _owning_module(model_fn)
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    pin = dev.type == "cuda" and (isinstance(x, np.ndarray) or x.device.type == "cpu")
    if autocast is None:
        autocast = partial(torch.autocast, device_type=dev.type, dtype=torch.bfloat16, enabled=amp)
    out: torch.Tensor | None = None
    try:
        with torch.no_grad(), autocast():
            for start in range(0, x.shape[0], batch_size):
                batch = x[start : start + batch_size]
                if isinstance(batch, np.ndarray):
                    batch = torch.from_numpy(np.array(batch))  # a copy: memory maps are read-only
                if pin:
                    batch = batch.pin_memory()
                batch = batch.to(dev, non_blocking=True)
                if normalise is None:
                    # NHWC -> NCHW view whose strides are already channels_last.
                    imgs = batch.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
                    imgs = imgs * scale - shift
                else:
                    imgs = normalise(batch)
                feats = model_fn(imgs).flatten(1).float()
                if l2:
                    feats = F.normalize(feats, dim=1)
                if out is None:  # the feature size is known after the first batch
                    out = torch.empty((x.shape[0], feats.shape[1]), dtype=torch.float32)
                out[start : start + len(feats)] = feats.cpu()
    finally:
        if was_training:
            module.train()  # type: ignore[union-attr]
    return out


def embed_images(model, images, mean, std, runtime, batch_size: int = 1024,
                 space: str = "projection", transform=None) -> np.ndarray:
    """L2-normalised embeddings (N, d) float32 of uint8 NHWC images (array, memmap or tensor) by a
    live encoder ``model`` (``model(x) -> (h, z)``): ``space`` "projection" (head output z) or
    "backbone" (pooled features h), with the run's eval transform
    (:func:`ltcl.data.augment.to_float_normalised`; ``transform``, e.g. the run's augmentation, in
    its place) and autocast (``runtime.autocast``).  The model is put in eval mode and restored."""
    if space not in ("projection", "backbone"):
        raise ValueError(f"space must be 'projection' or 'backbone', got {space!r}")
    pick = 1 if space == "projection" else 0
    was_training = model.training
    model.eval()
    try:
        out = extract_features(lambda xb: model(xb)[pick], images, batch_size, runtime.device, mean, std,
                               normalise=transform or partial(to_float_normalised, mean=mean, std=std),
                               autocast=runtime.autocast, l2=True)
    finally:
        model.train(was_training)
    return out.numpy()

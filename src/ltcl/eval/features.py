"""Frozen feature extraction for linear probing, KNN and cluster metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

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
    chunks: list[torch.Tensor] = []
    try:
        with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            for start in range(0, x.shape[0], batch_size):
                batch = x[start : start + batch_size]
                if isinstance(batch, np.ndarray):
                    batch = torch.from_numpy(np.array(batch))  # a copy: memory maps are read-only
                if pin:
                    batch = batch.pin_memory()
                batch = batch.to(dev, non_blocking=True)
                # NHWC -> NCHW view whose strides are already channels_last.
                imgs = batch.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
                imgs = imgs * scale - shift
                out = model_fn(imgs)
                chunks.append(out.flatten(1).float().cpu())
    finally:
        if was_training:
            module.train()  # type: ignore[union-attr]
    return torch.cat(chunks, dim=0)

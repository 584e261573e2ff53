"""The two reference representations every probe table is read against (issue 21: is the encoder
worth using?), evaluated by exactly the probe and kNN an encoder gets (``ltcl.eval.protocols``):

- raw pixels: each image flattened, scaled to [0, 1] (``/ 255``) and standardised per dimension
  with the mean and population std of the probe-training split ``probe_full`` (a constant
  dimension keeps std 1); an encoder below this row has learnt nothing a linear model on the
  pixels does not already see;
- a randomly initialised encoder of the same architecture: f before training, built from the
  ``model`` params and the training split's channel statistics after ``torch.manual_seed`` with
  ``pretrain.seed``, as ``ltcl.train.session.new_encoder`` builds f's starting point once
  ``setup_runtime`` has seeded torch; an encoder near this row has learnt little.
"""

from __future__ import annotations

import numpy as np
import torch

from ltcl.data.augment import dataset_stats
from ltcl.models.checkpoint import build_from_spec, encoder_spec
from ltcl.models.heads import Encoder

REFERENCES = ("pixels", "random")
# float64 temporaries of at most this many bytes per chunk of rows (memory stays bounded)
_CHUNK_BYTES = 64 << 20


def _row_chunks(n: int, dim: int):
    step = max(1, _CHUNK_BYTES // (8 * max(1, dim)))
    return (slice(i, min(i + step, n)) for i in range(0, n, step))


def pixel_stats(x_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and population std (float64) of the flattened ``x / 255`` of the uint8
    images ``x_uint8`` (N, H, W, C); a dimension with std 0 gets std 1. Two passes over row chunks,
    so a memory map of a large split is never converted whole."""
    n = x_uint8.shape[0]
    if n == 0:
        raise ValueError("pixel_stats needs at least one image")
    dim = int(np.prod(x_uint8.shape[1:]))
    total = np.zeros(dim)
    for sl in _row_chunks(n, dim):
        total += (np.asarray(x_uint8[sl], dtype=np.float64).reshape(-1, dim) / 255.0).sum(axis=0)
    mean = total / n
    sq = np.zeros(dim)
    for sl in _row_chunks(n, dim):
        sq += ((np.asarray(x_uint8[sl], dtype=np.float64).reshape(-1, dim) / 255.0 - mean) ** 2).sum(axis=0)
    std = np.sqrt(sq / n)
    return mean, np.where(std > 0, std, 1.0)


def pixel_features(x_uint8: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """``((x / 255) - mean) / std`` of the flattened images, computed in float64 and returned as a
    float32 (N, H*W*C) tensor on the CPU."""
    n = x_uint8.shape[0]
    dim = int(np.prod(x_uint8.shape[1:]))
    if mean.shape != (dim,) or std.shape != (dim,):
        raise ValueError(f"mean / std have shapes {mean.shape} / {std.shape}, the images {dim} values each")
    out = np.empty((n, dim), dtype=np.float32)
    for sl in _row_chunks(n, dim):
        out[sl] = (np.asarray(x_uint8[sl], dtype=np.float64).reshape(-1, dim) / 255.0 - mean) / std
    return torch.from_numpy(out)


def random_encoder(model_cfg, x_train: np.ndarray, seed: int) -> tuple[Encoder, dict]:
    """(the untrained encoder, its spec): the ``model`` architecture for images like ``x_train``
    (uint8 NHWC, the training split), input statistics from it, weights drawn after
    ``torch.manual_seed(seed)``. The global RNG state is restored afterwards."""
    if x_train.ndim != 4 or x_train.shape[1] != x_train.shape[2]:
        raise ValueError(f"training images must be square (N, H, W, C), got shape {x_train.shape}")
    mean, std = dataset_stats(x_train)
    spec = encoder_spec(model_cfg, x_train.shape[-1], x_train.shape[1], mean, std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_from_spec(spec)
    return model.eval(), spec

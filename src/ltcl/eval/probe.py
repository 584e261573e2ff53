"""Linear probing on pre-extracted frozen features (SDCLR / COLT / KDUP protocol).

A single ``nn.Linear`` is trained on frozen encoder features with SGD (momentum 0.9,
weight decay 0, lr 30, batch 128, 30 epochs, lr x0.1 at epochs 10 and 20; the few-shot
variant uses 100 epochs with milestones 40/60). After every epoch the probe is scored on the
validation split; the weights of the best validation epoch (first one on ties) are kept and
reported on the test split (KDUP Sec. 4.1, following COLT / SDCLR).

Because the features are pre-extracted, each epoch is a handful of small matmuls; the whole
probe runs on the given device without a DataLoader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

FeatureNorm = Literal["none", "l2", "standardize"]
_FEATURE_NORMS: tuple[str, ...] = ("none", "l2", "standardize")
_EVAL_CHUNK = 16384


@dataclass
class ProbeResult:
    """Outcome of :func:`train_linear_probe`.

    Attributes:
        best_epoch: 1-based epoch whose weights were kept (the last epoch if val is empty).
        best_val_acc: validation accuracy (percent) of that epoch; NaN if val is empty.
        test_pred: int64 predictions on the test features with the kept weights, shape (N_test,).
        test_acc: test accuracy in percent (NaN if the test set is empty).
        history: one dict per epoch: ``{"epoch", "train_loss", "val_acc", "lr"}``.
    """

    best_epoch: int
    best_val_acc: float
    test_pred: np.ndarray
    test_acc: float
    history: list[dict[str, float]] = field(default_factory=list)


def _as_features(x: npt.ArrayLike | torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) feature matrix, got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32)


def _as_labels(
    y: npt.ArrayLike | torch.Tensor, name: str, n: int, num_classes: int, device: torch.device
) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} has {t.numel()} labels but the matching features have {n} rows")
    t = t.to(device=device, dtype=torch.int64)
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"{name} labels must lie in [0, num_classes={num_classes})")
    return t


def normalize_features(
    train_x: torch.Tensor, others: list[torch.Tensor], feature_norm: FeatureNorm
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Apply ``feature_norm`` to the train features and, with train statistics, to ``others``.

    ``"none"``: unchanged; ``"l2"``: each row scaled to unit L2 norm; ``"standardize"``:
    per-dimension z-score with the train mean / std (std of constant dimensions set to 1).
    """
    if feature_norm not in _FEATURE_NORMS:
        raise ValueError(f"feature_norm must be one of {_FEATURE_NORMS}, got {feature_norm!r}")
    if feature_norm == "l2":
        return F.normalize(train_x, dim=1), [F.normalize(o, dim=1) for o in others]
    if feature_norm == "standardize":
        mu = train_x.mean(dim=0, keepdim=True)
        sd = train_x.std(dim=0, unbiased=False, keepdim=True)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        return (train_x - mu) / sd, [(o - mu) / sd for o in others]
    return train_x, others


def _init_linear(in_dim: int, num_classes: int, generator: torch.Generator, device: torch.device) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default init U(-1/sqrt(D), 1/sqrt(D)), drawn from ``generator``.

    Drawing from an explicit generator keeps the probe deterministic without touching the
    global RNG state.
    """
    layer = nn.Linear(in_dim, num_classes)
    bound = 1.0 / math.sqrt(in_dim)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(num_classes, in_dim, generator=generator) * 2 * bound - bound)
        layer.bias.copy_(torch.rand(num_classes, generator=generator) * 2 * bound - bound)
    return layer.to(device)


@torch.no_grad()
def _predict(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    return torch.cat([layer(chunk).argmax(dim=1) for chunk in x.split(_EVAL_CHUNK)])


def _accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).double().mean() * 100.0) if y.numel() else float("nan")


def _fit(
    tr_x: torch.Tensor,
    tr_y: torch.Tensor,
    va_x: torch.Tensor,
    va_y: torch.Tensor,
    te_x: torch.Tensor,
    num_classes: int,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    milestones: tuple[int, ...],
    gamma: float,
    seed: int,
) -> tuple[int, float, list[dict[str, float]], torch.Tensor]:
    """SGD training loop of :func:`train_linear_probe`; returns (best_epoch, best_val, history, test_pred)."""
    dev = tr_x.device
    has_val = va_y.numel() > 0
    generator = torch.Generator().manual_seed(seed)
    layer = _init_linear(tr_x.shape[1], num_classes, generator, dev)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)

    n_train = tr_x.shape[0]
    best_epoch, best_val = epochs, float("nan")
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        layer.train()
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        current_lr = optimizer.param_groups[0]["lr"]
        perm = torch.randperm(n_train, generator=generator).to(dev)
        # one gather per epoch, then contiguous mini-batch views
        for xb, yb in zip(tr_x[perm].split(batch_size), tr_y[perm].split(batch_size)):
            loss = F.cross_entropy(layer(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * yb.numel()
        scheduler.step()
        layer.eval()
        val_acc = _accuracy(_predict(layer, va_x), va_y) if has_val else float("nan")
        history.append(
            {"epoch": epoch, "train_loss": float(loss_sum) / n_train, "val_acc": val_acc, "lr": current_lr}
        )
        if has_val and (best_state is None or val_acc > best_val):
            best_epoch, best_val = epoch, val_acc
            best_state = {k: v.detach().clone() for k, v in layer.state_dict().items()}

    if best_state is not None:
        layer.load_state_dict(best_state)
    layer.eval()
    test_pred = _predict(layer, te_x)
    return best_epoch, best_val, history, test_pred


# SDCLR's probe schedule divides the learning rate by 10 at each milestone (not a param)
LR_DECAY = 0.1


def train_linear_probe(
    train_x: npt.ArrayLike | torch.Tensor,
    train_y: npt.ArrayLike | torch.Tensor,
    val_x: npt.ArrayLike | torch.Tensor,
    val_y: npt.ArrayLike | torch.Tensor,
    test_x: npt.ArrayLike | torch.Tensor,
    test_y: npt.ArrayLike | torch.Tensor,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    milestones: tuple[int, ...],
    seed: int,
    feature_norm: FeatureNorm,
    gamma: float = LR_DECAY,
    device: str | torch.device = "cpu",
    cpu_threads: int | None = 1,
) -> ProbeResult:
    """Train a linear classifier on frozen features; select the epoch on val, report on test.

    Args:
        train_x, val_x, test_x: features, shape (N, D) (numpy or torch, any float dtype).
        train_y, val_y, test_y: integer labels in [0, num_classes).
        num_classes: number of output classes.
        epochs, lr, momentum, weight_decay, batch_size: SGD settings (SDCLR defaults).
        milestones, gamma: ``MultiStepLR`` schedule, stepped once per epoch.
        seed: seeds the weight init and the per-epoch shuffling (``torch.Generator``), so
            results are deterministic given ``seed``.
        feature_norm: ``"none"`` | ``"l2"`` | ``"standardize"``, see :func:`normalize_features`.
        device: where the probe is trained.
        cpu_threads: torch intra-op threads while training on the CPU (restored afterwards;
            ``None`` keeps the current setting). Default 1: a (128, D) x (D, C) step is far
            too small for threading to pay off, and on a busy 2-core machine multi-threaded
            tiny ops were measured 10-30x slower than single-threaded ones.

    Returns:
        :class:`ProbeResult`. When the validation set is empty the last epoch's weights are
        used and ``best_val_acc`` is NaN.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device)
    xs = [_as_features(x, n, dev) for x, n in ((train_x, "train_x"), (val_x, "val_x"), (test_x, "test_x"))]
    if xs[0].shape[0] == 0:
        raise ValueError("train_x is empty")
    dims = {x.shape[1] for x in xs if x.shape[0]}
    if len(dims) != 1:
        raise ValueError(f"train_x, val_x and test_x must have the same feature dimension, got {sorted(dims)}")
    ys = [
        _as_labels(y, n, x.shape[0], num_classes, dev)
        for y, n, x in ((train_y, "train_y", xs[0]), (val_y, "val_y", xs[1]), (test_y, "test_y", xs[2]))
    ]
    tr_x, (va_x, te_x) = normalize_features(xs[0], xs[1:], feature_norm)
    tr_y, va_y, te_y = ys

    previous_threads = torch.get_num_threads()
    if cpu_threads is not None and dev.type == "cpu":
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1 or None, got {cpu_threads}")
        torch.set_num_threads(cpu_threads)
    try:
        best_epoch, best_val, history, test_pred = _fit(
            tr_x, tr_y, va_x, va_y, te_x, num_classes, epochs, lr, momentum, weight_decay,
            batch_size, milestones, gamma, seed,
        )
    finally:
        torch.set_num_threads(previous_threads)
    return ProbeResult(
        best_epoch=best_epoch,
        best_val_acc=best_val,
        test_pred=test_pred.cpu().numpy(),
        test_acc=_accuracy(test_pred, te_y),
        history=history,
    )

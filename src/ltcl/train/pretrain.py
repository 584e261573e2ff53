"""Pre-training: build encoder, augmentation and method from params, train, and report."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

import ltcl.methods  # noqa: F401 - registers every method
from ltcl.data.augment import SimCLRAugment, dataset_stats
from ltcl.methods.base import Method, TrainSet, get_method
from ltcl.models.heads import Encoder
from ltcl.models.checkpoint import build_from_spec, encoder_spec
from ltcl.train.loop import EpochLog, fit
from ltcl.runtime import Runtime


def build_augment(aug_cfg, spec: dict, device: torch.device) -> SimCLRAugment:
    return SimCLRAugment(
        image_size=spec["image_size"], channels=spec["channels"], crop_scale=tuple(aug_cfg.crop_scale),
        jitter=tuple(aug_cfg.jitter), jitter_p=aug_cfg.jitter_p, gray_p=aug_cfg.gray_p,
        flip=aug_cfg.flip, mean=spec["mean"], std=spec["std"],
    ).to(device)


def new_encoder(model_cfg, x_train: np.ndarray, runtime: Runtime) -> tuple[Encoder, dict]:
    """A freshly initialised encoder for images like ``x_train`` (uint8 NHWC) and its spec."""
    if x_train.ndim != 4:
        raise ValueError(f"training images must be (N, H, W, C), got shape {x_train.shape}")
    if x_train.shape[1] != x_train.shape[2]:
        raise ValueError(f"training images must be square, got {x_train.shape[1]}x{x_train.shape[2]}")
    mean, std = dataset_stats(x_train)
    spec = encoder_spec(model_cfg, x_train.shape[-1], x_train.shape[1], mean, std)
    model = build_from_spec(spec).to(runtime.device, memory_format=runtime.memory_format())
    return model, spec


def make_method(name: str, model: Encoder, data: TrainSet, cfg, runtime: Runtime,
                augment: SimCLRAugment, **kwargs) -> Method:
    return get_method(name)(model, data, cfg, runtime, augment, **kwargs)


class LiveLogger:
    """Per-epoch curves with dvclive (``dvc plots`` and the report read them)."""

    def __init__(self, directory: str | Path, prefix: str = ""):
        from dvclive import Live

        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)
        self.prefix = prefix

    def __call__(self, log: EpochLog) -> None:
        self.live.log_metric("loss", log.loss)
        self.live.log_metric("lr", log.lr)
        self.live.log_metric("images_per_s", log.images_per_s)
        for k, v in log.parts.items():
            self.live.log_metric(f"loss_{k}", v)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()


def train_summary(logs: list[EpochLog], seconds: float) -> dict:
    last = logs[-1] if logs else None
    steps = sum(l.steps for l in logs)
    return {
        "epochs": len(logs),
        "steps": steps,
        "final_loss": None if last is None else last.loss,
        "seconds": seconds,
        "seconds_per_epoch": seconds / max(len(logs), 1),
        "images_per_s": float(np.mean([l.images_per_s for l in logs])) if logs else 0.0,
    }


def run_training(method: Method, cfg, runtime: Runtime, live_dir: Optional[str | Path],
                 before_epoch: Optional[Callable[[int], None]] = None, desc: str = "pretrain",
                 start_epoch: int = 0, after_epoch: Optional[Callable[[EpochLog], None]] = None,
                 ) -> tuple[list[EpochLog], dict]:
    logger = LiveLogger(live_dir) if live_dir else None

    def _after(log: EpochLog) -> None:
        if logger:
            logger(log)
        if after_epoch:
            after_epoch(log)

    t0 = time.perf_counter()
    try:
        logs = fit(method, cfg, runtime, start_epoch=start_epoch, before_epoch=before_epoch,
                   after_epoch=_after, desc=desc, seed=cfg.seed)
    finally:
        if logger:
            logger.close()
    return logs, train_summary(logs, time.perf_counter() - t0)


def history(logs: list[EpochLog]) -> list[dict]:
    return [asdict(l) for l in logs]


def load_train_split(lt_dir: str | Path):
    """The long-tailed pre-training split (images, labels) and its manifest."""
    from ltcl.data.splits import load_manifest, load_split

    manifest = load_manifest(lt_dir)
    x, y = load_split(lt_dir, "train")
    return x, y, manifest


def check_batch_size(cfg, n: int, what: str = "the training set") -> None:
    if cfg.batch_size > n:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than {what} ({n} images); "
                         f"lower it to at most {n}")


def run_pretrain_stage(params, lt_dir: str | Path, ckpt_path: str | Path, metrics_path: str | Path,
                       live_dir: str | Path | None) -> dict:
    """Pre-train f on the long-tailed split with ``params.pretrain.method``."""
    from ltcl.io import write_json
    from ltcl.models.checkpoint import save_encoder
    from ltcl.params import params_dict
    from ltcl.runtime import setup_runtime

    cfg = params.pretrain
    x, y, manifest = load_train_split(lt_dir)
    check_batch_size(cfg, len(x))
    runtime = setup_runtime(params.runtime, cfg.seed)
    model, spec = new_encoder(params.model, x, runtime)
    augment = build_augment(params.augment, spec, runtime.device)
    data = TrainSet.from_numpy(x, y, len(manifest["class_names"]), runtime.device)
    method = make_method(cfg.method, model, data, cfg, runtime, augment)
    logs, summary = run_training(method, cfg, runtime, live_dir, desc="pretrain")
    save_encoder(ckpt_path, model, spec, params=params_dict(params, "model", "augment", "pretrain"),
                 history=history(logs))
    metrics = {"method": cfg.method, **summary, "train_images": len(x)}
    write_json(metrics_path, metrics)
    return metrics

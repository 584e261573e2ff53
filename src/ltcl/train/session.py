"""One training session of a stage: build the encoder and augmentation, run the loop with curves
(dvclive) and resumable checkpoints, and summarise it.  Shared by the ood-sampling warm-up,
pretrain and distill (``ltcl.pipeline``); the epoch loop itself is ``ltcl.train.loop``."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ltcl.collectives import is_main
from ltcl.data.augment import SimCLRAugment, dataset_stats
from ltcl.errors import UserError
from ltcl.methods.base import Method
from ltcl.models.checkpoint import build_from_spec, encoder_spec
from ltcl.models.heads import Encoder
from ltcl.runtime import Runtime
from ltcl.train.loop import EpochLog, build_optimizer, fit, make_scaler


def build_augment(aug_cfg, spec: dict, device: torch.device) -> SimCLRAugment:
    return SimCLRAugment(
        image_size=spec["image_size"], channels=spec["channels"], crop_scale=tuple(aug_cfg.crop_scale),
        jitter=tuple(aug_cfg.jitter), jitter_p=aug_cfg.jitter_p, gray_p=aug_cfg.gray_p,
        flip=aug_cfg.flip, mean=spec["mean"], std=spec["std"],
    ).to(device)


def new_encoder(model_cfg, x_train: np.ndarray, runtime: Runtime) -> tuple[Encoder, dict]:
    """A freshly initialised encoder for images like ``x_train`` (uint8 NHWC) and its spec."""
    if x_train.ndim != 4:
        raise UserError(f"training images must be (N, H, W, C), got shape {x_train.shape}")
    if x_train.shape[1] != x_train.shape[2]:
        raise UserError(f"training images must be square, got {x_train.shape[1]}x{x_train.shape[2]}")
    mean, std = dataset_stats(x_train)
    spec = encoder_spec(model_cfg, x_train.shape[-1], x_train.shape[1], mean, std)
    model = build_from_spec(spec).to(runtime.device, memory_format=runtime.memory_format())
    return model, spec


class LiveLogger:
    """Per-epoch curves with dvclive (``dvc plots`` and the report read them): loss, learning rate
    and the loss terms, functions of the inputs and params only (a declared plots output stays
    byte-stable; the images/s of each epoch go to the run record, :func:`train_timings`)."""

    def __init__(self, directory: str | Path):
        from dvclive import Live

        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)

    def __call__(self, log: EpochLog) -> None:
        self.live.log_metric("loss", log.loss)
        self.live.log_metric("lr", log.lr)
        for k, v in log.parts.items():
            self.live.log_metric(f"loss_{k}", v)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()


def empty_curves(live_dir) -> None:
    """A stage that trains nothing still creates its (empty) curve folder: DVC requires every
    declared plots output to exist."""
    if live_dir:
        (Path(live_dir) / "plots" / "metrics").mkdir(parents=True, exist_ok=True)


def train_summary(logs: list[EpochLog]) -> dict:
    """The session's metrics: epochs, optimiser steps, the last epoch's loss (no timings)."""
    last = logs[-1] if logs else None
    return {"epochs": len(logs), "steps": sum(l.steps for l in logs),
            "final_loss": None if last is None else last.loss}


def train_timings(logs: list[EpochLog], seconds: float) -> dict:
    """The session's timings, for the stage's run record (``ltcl.runrecord``): its wall seconds,
    seconds per epoch, the mean of the epochs' images/s, and each epoch's seconds and images/s."""
    return {
        "seconds": seconds,
        "seconds_per_epoch": seconds / max(len(logs), 1),
        "images_per_s": float(np.mean([l.images_per_s for l in logs])) if logs else 0.0,
        "per_epoch": [{"epoch": l.epoch, "seconds": l.seconds, "images_per_s": l.images_per_s} for l in logs],
    }


def history(logs: list[EpochLog]) -> list[dict]:
    """Every field of each epoch's log, timings included: the resume state's (a resumed run's
    timings count the epochs before the stop)."""
    return [asdict(l) for l in logs]


def weights_history(logs: list[EpochLog]) -> list[dict]:
    """Each epoch's log without its timings (epoch, loss, lr, steps, loss terms): the ``history``
    a model file stores, so that the same training gives the same bytes."""
    return [{k: v for k, v in asdict(l).items() if k not in ("seconds", "images_per_s")} for l in logs]


def run_session(method: Method, cfg, runtime: Runtime, live_dir: Optional[str | Path],
                 before_epoch: Optional[Callable[[int], None]] = None, desc: str = "pretrain",
                 start_epoch: int = 0, after_epoch: Optional[Callable[[EpochLog], None]] = None,
                 end_epoch: Optional[int] = None, optimizer=None, resumer=None,
                 resume_state: Optional[dict] = None) -> tuple[list[EpochLog], dict, dict]:
    """Train with the shared loop; with a ``resumer`` save a checkpoint every
    ``checkpoint_every`` epochs (and at the end), and with ``resume_state`` (from
    ``resumer.load()``) continue where it stopped.  Returns all epoch logs, the summary
    (:func:`train_summary`, for the metrics) and the timings (:func:`train_timings`, for the
    run record).

    Under torchrun (a process group of more than one rank) the method's step runs through
    DistributedDataParallel (see ``fit``), and rank 0 alone writes curves and checkpoints."""
    optimizer = optimizer or build_optimizer(method.parameters(), cfg)
    scaler = make_scaler(runtime)
    prev: list[EpochLog] = []
    if resume_state is not None:
        resumer.restore(resume_state, method, optimizer, scaler)
        start_epoch = int(resume_state["epoch"])
        prev = [EpochLog(**d) for d in resume_state["logs"]]
    # (fit wraps the method in DDP under torchrun, after this restore: it starts from the resumed weights)
    main = is_main()
    if not main:
        resumer = None  # rank 0 alone writes the resume checkpoint
    logger = LiveLogger(live_dir) if live_dir and main else None
    if logger:  # DVC removes the curves before rerunning a stage: replay the epochs before the stop
        for log in prev:
            logger(log)
    done: list[EpochLog] = list(prev)

    def _after(log: EpochLog) -> None:
        done.append(log)
        if logger:
            logger(log)
        if after_epoch:
            after_epoch(log)
        if resumer is not None:
            resumer.save(log.epoch, method, optimizer, history(done), scaler)

    t0 = time.perf_counter()
    try:
        fit(method, cfg, runtime, start_epoch=start_epoch, end_epoch=end_epoch, before_epoch=before_epoch,
            after_epoch=_after, desc=desc, seed=cfg.seed, optimizer=optimizer, scaler=scaler)
    finally:
        if logger:
            logger.close()
    if resumer is not None and done:
        resumer.save(done[-1].epoch, method, optimizer, history(done), scaler, force=True)
    seconds = time.perf_counter() - t0 + sum(l.seconds for l in prev)
    return done, train_summary(done), train_timings(done, seconds)


def load_train_split(lt_dir: str | Path):
    """The long-tailed pre-training split (images, labels) and its manifest."""
    from ltcl.data.splits import load_manifest, load_split

    manifest = load_manifest(lt_dir)
    x, y = load_split(lt_dir, "train")
    return x, y, manifest


def check_batch_size(cfg, n: int, what: str = "the training set", section: str = "pretrain") -> None:
    if cfg.batch_size > n:
        raise UserError(f"{section}.batch_size={cfg.batch_size} is larger than {what} ({n} images); "
                         f"lower it to at most {n}")


def stage_resumer(stage: str, params, entries: tuple[str, ...], inputs: list, resume_path, every: int, extra=None):
    """The stage's resumer, fingerprinted by the params it reads (``entries``: its
    ``ltcl.params.STAGE_PARAMS``, the view its model file stores) and the runtime section."""
    from ltcl.params import stage_view
    from ltcl.train.resume import Resumer, fingerprint

    fp = fingerprint(stage, stage_view(params, (*entries, "runtime")), inputs)
    return Resumer(resume_path, fp, every, extra)

"""The cost of one training step of every self-supervised pre-training method, relative to SimCLR's
(issue 25: "its per-epoch cost relative to SimCLR is measured"): the same images, batch, model and
augmentation for each method; the steps timed in interleaved rounds (simclr, sdclr, ..., then
again), so that a change in background load affects every method alike.

Each method is first run over every training image once (its epoch 0: BCL fills its loss memory,
PSD its neighbours) and then timed in its epoch 1, where BCL applies RandAugment with its memory's
weights.  A step includes the augmentation, the forward, the backward and the SGD update; the
epoch cost is the step cost times the steps per epoch, the same for every method, so the ratio of
steps is the ratio of epochs (PSD's neighbour search at a refresh and TASE's k-means come on
top, once per refresh; TASE before its warm-up is SimCLR's step).  ``simclr+gh`` is SimCLR with
Geometric Harmonization (``pretrain.gh``) after its warm-up (W = 0 here, so L_GH, its Sinkhorn and
its moving average run in every timed step).  MAK is a sampling strategy, not a step: its retraining
is SimCLR's step on N_id + N_b images, its update is timed by bench_sampling.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from ltcl.data.augment import SimCLRAugment
from ltcl.methods.base import TrainSet
from ltcl.params import ModelParams, Params
from ltcl.registry import PRETRAIN, get_method
from ltcl.runtime import Runtime
from ltcl.train.loop import build_optimizer
from ltcl.models.heads import encoder_for

CONFIG = {"backbone": "resnet18", "size": 32, "channels": 3, "n": 512, "batch": 128, "steps": 3, "rounds": 3}


# rows that are a registered method with pretrain keys of a composition (GH composes with SimCLR)
VARIANTS = {"simclr+gh": ("simclr", {"gh": {"enabled": True, "warmup_fraction": 0.0}})}


def methods() -> list[str]:
    """The self-supervised pre-training methods of the registry, SimCLR first, then :data:`VARIANTS`."""
    names = [n for n, e in PRETRAIN.items() if not e.supervised]
    return ["simclr"] + [n for n in names if n != "simclr"] + list(VARIANTS)


def _build(name: str, cfg: dict, x: np.ndarray, seed: int):
    torch.manual_seed(seed)
    cpu = torch.device("cpu")
    runtime = Runtime(device=cpu, amp_dtype=None, channels_last=True)
    method_name, extra = VARIANTS.get(name, (name, {}))
    pre = Params.model_validate({"ood": {"strategy": "none"},
                                 "pretrain": {"method": method_name, **extra}}).pretrain
    model = encoder_for(ModelParams(backbone=cfg["backbone"]), cfg["channels"], cfg["size"]).to(
        memory_format=runtime.memory_format()).train()
    augment = SimCLRAugment(cfg["size"], cfg["channels"], crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.4, 0.1),
                            jitter_p=0.8, gray_p=0.2, flip=True, mean=[0.5] * cfg["channels"],
                            std=[0.25] * cfg["channels"])
    data = TrainSet.from_numpy(x, np.arange(len(x)) % 10, 10, cpu)
    method = get_method(method_name)(model, data, pre, runtime, augment)
    return method, build_optimizer(method.parameters(), pre)


def _step(method, optimizer, idx) -> None:
    out = method.training_step(idx)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()


def run(cfg: dict | None = None, seed: int = 0) -> dict:
    cfg = {**CONFIG, **(cfg or {})}
    x = np.random.default_rng(seed).integers(0, 256, size=(cfg["n"], cfg["size"], cfg["size"], cfg["channels"]),
                                             dtype=np.uint8)
    gen = torch.Generator().manual_seed(seed)
    built = {}
    for name in methods():
        method, opt = _build(name, cfg, x, seed)
        method.on_epoch_start(0)
        for idx in torch.randperm(cfg["n"], generator=gen).split(cfg["batch"]):  # epoch 0: every image once
            if len(idx) == cfg["batch"]:
                _step(method, opt, idx)
        method.on_epoch_start(1)
        built[name] = (method, opt)
    times: dict[str, list[float]] = {n: [] for n in built}
    for _ in range(cfg["rounds"]):
        for name, (method, opt) in built.items():
            idx = torch.randperm(cfg["n"], generator=gen)[: cfg["batch"]]
            t0 = time.perf_counter()
            for _ in range(cfg["steps"]):
                _step(method, opt, idx)
            times[name].append((time.perf_counter() - t0) / cfg["steps"])
    step_s = {n: statistics.median(t) for n, t in times.items()}
    return {"config": cfg, "step_s": step_s, "vs_simclr": {n: s / step_s["simclr"] for n, s in step_s.items()},
            "notes": ["step cost per method in its epoch 1 (BCL: RandAugment at its memory's weights); "
                      "PSD's neighbour refresh and TASE's k-means are extra, once per refresh"]}

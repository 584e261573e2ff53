"""Benchmark 1: pre-training throughput of ltcl's path against a reference loop written the usual way.

One pre-training step = two augmented views of a batch, one forward of both views, NT-Xent
(``ltcl.losses.nt_xent``), backward, SGD step. images/s = batch images per second (each image
gives two views, so the network sees twice as many).

* reference: torchvision.transforms (RandomResizedCrop, RandomHorizontalFlip, ColorJitter with
  p 0.8, RandomGrayscale p 0.2, ToTensor, Normalize) on PIL images one at a time in a
  ``torch.utils.data.DataLoader`` (num_workers=0: the augmentation runs in the timed process,
  as it must on a machine whose second core is busy), fp32, contiguous memory. The batch is
  fetched from the loader inside the timed step.
* ltcl: the library's own training step (``ltcl.registry.get_method("simclr").training_step``,
  the one ``ltcl.train.loop`` runs): uint8 batch tensor -> ``SimCLRAugment`` (kornia,
  per-sample parameters, whole batch) -> channels_last model, under the runtime's autocast.
  Measured twice: bf16 autocast (``runtime.amp: true``) and fp32 (``runtime.amp: false``); the
  ``auto`` row is the variant ``runtime.amp: auto`` picks on this machine, PASS when it is the
  faster of the two.

For 1-channel data both paths use brightness/contrast jitter only, as ``SimCLRAugment`` does.
Steps of all variants are timed round-robin; the median step time is reported. The data path
alone (two views of a batch, no model) is timed too ("augment_only"). FLOPs of the
ltcl step (forward + backward, ``FlopCounterMode``) are counted during its warm-up step and
reused by benchmark 2.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T

from ltcl.data.augment import SimCLRAugment
from ltcl.losses.contrastive import nt_xent
from ltcl.methods.base import TrainSet
from ltcl.models.heads import encoder_for
from ltcl.params import ModelParams, Params
from ltcl.registry import get_method
from ltcl.runtime import Runtime
from ltcl.train.loop import build_optimizer

try:
    from _util import interleaved_steps, median
except ImportError:  # imported as benchmarks.bench_throughput
    from benchmarks._util import interleaved_steps, median

TARGET_RATIO = 3.0
TEMPERATURE = 0.2
JITTER = (0.4, 0.4, 0.4, 0.1)
CROP_SCALE = (0.08, 1.0)
JITTER_P, GRAY_P = 0.8, 0.2  # SimCLR's, as reference_transform applies them
# the schema's pretrain section (every key a method reads, GH's included) with the benchmark's SGD settings
SGD = SimpleNamespace(**dict(Params().pretrain.model_copy(update=dict(
    lr=0.1, momentum=0.9, weight_decay=1e-4, temperature=TEMPERATURE, alpha=0.0, pruned_branch=False,
    prune_ratio=0.9))))

# batch 256 for ResNet-18 does not fit the 10-minute budget on this CPU (one fp32 step of 512
# views takes about a minute single-threaded), see the module's result "notes".
CONFIGS = (
    dict(name="resnet18@32x32x3", backbone="resnet18", size=32, channels=3, batch=32, warmup=1,
         max_steps=6, max_seconds=50.0),
    dict(name="resnet8@28x28x1", backbone="resnet8", size=28, channels=1, batch=256, warmup=2,
         max_steps=10, max_seconds=25.0),
)


def native_bf16() -> bool:
    """The CPU computes bf16 natively (the test ``runtime.amp: auto`` uses)."""
    from ltcl.runtime import amp_decision

    return amp_decision(torch.device("cpu"), "auto").dtype is not None


# ------------------------------------------------------------------------------------ reference
class PairDataset(Dataset):
    """The usual SimCLR dataset (SDCLR/COLT's ``CIFAR10Pair``): a PIL image, two transformed views."""

    def __init__(self, x: np.ndarray, transform):
        self.x = x
        self.transform = transform
        self.gray = x.shape[-1] == 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        img = Image.fromarray(self.x[i, :, :, 0] if self.gray else self.x[i], "L" if self.gray else "RGB")
        return self.transform(img), self.transform(img)


def reference_transform(size: int, channels: int) -> T.Compose:
    ops = [T.RandomResizedCrop(size, scale=CROP_SCALE), T.RandomHorizontalFlip()]
    if channels == 3:
        ops += [T.RandomApply([T.ColorJitter(*JITTER)], p=0.8), T.RandomGrayscale(p=0.2)]
    else:  # as SimCLRAugment: no saturation / hue / grayscale without colour
        ops += [T.RandomApply([T.ColorJitter(JITTER[0], JITTER[1], 0.0, 0.0)], p=0.8)]
    ops += [T.ToTensor(), T.Normalize([0.5] * channels, [0.5] * channels)]
    return T.Compose(ops)


class ReferencePath:
    """fp32, contiguous, torchvision/PIL transforms in a DataLoader with num_workers=0."""

    def __init__(self, cfg: dict, x: np.ndarray, seed: int = 0):
        torch.manual_seed(seed)
        self.batch = cfg["batch"]
        self.model = encoder_for(ModelParams(backbone=cfg["backbone"]), cfg["channels"], cfg["size"]).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=SGD.lr, momentum=SGD.momentum,
                                   weight_decay=SGD.weight_decay)
        self.loader = DataLoader(PairDataset(x, reference_transform(cfg["size"], cfg["channels"])),
                                 batch_size=self.batch, shuffle=True, drop_last=True, num_workers=0)
        self.it = iter(self.loader)

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def step(self) -> None:
        v1, v2 = self._next()
        _, z = self.model(torch.cat([v1, v2]))
        loss = nt_xent(z[: len(v1)], z[len(v1):], TEMPERATURE)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


# ------------------------------------------------------------------------------------ ltcl
class LtclPath:
    """The library's SimCLR training step (kornia on uint8 batches, channels_last, autocast)."""

    def __init__(self, cfg: dict, x: np.ndarray, amp_dtype: torch.dtype | None, batch: int, seed: int = 0):
        torch.manual_seed(seed)
        cpu = torch.device("cpu")
        self.runtime = Runtime(device=cpu, amp_dtype=amp_dtype, channels_last=True)
        self.batch = batch
        model = encoder_for(ModelParams(backbone=cfg["backbone"]), cfg["channels"], cfg["size"]).to(
            memory_format=self.runtime.memory_format()).train()
        augment = SimCLRAugment(cfg["size"], cfg["channels"], crop_scale=CROP_SCALE, jitter=JITTER, jitter_p=JITTER_P,
                                gray_p=GRAY_P, flip=True, mean=[0.5] * cfg["channels"], std=[0.5] * cfg["channels"])
        data = TrainSet.from_numpy(x, np.zeros(len(x), dtype=np.int64), 1, cpu)
        self.method = get_method("simclr")(model, data, SGD, self.runtime, augment)
        self.opt = build_optimizer(self.method.parameters(), SGD)
        self.gen = torch.Generator().manual_seed(seed)
        self.n = len(x)

    def views(self):
        """The data path of a step alone: two augmented views of a random batch."""
        return self.method.views(torch.randperm(self.n, generator=self.gen)[: self.batch])

    def step(self) -> None:
        idx = torch.randperm(self.n, generator=self.gen)[: self.batch]
        # what ltcl.train.loop calls (``Method.step`` wraps training_step for DDP where it exists)
        out = getattr(self.method, "step", self.method.training_step)(idx)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()

    def count_flops(self) -> int:
        """Run one step under FlopCounterMode: forward + backward FLOPs (conv / matmul, 2 per MAC)."""
        counter = FlopCounterMode(display=False)
        with counter:
            self.step()
        return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------ measure
def measure(cfg: dict, bf16_batch: int | None = None, profiles: dict | None = None, seed: int = 0) -> dict:
    """Throughput of reference, ltcl-bf16 and ltcl-fp32 for one model config (round-robin timing)."""
    batch = cfg["batch"]
    bf16_batch = bf16_batch or batch
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(max(4 * batch, 2 * bf16_batch), cfg["size"], cfg["size"], cfg["channels"]),
                     dtype=np.uint8)
    paths = {
        "reference": ReferencePath(cfg, x, seed),
        "ltcl_bf16": LtclPath(cfg, x, torch.bfloat16, bf16_batch, seed),
        "ltcl_fp32": LtclPath(cfg, x, None, batch, seed),
    }
    batches = {"reference": batch, "ltcl_bf16": bf16_batch, "ltcl_fp32": batch}
    flops = {}
    t0 = time.perf_counter()
    for name, p in paths.items():  # warm-up (oneDNN primitives, kornia, allocator); FLOPs counted here
        for w in range(cfg.get("warmup", 1)):
            if w == 0 and name != "reference":
                flops[name] = p.count_flops()
            else:
                p.step()
    warmup_s = time.perf_counter() - t0
    times = interleaved_steps({k: p.step for k, p in paths.items()}, cfg.get("max_steps", 10),
                              cfg.get("max_seconds", 30.0), min_steps=cfg.get("min_steps", 2), profiles=profiles)
    # the data path alone (two views of a batch, no model): where the two designs differ
    aug = interleaved_steps({"reference": paths["reference"]._next, "ltcl": lambda: paths["ltcl_fp32"].views()},
                            cfg.get("augment_rounds", 5), 5.0, min_steps=2)
    out = {"config": {k: v for k, v in cfg.items()}, "warmup_s": warmup_s, "variants": {},
           "augment_only": {k: {"batch_s_median": median(ts), "images_per_s": batch / median(ts)}
                            for k, ts in aug.items()}}
    out["augment_only"]["ratio"] = out["augment_only"]["ltcl"]["images_per_s"] / out["augment_only"]["reference"][
        "images_per_s"]
    for name, ts in times.items():
        step_s = median(ts)
        out["variants"][name] = {
            "batch": batches[name], "steps_timed": len(ts), "step_s_median": step_s, "step_s": ts,
            "images_per_s": batches[name] / step_s, "views_per_s": 2 * batches[name] / step_s,
            "flops_per_step": flops.get(name),
        }
    ref = out["variants"]["reference"]["images_per_s"]
    for name in ("ltcl_bf16", "ltcl_fp32"):
        out["variants"][name]["ratio_vs_reference"] = out["variants"][name]["images_per_s"] / ref
    out["ratio"] = out["variants"]["ltcl_bf16"]["ratio_vs_reference"]  # the briefed ltcl path
    out["ratio_fp32"] = out["variants"]["ltcl_fp32"]["ratio_vs_reference"]
    out["pass"] = out["ratio"] >= TARGET_RATIO
    out["auto"] = auto_row(out["variants"])
    return out


def auto_row(variants: dict, decision=None) -> dict:
    """What ``runtime.amp: auto`` trains with on this machine (``ltcl.runtime.amp_decision``): its
    precision and reason, the measured throughput of that precision's variant, and whether it is
    the faster of bf16 and fp32 here (the check of the decision)."""
    from ltcl.runtime import amp_decision

    decision = decision or amp_decision(torch.device("cpu"), "auto")
    chosen = "ltcl_bf16" if decision.dtype == torch.bfloat16 else "ltcl_fp32"
    other = "ltcl_fp32" if chosen == "ltcl_bf16" else "ltcl_bf16"
    rate = variants[chosen]["images_per_s"]
    return {"precision": decision.name, "reason": decision.reason, "variant": chosen, "images_per_s": rate,
            "ratio_vs_reference": variants[chosen]["ratio_vs_reference"],
            "other_images_per_s": variants[other]["images_per_s"], "pass": rate >= variants[other]["images_per_s"]}


def run(configs=CONFIGS, profile: bool = True) -> dict:
    native = native_bf16()
    results = {"target_ratio": TARGET_RATIO, "native_bf16": native, "reference_num_workers": 0, "models": {},
               "notes": []}
    if not native:
        results["notes"].append(
            "this CPU has no native bf16 (no avx512_bf16 / amx_bf16 / bf16 flag): bf16 autocast runs "
            "through slow reference kernels, so the bf16 ltcl path is timed at a quarter of the batch to "
            "stay within the time budget (images/s is per image either way)")
    for cfg in configs:
        profiles: dict = {} if profile else None
        bf16_batch = cfg["batch"] if native else max(4, cfg["batch"] // 4)
        r = measure(cfg, bf16_batch=bf16_batch, profiles=profiles)
        if profiles:
            r["profiles"] = profiles
        results["models"][cfg["name"]] = r
    results["pass"] = all(m["pass"] for m in results["models"].values())
    return results


if __name__ == "__main__":
    import json
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    print(json.dumps(run(), indent=1, default=str))

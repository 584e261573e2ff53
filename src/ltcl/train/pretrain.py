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
from ltcl.train import distributed
from ltcl.train.loop import EpochLog, build_optimizer, fit
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


def empty_curves(live_dir) -> None:
    """A stage that trains nothing still creates its (empty) curve folder: DVC requires every
    declared plots output to exist."""
    if live_dir:
        (Path(live_dir) / "plots" / "metrics").mkdir(parents=True, exist_ok=True)


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
                 end_epoch: Optional[int] = None, optimizer=None, resumer=None,
                 resume_state: Optional[dict] = None) -> tuple[list[EpochLog], dict]:
    """Train with the shared loop; with a ``resumer`` save a checkpoint every
    ``checkpoint_every`` epochs (and at the end), and with ``resume_state`` (from
    ``resumer.load()``) continue where it stopped.  Returns all epoch logs and a summary.

    Under torchrun (a process group of more than one rank) the method's step runs through
    DistributedDataParallel (see ``fit``), and rank 0 alone writes curves and checkpoints."""
    from ltcl.train.loop import make_scaler

    optimizer = optimizer or build_optimizer(method.parameters(), cfg)
    scaler = make_scaler(runtime)
    prev: list[EpochLog] = []
    if resume_state is not None:
        resumer.restore(resume_state, method, optimizer, scaler)
        start_epoch = int(resume_state["epoch"])
        prev = [EpochLog(**d) for d in resume_state["logs"]]
    # (fit wraps the method in DDP under torchrun, after this restore: it starts from the resumed weights)
    main = distributed.is_main()
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
    return done, train_summary(done, seconds)


def history(logs: list[EpochLog]) -> list[dict]:
    return [asdict(l) for l in logs]


def load_train_split(lt_dir: str | Path):
    """The long-tailed pre-training split (images, labels) and its manifest."""
    from ltcl.data.splits import load_manifest, load_split

    manifest = load_manifest(lt_dir)
    x, y = load_split(lt_dir, "train")
    return x, y, manifest


def check_batch_size(cfg, n: int, what: str = "the training set", section: str = "pretrain") -> None:
    if cfg.batch_size > n:
        raise ValueError(f"{section}.batch_size={cfg.batch_size} is larger than {what} ({n} images); "
                         f"lower it to at most {n}")


def _setup(params, lt_dir):
    """Everything a pre-training run needs before step one: data, runtime, encoder, augment."""
    from ltcl.runtime import setup_runtime

    cfg = params.pretrain
    x, y, manifest = load_train_split(lt_dir)
    check_batch_size(cfg, len(x))
    runtime = setup_runtime(params.runtime, cfg.seed)
    model, spec = new_encoder(params.model, x, runtime)
    augment = build_augment(params.augment, spec, runtime.device)
    data = TrainSet.from_numpy(x, y, len(manifest["class_names"]), runtime.device)
    return cfg, x, y, manifest, runtime, model, spec, augment, data


def warmup_method_name(cfg) -> str:
    """The OOD warm-up is plain SimCLR on ID data (SDCLR when the run uses the pruned branch)."""
    return "sdclr" if (cfg.method == "sdclr" or cfg.sdclr) else "simclr"


def make_sampler(params, pool_path, data: TrainSet, spec: dict):
    from ltcl.data.pool import open_pool
    from ltcl.sampling.refresh import OODSampler

    ood = params.ood
    pool = open_pool(pool_path) if ood.strategy in ("kdup", "colt", "random") else None
    if pool is not None and len(pool) < ood.budget:
        raise ValueError(f"the OOD pool {pool_path} has {len(pool)} images, fewer than ood.budget="
                         f"{ood.budget}; raise ood.pool_size or lower ood.budget")
    return OODSampler(cfg=ood, pool=pool, id_images=data.x[data.domain == 0], mean=spec["mean"],
                      std=spec["std"], batch_size=params.pretrain.batch_size)


def save_selection(path, sel, extra_count: int) -> None:
    from ltcl.io import save_npz

    def arr(v, dtype):
        return np.asarray(v.cpu() if isinstance(v, torch.Tensor) else ([] if v is None else v), dtype=dtype)

    save_npz(path, strategy=np.asarray(sel.strategy), pool_indices=arr(sel.pool_indices, np.int64),
             cluster_of_each=arr(sel.cluster_of_each, np.int64), budgets=arr(sel.budgets, np.int64),
             id_clusters=arr(sel.id_labels, np.int64), id_indices=arr(sel.id_indices, np.int64),
             sample_tailness=arr(sel.sample_tailness, np.float32),
             cluster_tailness=arr(sel.cluster_tailness, np.float32), extra_count=np.asarray(extra_count))


def selection_metrics(sel, manifest: dict, y_id: np.ndarray) -> dict:
    """Budgets, cluster sizes, seconds per step (paper 003 Table 15) and, since the long-tailed
    split's labels exist, how well tailness tracks true rarity (the diagnostics a user cannot
    get from the paper: Spearman correlation, share of the budget given to Few-class clusters)."""
    from ltcl.sampling.select import tailness_diagnostics

    out: dict = {"strategy": sel.strategy, "selected": int(len(sel.cluster_of_each)),
                 "seconds": {k: round(float(v), 4) for k, v in sel.timings.items()}}
    if sel.budgets is not None:
        out["budgets"] = [int(b) for b in sel.budgets]
        out["cluster_sizes"] = np.bincount(sel.id_labels, minlength=len(sel.budgets)).tolist()
        out["cluster_tailness"] = [round(float(t), 5) for t in sel.cluster_tailness]
        counts = np.asarray(manifest["lt_counts"])
        few = [c for c, g in enumerate(manifest["groups"]) if g == "few"]
        groups = manifest["groups"]
        diag = tailness_diagnostics(sel.sample_tailness, y_id, counts, sel.id_labels, sel.budgets, few, groups)
        diag["cluster_majority_group"] = [groups[c] if c >= 0 else "empty" for c in diag["cluster_majority_class"]]
        out["diagnostics"] = diag
    return out


def run_ood_sampling_stage(params, lt_dir, pool_path, warmup_path, selection_path, metrics_path,
                           live_dir=None, resume_path=None) -> dict:
    """Warm-up (SimCLR on ID for ``ood.warmup_epochs``), then the first OOD sampling update."""
    from ltcl.io import save_checkpoint, write_json
    from ltcl.params import params_dict

    ood = params.ood
    if ood.strategy == "none":
        empty_curves(live_dir)
        no_training_state(resume_path, "ood.strategy is none: no warm-up")
        save_checkpoint(warmup_path, {"strategy": "none"})
        save_npz_empty(selection_path)
        metrics = {"strategy": "none", "selected": 0}
        write_json(metrics_path, metrics)
        return metrics
    cfg, x, y, manifest, runtime, model, spec, augment, data = _setup(params, lt_dir)
    if ood.clusters > len(x):
        raise ValueError(f"ood.clusters={ood.clusters} is larger than the ID set ({len(x)} images)")
    sampler = make_sampler(params, pool_path, data, spec)
    method = make_method(warmup_method_name(cfg), model, data, cfg, runtime, augment)
    optimizer = build_optimizer(method.parameters(), cfg)
    resumer = stage_resumer("ood-warmup", params, ("model", "augment", "pretrain", "ood"),
                            [Path(lt_dir) / "manifest.json"], resume_path, cfg.checkpoint_every)
    logs, summary = run_training(method, cfg, runtime, live_dir, desc="ood warm-up",
                                 end_epoch=ood.warmup_epochs, optimizer=optimizer, resumer=resumer,
                                 resume_state=resumer.load())
    sel = sampler.update(model, runtime)
    extra = sampler.extra_images(sel, seed=ood.seed)
    save_selection(selection_path, sel, len(extra))
    save_checkpoint(warmup_path, {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "spec": spec,
        "optimizer": optimizer.state_dict(), "method_state": method.state_dict(),
        "epoch": ood.warmup_epochs, "sampler": sampler.state_dict(), "history": history(logs),
        "params": params_dict(params, "model", "augment", "pretrain", "ood"),
    })
    metrics = {**selection_metrics(sel, manifest, y), "warmup": summary}
    write_json(metrics_path, metrics)
    return metrics


def no_training_state(resume_path, why: str) -> None:
    """A stage that trains nothing still writes its (persistent) checkpoint output, as DVC
    requires every declared output to exist."""
    if resume_path is not None:
        from ltcl.io import save_checkpoint

        save_checkpoint(resume_path, {"fingerprint": None, "epoch": 0, "note": why})


def save_npz_empty(path) -> None:
    from ltcl.io import save_npz

    save_npz(path, strategy=np.asarray("none"), pool_indices=np.empty(0, np.int64), extra_count=np.asarray(0))


def selection_state(sel) -> dict:
    """An OOD selection as tensors (checkpoints load with weights_only=True: no numpy)."""
    as_t = lambda a: None if a is None else torch.as_tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
    return {"strategy": str(sel.strategy), "pool_indices": as_t(sel.pool_indices),
            "cluster_of_each": as_t(sel.cluster_of_each), "id_indices": as_t(sel.id_indices)}


def selection_from_state(st: dict):
    from ltcl.sampling.select import OODSelection

    as_np = lambda t: None if t is None else t.numpy()  # noqa: E731
    return OODSelection(st["strategy"], as_np(st["pool_indices"]), as_np(st["cluster_of_each"]), None, None, None,
                        None, None, {}, id_indices=as_np(st["id_indices"]))


def stage_resumer(stage: str, params, sections: tuple[str, ...], inputs: list, resume_path, every: int, extra=None):
    from ltcl.params import params_dict
    from ltcl.train.resume import Resumer, fingerprint

    fp = fingerprint(stage, params_dict(params, *sections, "runtime"), inputs)
    return Resumer(resume_path, fp, every, extra)


def run_pretrain_stage(params, lt_dir: str | Path, ckpt_path: str | Path, metrics_path: str | Path,
                       live_dir: str | Path | None, ood_dir: str | Path | None = None,
                       resume_path: str | Path | None = None) -> dict:
    """Pre-train f with ``params.pretrain.method``; with an OOD strategy, continue from the
    warm-up of the ood-sampling stage, train on ID + selected images and re-sample every
    ``ood.interval`` epochs (paper 003 Sec. 3.1).

    Launched by torchrun, every rank trains its slice of each global batch (DDP); rank 0 runs
    the OOD sampling updates (their result is broadcast) and alone writes the outputs."""
    from ltcl.io import load_checkpoint, write_json
    from ltcl.models.checkpoint import save_encoder
    from ltcl.params import params_dict

    distributed.init_from_env(params.runtime)
    distributed.check_stage("pretrain", params, distributed.world_size())
    cfg, x, y, manifest, runtime, model, spec, augment, data = _setup(params, lt_dir)
    ood = params.ood
    use_ood = ood.strategy != "none"
    start_epoch, optimizer, sampler, updates = 0, None, None, []
    id_data = data
    if use_ood:
        ood_dir = Path(ood_dir)
        warm = load_checkpoint(ood_dir / "warmup.pt")
        if warm.get("spec") != spec:
            raise ValueError(f"{ood_dir / 'warmup.pt'} was made for another model or data set "
                             f"({warm.get('spec', {}).get('backbone')}); rerun ood-sampling")
        model.load_state_dict(warm["model"])
        sampler = make_sampler(params, ood_dir / "pool.npy", data, spec)
        sampler.load_state_dict(warm["sampler"])
        sel_file = np.load(ood_dir / "selection.npz")
        from ltcl.sampling.select import OODSelection

        first = OODSelection(str(sel_file["strategy"]), sel_file["pool_indices"], sel_file["cluster_of_each"],
                             None, None, None, None, None, {}, id_indices=sel_file["id_indices"])
        current = {"selection": selection_state(first), "seed": ood.seed}
        data = id_data.with_extra(sampler.extra_images(first, seed=ood.seed))
        start_epoch = int(warm["epoch"])
    method = make_method(cfg.method, model, data, cfg, runtime, augment, refresh_every=ood.interval)
    if use_ood:
        optimizer = build_optimizer(method.parameters(), cfg)
        try:  # continue the warm-up's SGD momentum buffers
            optimizer.load_state_dict(warm["optimizer"])
        except ValueError:  # the method has other parameters than the warm-up: fresh momentum
            pass

    inputs = [Path(lt_dir) / "manifest.json"]
    if use_ood:
        inputs += [ood_dir / "warmup.pt", ood_dir / "selection.npz", ood_dir / "pool.npy"]
    resumer = stage_resumer("pretrain", params, ("model", "augment", "pretrain", "ood"), inputs, resume_path,
                            cfg.checkpoint_every,
                            extra=lambda: {"sampler": sampler.state_dict(), **current, "updates": updates}
                            if use_ood else {})
    state = resumer.load()
    if state is not None and use_ood:  # the OOD images of the last update before the stop
        ex = state["extra"]
        sampler.load_state_dict(ex["sampler"])
        current.update(selection=ex["selection"], seed=ex["seed"])
        updates.extend(ex["updates"])
        method.set_data(id_data.with_extra(sampler.extra_images(selection_from_state(ex["selection"]), ex["seed"])))

    def before_epoch(epoch: int) -> None:
        since = epoch - start_epoch
        if use_ood and since > 0 and since % ood.interval == 0:
            def update():
                return sampler.update(model, runtime), sampler.state_dict()

            sel, sampler_state = distributed.on_main(update)  # rank 0 samples, every rank gets its result
            if not distributed.is_main():
                sampler.load_state_dict(sampler_state)
            current.update(selection=selection_state(sel), seed=ood.seed + sampler.rounds)
            method.set_data(id_data.with_extra(sampler.extra_images(sel, seed=ood.seed + sampler.rounds)))
            upd = {"epoch": epoch, **{k: float(v) for k, v in sel.timings.items()}}
            if sel.budgets is not None:
                diag = selection_metrics(sel, manifest, y)["diagnostics"]
                upd.update(spearman_rarity=diag["spearman_rarity"], few_budget_share=diag["few_budget_share"])
            updates.append(upd)

    logs, summary = run_training(method, cfg, runtime, live_dir, desc="pretrain", start_epoch=start_epoch,
                                 before_epoch=before_epoch, optimizer=optimizer, resumer=resumer,
                                 resume_state=state)
    metrics = {"method": cfg.method, "supervised": bool(method.supervised), "ood_strategy": ood.strategy,
               **summary, "train_images": len(x), "ood_images": len(data) - len(x), "start_epoch": start_epoch,
               "ood_updates": len(updates)}
    if distributed.is_distributed():
        metrics["processes"] = distributed.world_size()
    if not distributed.is_main():  # rank 0 alone writes the outputs
        distributed.barrier()
        return metrics
    save_encoder(ckpt_path, model, spec, params=params_dict(params, "model", "augment", "pretrain", "ood"),
                 history=history(logs), method_state=method.state_dict())
    if hasattr(method, "predict"):  # a method with its own classifier (GML's teacher)
        from ltcl.eval.classifier import classifier_report

        metrics["classifier"] = classifier_report(method, lt_dir, manifest, params.data.group_rule)
    if updates:
        for key in ("embedding", "clustering", "tailness", "budget", "sampling", "total"):
            metrics[f"ood_update_{key}_s"] = float(np.mean([u[key] for u in updates]))
        metrics["ood_update_history"] = updates  # per update: epoch, seconds, tailness diagnostics
    write_json(metrics_path, metrics)
    distributed.barrier()
    return metrics

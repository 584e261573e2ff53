"""pretrain: contrastive pre-training of the guiding encoder f (paper 003 Sec. 3.1.2).

``pretrain.method`` (``ltcl.registry``) is trained on the long-tailed split.  With an OOD strategy
the run continues from the ood-sampling warm-up, trains on ID + selected pool images and
re-samples every ``ood.interval`` epochs (rank 0 samples under DDP; every rank gets its result).
A strategy whose registry entry says ``retrain`` (MAK) instead trains a new encoder from epoch 0
on ID + its one selection, as one data set (no L_DD), and re-samples nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltcl import registry
from ltcl.collectives import barrier, is_distributed, is_main, on_main, world_size
from ltcl.errors import UserError
from ltcl.eval.classifier import classifier_report
from ltcl.io import load_checkpoint, write_json
from ltcl.methods.base import TrainSet
from ltcl.models.checkpoint import save_encoder
from ltcl.params import STAGE_PARAMS, stage_view
from ltcl.runtime import setup_runtime
from ltcl.sampling.refresh import open_sampler
from ltcl.sampling.selection_io import (
    load_selection,
    sample_groups,
    selection_from_state,
    selection_metrics,
    selection_state,
    selection_timings,
)
from ltcl.sampling.steps import UPDATE_STEPS
from ltcl.sampling.update_file import keep_first_and_last, save_updates
from ltcl.sampling.update_pictures import record_from_state, record_state, update_record
from ltcl.train.distributed import check_stage, init_from_env
from ltcl.train.loop import build_optimizer
from ltcl.train.session import (
    build_augment,
    check_batch_size,
    load_train_split,
    new_encoder,
    run_session,
    stage_resumer,
    weights_history,
)


def run(params, lt_dir: str | Path, ckpt_path: str | Path, metrics_path: str | Path,
        diagnostics_path: str | Path, live_dir: str | Path | None, ood_dir: str | Path | None = None,
        resume_path: str | Path | None = None) -> dict:
    """Pre-train f with ``params.pretrain.method``; with an OOD strategy, continue from the
    warm-up of the ood-sampling stage, train on ID + selected images and re-sample every
    ``ood.interval`` epochs (paper 003 Sec. 3.1).  The pictures of those updates (tailness
    histogram and cluster numbers of each; thumbnails of the first and the last:
    :mod:`ltcl.sampling.update_pictures`) go to ``diagnostics_path``.

    Launched by torchrun, every rank trains its slice of each global batch (DDP); rank 0 runs
    the OOD sampling updates (their result is broadcast) and alone writes the outputs.

    Returns the run's timings (for the run record ``runs/pretrain.json``): the session's
    (``ltcl.train.session.train_timings``), and with OOD updates the mean seconds of each of their
    steps (``ood_update_<step>_s``) and each update's (``ood_update_history``)."""
    init_from_env(params.runtime)
    check_stage("pretrain", params, world_size())
    cfg, ood = params.pretrain, params.ood
    x, y, manifest = load_train_split(lt_dir)
    check_batch_size(cfg, len(x))
    runtime = setup_runtime(params.runtime, cfg.seed)
    model, spec = new_encoder(params.model, x, runtime)
    augment = build_augment(params.augment, spec, runtime.device)
    id_data = TrainSet.from_numpy(x, y, len(manifest["class_names"]), runtime.device)
    rounds = OODRounds(ood, Path(ood_dir), manifest, y) if ood.strategy != "none" else None
    start_epoch, data = (rounds.warm_start(model, spec, id_data, cfg, augment) if rounds else (0, id_data))
    method = registry.load("pretrain", cfg.method)(model, data, cfg, runtime, augment, refresh_every=ood.interval)
    optimizer = rounds.continue_warmup(method, cfg) if rounds else None

    inputs = [Path(lt_dir) / "manifest.json", *(rounds.inputs() if rounds else [])]
    resumer = stage_resumer("pretrain", params, STAGE_PARAMS["pretrain"], inputs, resume_path, cfg.checkpoint_every,
                            extra=rounds.resume_state if rounds else dict)
    state = resumer.load()
    if state is not None and rounds:  # the OOD images of the last update before the stop
        rounds.restore(state["extra"], method)

    def before_epoch(epoch: int) -> None:
        since = epoch - start_epoch
        if rounds and not rounds.retrain and since > 0 and since % ood.interval == 0:
            rounds.update(epoch, method, model, runtime)

    logs, summary, timings = run_session(method, cfg, runtime, live_dir, desc="pretrain", start_epoch=start_epoch,
                                         before_epoch=before_epoch, optimizer=optimizer, resumer=resumer,
                                         resume_state=state)
    entry = registry.entry("pretrain", cfg.method)
    metrics = {"method": cfg.method, "supervised": entry.supervised, "ood_strategy": ood.strategy,
               **summary, "train_images": len(x), "ood_images": len(data) - len(x), "start_epoch": start_epoch,
               "ood_updates": len(rounds.updates) if rounds else 0}
    if is_distributed():
        metrics["processes"] = world_size()
    if rounds:
        timings.update(rounds.timings())
    if not is_main():  # rank 0 alone writes the outputs
        barrier()
        return timings
    save_encoder(ckpt_path, model, spec, params=stage_view(params, STAGE_PARAMS["pretrain"]),
                 history=weights_history(logs), method_state=method.state_dict())
    if entry.classifier:  # a method with its own classifier (GML's teacher)
        metrics["classifier"] = classifier_report(method, lt_dir, manifest, params.data.group_rule)
    save_updates(diagnostics_path, rounds.pictures if rounds else [])
    if rounds and rounds.updates:
        metrics["ood_update_history"] = rounds.updates  # per update: epoch, tailness diagnostics
    write_json(metrics_path, metrics)
    barrier()
    return timings


class OODRounds:
    """The OOD side of a pre-training run (paper 003 Sec. 3.1): the warm start from ood-sampling's
    warm-up and first selection, an update every ``ood.interval`` epochs (rank 0 samples, every
    rank gets its result), the record of each update and the pictures of the first and the last,
    and their part of the resume state.  With a ``retrain`` strategy (MAK's protocol) only the first
    selection: a fresh encoder and optimizer from epoch 0, its images as ID rows (domain 0)."""

    def __init__(self, ood, ood_dir: Path, manifest: dict, y):
        self.ood, self.dir, self.manifest, self.y = ood, ood_dir, manifest, y
        self.retrain = registry.entry("ood", ood.strategy).retrain
        self.groups = sample_groups(manifest, y)  # None unless the training labels are real
        self.updates, self.pictures, self.update_seconds = [], [], []
        self.sampler = self.current = self.warm = self.id_data = None

    def inputs(self) -> list[Path]:
        return [self.dir / "warmup.pt", self.dir / "selection.npz", self.dir / "pool.npy"]

    def warm_start(self, model, spec: dict, id_data, cfg, augment=None):
        """Load the warm-up into ``model`` (not for a ``retrain`` strategy: ``model`` stays the fresh
        encoder), open the sampler; returns (start epoch, ID + first selection)."""
        ood, self.id_data = self.ood, id_data
        warm = self.warm = load_checkpoint(self.dir / "warmup.pt")
        if warm.get("spec") != spec:
            raise UserError(f"{self.dir / 'warmup.pt'} was made for another model or data set "
                             f"({warm.get('spec', {}).get('backbone')}); rerun ood-sampling")
        if not self.retrain:
            model.load_state_dict(warm["model"])
        self.sampler = open_sampler(ood, self.dir / "pool.npy", id_data, spec, cfg.batch_size, augment)
        self.sampler.load_state_dict(warm["sampler"])
        first = load_selection(self.dir / "selection.npz")
        self.current = {"selection": selection_state(first), "seed": ood.seed}
        return 0 if self.retrain else int(warm["epoch"]), self.with_selection(first, ood.seed)

    def with_selection(self, sel, seed: int):
        """The ID rows followed by the images ``sel`` adds (as ID rows for a ``retrain`` strategy)."""
        return self.id_data.with_extra(self.sampler.extra_images(sel, seed=seed), domain_value=0 if self.retrain else 1)

    def continue_warmup(self, method, cfg):
        """The warm-up's pruned-branch BatchNorms and SGD momentum for ``method``; returns the optimizer
        (a fresh one, and fresh BatchNorms, for a ``retrain`` strategy)."""
        if self.retrain:
            return build_optimizer(method.parameters(), cfg)
        warm, path = self.warm, self.dir / "warmup.pt"
        had, has = warm.get("pruned_norms") is not None, getattr(method, "pruned_norms", None) is not None
        if had != has:
            raise UserError(f"{path} was made {'with' if had else 'without'} SDCLR's pruned branch, "
                            f"this run trains {'with' if has else 'without'} it; rerun ood-sampling")
        if had:  # the warm-up's pruned-branch BatchNorms, not fresh copies
            method.pruned_norms.load_state_dict(warm["pruned_norms"])
        optimizer = build_optimizer(method.parameters(), cfg)
        try:  # continue the warm-up's SGD momentum buffers
            optimizer.load_state_dict(warm["optimizer"])
        except ValueError:  # the method has other parameters than the warm-up: fresh momentum
            pass
        return optimizer

    def resume_state(self) -> dict:
        return {"sampler": self.sampler.state_dict(), **self.current, "updates": self.updates,
                "update_seconds": self.update_seconds, "pictures": [record_state(r) for r in self.pictures]}

    def restore(self, ex: dict, method) -> None:
        self.sampler.load_state_dict(ex["sampler"])
        self.current.update(selection=ex["selection"], seed=ex["seed"])
        self.updates.extend(ex["updates"])
        self.update_seconds.extend(ex.get("update_seconds", []))  # a state saved before ltcl kept them apart has none
        self.pictures.extend(record_from_state(t) for t in ex["pictures"])
        method.set_data(self.with_selection(selection_from_state(ex["selection"]), ex["seed"]))

    def update(self, epoch: int, method, model, runtime) -> None:
        ood, sampler = self.ood, self.sampler

        def sample():
            return sampler.update(model, runtime), sampler.state_dict()

        sel, sampler_state = on_main(sample)  # rank 0 samples, every rank gets its result
        if not is_main():
            sampler.load_state_dict(sampler_state)
        self.current.update(selection=selection_state(sel), seed=ood.seed + sampler.rounds)
        method.set_data(self.with_selection(sel, ood.seed + sampler.rounds))
        self.update_seconds.append({"epoch": epoch, **selection_timings(sel)})
        upd = {"epoch": epoch}
        if sel.budgets is not None:
            diag = selection_metrics(sel, self.manifest, self.y)["diagnostics"]
            if "absent" in diag:  # no real labels: say why, print no number
                upd["diagnostics"] = diag
            else:
                upd.update(spearman_rarity=diag["spearman_rarity"], few_budget_share=diag["few_budget_share"])
        self.updates.append(upd)
        if is_main():  # rank 0 alone writes the pictures
            self.pictures.append(update_record(sel, sampler.id_images, sampler.pool, epoch, ood.embedding,
                                               self.groups))
            self.pictures[:] = keep_first_and_last(self.pictures)

    def timings(self) -> dict:
        """The mean seconds of each step of this run's updates, and each update's."""
        if not self.update_seconds:
            return {}
        out = {f"ood_update_{k}_s": float(np.mean([u[k] for u in self.update_seconds])) for k in UPDATE_STEPS}
        out["ood_update_history"] = self.update_seconds  # per update of this run: epoch, seconds per step
        return out

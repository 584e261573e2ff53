"""pretrain: contrastive pre-training of the guiding encoder f (paper 003 Sec. 3.1.2).

``pretrain.method`` (``ltcl.registry``) is trained on the long-tailed split.  With an OOD strategy
the run continues from the ood-sampling warm-up, trains on ID + selected pool images and
re-samples every ``ood.interval`` epochs (rank 0 samples under DDP; every rank gets its result).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltcl.collectives import barrier, is_distributed, is_main, on_main, world_size
from ltcl.errors import UserError
from ltcl.eval.classifier import classifier_report
from ltcl.io import load_checkpoint, write_json
from ltcl.methods.base import TrainSet
from ltcl.models.checkpoint import save_encoder
from ltcl.params import STAGE_PARAMS, stage_view
from ltcl.registry import get_method
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
    cfg = params.pretrain
    x, y, manifest = load_train_split(lt_dir)
    check_batch_size(cfg, len(x))
    runtime = setup_runtime(params.runtime, cfg.seed)
    model, spec = new_encoder(params.model, x, runtime)
    augment = build_augment(params.augment, spec, runtime.device)
    data = TrainSet.from_numpy(x, y, len(manifest["class_names"]), runtime.device)
    ood = params.ood
    use_ood = ood.strategy != "none"
    start_epoch, optimizer, sampler, updates, pictures, update_seconds = 0, None, None, [], [], []
    groups_of_samples = sample_groups(manifest, y)  # None unless the training labels are real
    id_data = data
    if use_ood:
        ood_dir = Path(ood_dir)
        warm = load_checkpoint(ood_dir / "warmup.pt")
        if warm.get("spec") != spec:
            raise UserError(f"{ood_dir / 'warmup.pt'} was made for another model or data set "
                             f"({warm.get('spec', {}).get('backbone')}); rerun ood-sampling")
        model.load_state_dict(warm["model"])
        sampler = open_sampler(ood, ood_dir / "pool.npy", data, spec, cfg.batch_size)
        sampler.load_state_dict(warm["sampler"])
        first = load_selection(ood_dir / "selection.npz")
        current = {"selection": selection_state(first), "seed": ood.seed}
        data = id_data.with_extra(sampler.extra_images(first, seed=ood.seed))
        start_epoch = int(warm["epoch"])
    method = get_method(cfg.method)(model, data, cfg, runtime, augment, refresh_every=ood.interval)
    if use_ood:
        had, has = warm.get("pruned_norms") is not None, getattr(method, "pruned_norms", None) is not None
        if had != has:
            raise UserError(f"{ood_dir / 'warmup.pt'} was made {'with' if had else 'without'} SDCLR's pruned branch, "
                            f"this run trains {'with' if has else 'without'} it; rerun ood-sampling")
        if warm.get("pruned_norms") is not None:  # the warm-up's pruned-branch BatchNorms, not fresh copies
            method.pruned_norms.load_state_dict(warm["pruned_norms"])
        optimizer = build_optimizer(method.parameters(), cfg)
        try:  # continue the warm-up's SGD momentum buffers
            optimizer.load_state_dict(warm["optimizer"])
        except ValueError:  # the method has other parameters than the warm-up: fresh momentum
            pass

    inputs = [Path(lt_dir) / "manifest.json"]
    if use_ood:
        inputs += [ood_dir / "warmup.pt", ood_dir / "selection.npz", ood_dir / "pool.npy"]
    resumer = stage_resumer("pretrain", params, STAGE_PARAMS["pretrain"], inputs, resume_path,
                            cfg.checkpoint_every,
                            extra=lambda: {"sampler": sampler.state_dict(), **current, "updates": updates,
                                           "update_seconds": update_seconds,
                                           "pictures": [record_state(r) for r in pictures]}
                            if use_ood else {})
    state = resumer.load()
    if state is not None and use_ood:  # the OOD images of the last update before the stop
        ex = state["extra"]
        sampler.load_state_dict(ex["sampler"])
        current.update(selection=ex["selection"], seed=ex["seed"])
        updates.extend(ex["updates"])
        update_seconds.extend(ex.get("update_seconds", []))  # a state saved before ltcl kept them apart has none
        pictures.extend(record_from_state(t) for t in ex["pictures"])
        method.set_data(id_data.with_extra(sampler.extra_images(selection_from_state(ex["selection"]), ex["seed"])))

    def before_epoch(epoch: int) -> None:
        since = epoch - start_epoch
        if use_ood and since > 0 and since % ood.interval == 0:
            def update():
                return sampler.update(model, runtime), sampler.state_dict()

            sel, sampler_state = on_main(update)  # rank 0 samples, every rank gets its result
            if not is_main():
                sampler.load_state_dict(sampler_state)
            current.update(selection=selection_state(sel), seed=ood.seed + sampler.rounds)
            method.set_data(id_data.with_extra(sampler.extra_images(sel, seed=ood.seed + sampler.rounds)))
            update_seconds.append({"epoch": epoch, **selection_timings(sel)})
            upd = {"epoch": epoch}
            if sel.budgets is not None:
                diag = selection_metrics(sel, manifest, y)["diagnostics"]
                if "absent" in diag:  # no real labels: say why, print no number
                    upd["diagnostics"] = diag
                else:
                    upd.update(spearman_rarity=diag["spearman_rarity"], few_budget_share=diag["few_budget_share"])
            updates.append(upd)
            if is_main():  # rank 0 alone writes the pictures
                pictures.append(update_record(sel, sampler.id_images, sampler.pool, epoch, ood.embedding,
                                              groups_of_samples))
                pictures[:] = keep_first_and_last(pictures)

    logs, summary, timings = run_session(method, cfg, runtime, live_dir, desc="pretrain", start_epoch=start_epoch,
                                         before_epoch=before_epoch, optimizer=optimizer, resumer=resumer,
                                         resume_state=state)
    metrics = {"method": cfg.method, "supervised": bool(method.supervised), "ood_strategy": ood.strategy,
               **summary, "train_images": len(x), "ood_images": len(data) - len(x), "start_epoch": start_epoch,
               "ood_updates": len(updates)}
    if is_distributed():
        metrics["processes"] = world_size()
    if update_seconds:
        for key in ("embedding", "clustering", "tailness", "budget", "sampling", "total"):
            timings[f"ood_update_{key}_s"] = float(np.mean([u[key] for u in update_seconds]))
        timings["ood_update_history"] = update_seconds  # per update of this run: epoch, seconds per step
    if not is_main():  # rank 0 alone writes the outputs
        barrier()
        return timings
    save_encoder(ckpt_path, model, spec, params=stage_view(params, STAGE_PARAMS["pretrain"]),
                 history=weights_history(logs), method_state=method.state_dict())
    if hasattr(method, "predict"):  # a method with its own classifier (GML's teacher)
        metrics["classifier"] = classifier_report(method, lt_dir, manifest, params.data.group_rule)
    save_updates(diagnostics_path, pictures)
    if updates:
        metrics["ood_update_history"] = updates  # per update: epoch, tailness diagnostics
    write_json(metrics_path, metrics)
    barrier()
    return timings

"""ood-sampling: warm-up on ID data, then the first OOD sampling update (paper 003 Sec. 3.1.1).

The warm-up is SimCLR on the long-tailed split for ``ood.warmup_epochs`` (SDCLR when the run uses
the pruned branch); the first update then embeds the ID set and the pool with the warmed-up
encoder and selects ``ood.budget`` pool images (``ood.strategy``).  pretrain continues from here.
"""

from __future__ import annotations

from pathlib import Path

from ltcl.errors import UserError
from ltcl.io import save_checkpoint, write_json
from ltcl.methods.base import TrainSet
from ltcl.methods.contrastive import SDCLR, SimCLR
from ltcl.params import params_dict
from ltcl.runtime import setup_runtime
from ltcl.sampling.refresh import open_sampler
from ltcl.sampling.selection_io import sample_groups, save_selection, selection_metrics
from ltcl.sampling.update_file import save_updates
from ltcl.sampling.update_pictures import update_record
from ltcl.train.loop import build_optimizer
from ltcl.train.session import (
    build_augment,
    check_batch_size,
    empty_curves,
    history,
    load_train_split,
    new_encoder,
    no_training_state,
    run_session,
    stage_resumer,
)


def warmup_method(cfg) -> type[SimCLR]:
    """The OOD warm-up is plain SimCLR on ID data (SDCLR when the run uses the pruned branch)."""
    return SDCLR if (cfg.method == "sdclr" or cfg.sdclr) else SimCLR


def run(params, lt_dir, pool_path, warmup_path, selection_path, metrics_path, diagnostics_path, live_dir=None,
        resume_path=None) -> dict:
    """Warm-up (SimCLR on ID for ``ood.warmup_epochs``), then the first OOD sampling update; its
    pictures (tailness histogram, thumbnails per cluster: :mod:`ltcl.sampling.update_pictures`)
    go to ``diagnostics_path``."""
    ood, cfg = params.ood, params.pretrain
    if ood.strategy == "none":
        empty_curves(live_dir)
        no_training_state(resume_path, "ood.strategy is none: no warm-up")
        save_checkpoint(warmup_path, {"strategy": "none"})
        save_selection(selection_path, None)
        save_updates(diagnostics_path, [])
        metrics = {"strategy": "none", "selected": 0}
        write_json(metrics_path, metrics)
        return metrics
    x, y, manifest = load_train_split(lt_dir)
    check_batch_size(cfg, len(x))
    if ood.clusters > len(x):
        raise UserError(f"ood.clusters={ood.clusters} is larger than the ID set ({len(x)} images)")
    runtime = setup_runtime(params.runtime, cfg.seed)
    model, spec = new_encoder(params.model, x, runtime)
    augment = build_augment(params.augment, spec, runtime.device)
    data = TrainSet.from_numpy(x, y, len(manifest["class_names"]), runtime.device)
    sampler = open_sampler(ood, pool_path, data, spec, cfg.batch_size)
    method = warmup_method(cfg)(model, data, cfg, runtime, augment, refresh_every=ood.interval)
    optimizer = build_optimizer(method.parameters(), cfg)
    resumer = stage_resumer("ood-warmup", params, ("model", "augment", "pretrain", "ood"),
                            [Path(lt_dir) / "manifest.json"], resume_path, cfg.checkpoint_every)
    logs, summary = run_session(method, cfg, runtime, live_dir, desc="ood warm-up",
                                end_epoch=ood.warmup_epochs, optimizer=optimizer, resumer=resumer,
                                resume_state=resumer.load())
    sel = sampler.update(model, runtime)
    extra = sampler.extra_images(sel, seed=ood.seed)
    save_selection(selection_path, sel, len(extra))
    save_updates(diagnostics_path, [update_record(sel, sampler.id_images, sampler.pool, ood.warmup_epochs,
                                                  ood.embedding, sample_groups(manifest, y))])
    save_checkpoint(warmup_path, {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "spec": spec,
        "optimizer": optimizer.state_dict(), "method_state": method.state_dict(),
        "epoch": ood.warmup_epochs, "sampler": sampler.state_dict(), "history": history(logs),
        "params": params_dict(params, "model", "augment", "pretrain", "ood"),
    })
    metrics = {**selection_metrics(sel, manifest, y), "warmup": summary}
    write_json(metrics_path, metrics)
    return metrics

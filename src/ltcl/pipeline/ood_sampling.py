"""ood-sampling: warm-up on ID data, then the first OOD sampling update (paper 003 Sec. 3.1.1).

The warm-up is SimCLR on the long-tailed split for ``ood.warmup_epochs`` (SDCLR when the run uses
the pruned branch); the first update then embeds the ID set and the pool with the warmed-up
encoder and selects ``ood.budget`` pool images (``ood.strategy``).  pretrain continues from here.
The selection's record goes to metrics/ood_details.json, its headline (the budget:
:func:`ltcl.sampling.selection_io.ood_headline`) to metrics/ood.json, the DVC metric.
"""

from __future__ import annotations

from pathlib import Path

from ltcl.errors import UserError
from ltcl.headline import write_metrics
from ltcl.io import save_checkpoint
from ltcl.methods.base import TrainSet
from ltcl.methods.contrastive import SDCLR, SimCLR
from ltcl.params import STAGE_PARAMS, stage_view
from ltcl.runtime import setup_runtime
from ltcl.sampling.refresh import open_sampler
from ltcl.sampling.selection_io import (ood_headline, sample_groups, save_selection, selection_metrics,
                                        selection_timings)
from ltcl.sampling.update_file import save_updates
from ltcl.sampling.update_pictures import update_record
from ltcl.train.loop import build_optimizer
from ltcl.train.session import (
    build_augment,
    check_batch_size,
    empty_curves,
    load_train_split,
    new_encoder,
    run_session,
    stage_resumer,
    weights_history,
)


def warmup_method(cfg) -> type[SimCLR]:
    """The OOD warm-up is plain SimCLR on ID data (SDCLR when the run uses the pruned branch)."""
    return SDCLR if (cfg.method == "sdclr" or cfg.pruned_branch) else SimCLR


def warmup_config(cfg):
    """``pretrain`` as the warm-up reads it: without GH (``pretrain.gh`` is not among ood-sampling's
    params; GH's warm-up W counts pretrain's epochs)."""
    return cfg.model_copy(update={"gh": cfg.gh.model_copy(update={"enabled": False})})


def run(params, lt_dir, pool_path, warmup_path, selection_path, metrics_path, diagnostics_path, live_dir=None,
        resume_path=None) -> dict:
    """Warm-up (SimCLR on ID for ``ood.warmup_epochs``), then the first OOD sampling update; its
    pictures (tailness histogram, thumbnails per cluster: :mod:`ltcl.sampling.update_pictures`)
    go to ``diagnostics_path``.  Returns the run's timings (for the run record
    ``runs/ood-sampling.json``): the warm-up session's (``warmup``) and the update's seconds per
    step (``seconds``)."""
    ood, cfg = params.ood, params.pretrain
    if ood.strategy == "none":
        empty_curves(live_dir)
        save_checkpoint(warmup_path, {"strategy": "none"})
        save_selection(selection_path, None)
        save_updates(diagnostics_path, [])
        record = {"strategy": "none", "selected": 0}
        write_metrics(metrics_path, record, ood_headline(record))
        return {}
    x, y, manifest = load_train_split(lt_dir)
    check_batch_size(cfg, len(x))
    if ood.clusters > len(x):
        raise UserError(f"ood.clusters={ood.clusters} is larger than the ID set ({len(x)} images)")
    runtime = setup_runtime(params.runtime, cfg.seed)
    model, spec = new_encoder(params.model, x, runtime)
    augment = build_augment(params.augment, spec, runtime.device)
    data = TrainSet.from_numpy(x, y, len(manifest["class_names"]), runtime.device)
    sampler = open_sampler(ood, pool_path, data, spec, cfg.batch_size, augment)
    method = warmup_method(cfg)(model, data, warmup_config(cfg), runtime, augment)  # SimCLR refreshes nothing: no ood.interval
    optimizer = build_optimizer(method.parameters(), cfg)
    resumer = stage_resumer("ood-warmup", params, STAGE_PARAMS["ood-sampling"],
                            [Path(lt_dir) / "manifest.json"], resume_path, cfg.checkpoint_every)
    logs, summary, timings = run_session(method, cfg, runtime, live_dir, desc="ood warm-up",
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
        # SDCLR's pruned-branch BatchNorms (affine weights and running statistics): pretrain continues
        # with them, as the released code's single run does (issue 23)
        "pruned_norms": None if method.pruned_norms is None else
        {k: v.detach().cpu() for k, v in method.pruned_norms.state_dict().items()},
        "epoch": ood.warmup_epochs, "sampler": sampler.state_dict(), "history": weights_history(logs),
        "params": stage_view(params, STAGE_PARAMS["ood-sampling"]),
    })
    record = {**selection_metrics(sel, manifest, y), "warmup": summary}
    write_metrics(metrics_path, record, ood_headline(record))
    return {"warmup": timings, "seconds": selection_timings(sel)}

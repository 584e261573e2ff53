"""distill: a new encoder g trained from the frozen pre-trained f (``distill.method``, one entry of
``ltcl.registry.DISTILL``; the method builds itself from the stage's context, ``from_stage``):

* ``kdup`` (paper 003 Sec. 3.2): g starts as a copy of f and learns L_GCL + beta L_DL, guided by
  f's clusters (negatives from the farthest one) and nearest neighbours (positives).
* ``gml`` (paper 002 Sec. 3.3): a freshly initialised student with a cosine classifier learns
  gamma L_cls + beta L_GML from the frozen teacher's class-wise queues.
With ``distill.enabled: false`` g is f itself (paper 003 Table 5 "w/o KD").  Under torchrun every
rank trains its slice of each global batch; rank 0 computes f's guidance and writes the outputs.
"""

from __future__ import annotations

from pathlib import Path

from ltcl import registry
from ltcl.collectives import barrier, is_distributed, is_main, world_size
from ltcl.data.splits import load_manifest
from ltcl.eval.classifier import classifier_report
from ltcl.io import write_json
from ltcl.methods.context import StageContext
from ltcl.models.checkpoint import load_encoder, save_encoder
from ltcl.params import STAGE_PARAMS, stage_view
from ltcl.runtime import setup_runtime
from ltcl.train.distributed import check_stage, init_from_env
from ltcl.train.session import (
    build_augment,
    check_batch_size,
    empty_curves,
    load_train_split,
    run_session,
    stage_resumer,
    weights_history,
)


def run(params, lt_dir, teacher_path, ckpt_path, metrics_path, live_dir=None,
        resume_path=None) -> dict:
    """Train g from the frozen f; with ``distill.enabled: false`` g is f itself (Table 5 "w/o KD").

    Launched by torchrun, every rank trains its slice of each global batch (DDP); rank 0 computes
    f's clusters and neighbours (broadcast to every rank) and alone writes the outputs.

    Returns the run's timings (for the run record ``runs/distill.json``): the session's
    (``ltcl.train.session.train_timings``) and, for KDUP, ``setup_seconds`` (f's clusters and
    neighbours)."""
    cfg = params.distill
    init_from_env(params.runtime)
    check_stage("distill", params, world_size())
    runtime = setup_runtime(params.runtime, cfg.seed)
    # f must be intact (sha256 sidecar) and made for these model params and images
    teacher, spec, _ = load_encoder(teacher_path, runtime.device, model_cfg=params.model,
                                    image_shape=load_manifest(lt_dir)["image_shape"])
    main = is_main()
    if not cfg.enabled and not main:
        barrier()
        return {"seconds": 0.0}
    if not cfg.enabled:
        empty_curves(live_dir)
        save_encoder(ckpt_path, teacher, spec, params=stage_view(params, STAGE_PARAMS["distill"]), distilled=False)
        write_json(metrics_path, {"enabled": False, "epochs": 0})
        barrier()
        return {"seconds": 0.0}
    x, y, manifest = load_train_split(lt_dir)
    check_batch_size(cfg, len(x), section="distill")
    resumer = stage_resumer("distill", params, STAGE_PARAMS["distill"],
                            [Path(lt_dir) / "manifest.json", Path(teacher_path)], resume_path, cfg.checkpoint_every)
    entry = registry.entry("distill", cfg.method)
    ctx = StageContext(params=params, cfg=cfg, runtime=runtime, spec=spec, x=x, y=y, manifest=manifest,
                       make_augment=lambda: build_augment(params.augment, spec, runtime.device), teacher=teacher)
    method = registry.load("distill", cfg.method).from_stage(ctx)
    logs, summary, timings = run_session(method, cfg, runtime, live_dir, desc=f"distill ({cfg.method})", resumer=resumer,
                                         resume_state=resumer.load())
    metrics = {"enabled": True, "method": cfg.method, **({"supervised": True} if entry.supervised else {}), **summary,
               **method.stage_metrics()}
    if entry.classifier:  # its own classifier's test accuracy, beside the probe
        metrics["classifier"] = classifier_report(method, lt_dir, manifest, params.data.group_rule)
    if is_distributed():
        metrics["processes"] = world_size()
    if main:  # rank 0 alone writes the outputs
        state = method.state_dict()  # kept in the model file when the method has any (GML's queues)
        save_encoder(ckpt_path, method.model, spec, params=stage_view(params, STAGE_PARAMS["distill"]),
                     history=weights_history(logs), distilled=True, **({"method_state": state} if state else {}))
        write_json(metrics_path, metrics)
    barrier()
    setup = method.setup_seconds  # KDUP: f's clusters and neighbours
    return {**timings, **({"setup_seconds": setup} if setup is not None else {})}

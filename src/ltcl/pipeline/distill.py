"""distill: a new encoder g trained from the frozen pre-trained f (``distill.method``).

* ``kdup`` (paper 003 Sec. 3.2): g starts as a copy of f and learns L_GCL + beta L_DL, guided by
  f's clusters (negatives from the farthest one) and nearest neighbours (positives).
* ``gml`` (paper 002 Sec. 3.3): a freshly initialised student with a cosine classifier learns
  gamma L_cls + beta L_GML from the frozen teacher's class-wise queues.
With ``distill.enabled: false`` g is f itself (paper 003 Table 5 "w/o KD").  Under torchrun every
rank trains its slice of each global batch; rank 0 computes f's guidance and writes the outputs.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from ltcl.collectives import barrier, is_distributed, is_main, on_main, world_size
from ltcl.data.splits import load_manifest
from ltcl.errors import UserError
from ltcl.eval.classifier import classifier_report
from ltcl.io import write_json
from ltcl.methods.base import TrainSet
from ltcl.models.checkpoint import build_from_spec, load_encoder, save_encoder
from ltcl.params import STAGE_PARAMS, stage_view
from ltcl.registry import get_method
from ltcl.runtime import setup_runtime
from ltcl.sampling.clustering import cluster_embeddings
from ltcl.sampling.neighbours import knn_indices
from ltcl.sampling.refresh import embed_images
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
    if cfg.method == "gml":
        return _gml_student(params, lt_dir, teacher, spec, x, y, manifest, runtime, ckpt_path, metrics_path,
                               live_dir, resumer)
    own = cfg.own  # distill.kdup
    if own.k_kd >= len(x):
        raise UserError(f"distill.kdup.k_kd={own.k_kd} needs more than {own.k_kd} ID images, got {len(x)}")
    if own.clusters > len(x):
        raise UserError(f"distill.kdup.clusters={own.clusters} is larger than the ID set ({len(x)} images)")
    teacher = teacher.to(memory_format=runtime.memory_format())
    data = TrainSet.from_numpy(x, y, len(manifest["class_names"]), runtime.device)
    t0 = time.perf_counter()

    def guidance():
        z_f = embed_images(teacher, data.x, spec["mean"], spec["std"], runtime)
        # paper 003 Sec. 3.2: "the clustering method in Section 3.1", with its ood.* keys
        ood = params.ood
        centroids, clusters, info = cluster_embeddings(z_f, own.clusters, seed=cfg.seed, tol=ood.cluster_tol,
                                                       max_iter=ood.cluster_max_iter, refine=ood.refine,
                                                       lr=ood.cluster_lr, patience=ood.cluster_patience)
        return centroids, clusters, info, knn_indices(z_f, own.k_kd)

    # under DDP rank 0 computes f's clusters and neighbours and every rank uses the same ones
    centroids, clusters, info, neighbours = on_main(guidance)
    setup_s = time.perf_counter() - t0
    student = copy.deepcopy(teacher).train()
    for p in student.parameters():
        p.requires_grad_(True)
    augment = build_augment(params.augment, spec, runtime.device)
    method = get_method("kdup", "distill")(student, data, cfg, runtime, augment, teacher=teacher, neighbours=neighbours,
                                clusters=clusters, centroids=centroids)
    logs, summary, timings = run_session(method, cfg, runtime, live_dir, desc="distill", resumer=resumer,
                                         resume_state=resumer.load())
    # how often f's neighbour positives share the true class: what guided sampling relies on
    nb_precision = float(np.mean(y[neighbours] == y[:, None]))
    metrics = {"enabled": True, "method": "kdup", **summary, "neighbour_precision": nb_precision,
               "clusters_converged": bool(info.get("converged", False))}
    if is_distributed():
        metrics["processes"] = world_size()
    if main:  # rank 0 alone writes the outputs
        save_encoder(ckpt_path, student, spec, params=stage_view(params, STAGE_PARAMS["distill"]),
                     history=weights_history(logs), distilled=True)
        write_json(metrics_path, metrics)
    barrier()
    return {**timings, "setup_seconds": setup_s}


def _gml_student(params, lt_dir, teacher, spec, x, y, manifest, runtime, ckpt_path, metrics_path,
                    live_dir=None, resumer=None) -> dict:
    """GML's student (paper 002 Sec. 3.3): a freshly initialised network of the teacher's
    architecture with a cosine classifier, trained by gamma L_cls + beta L_GML from the frozen
    teacher's class-wise queues; its classifier's test accuracy is reported beside the probe.
    Returns the session's timings."""
    cfg, own = params.distill, params.distill.own  # distill.gml
    n_classes = len(manifest["class_names"])
    if own.k < own.km * n_classes:
        raise UserError(f"distill.gml.k={own.k} must be >= distill.gml.km * classes = {own.km * n_classes} (Eq. 6)")
    student = build_from_spec(spec).to(runtime.device, memory_format=runtime.memory_format()).train()
    teacher = teacher.to(memory_format=runtime.memory_format())
    data = TrainSet.from_numpy(x, y, n_classes, runtime.device)
    augment = build_augment(params.augment, spec, runtime.device)
    method = get_method("gml", "distill")(student, data, cfg, runtime, augment, teacher=teacher)
    logs, summary, timings = run_session(method, cfg, runtime, live_dir, desc="gml student", resumer=resumer,
                                         resume_state=resumer.load() if resumer is not None else None)
    save_encoder(ckpt_path, student, spec, params=stage_view(params, STAGE_PARAMS["distill"]),
                 history=weights_history(logs), distilled=True, method_state=method.state_dict())
    metrics = {"enabled": True, "method": "gml", "supervised": True, **summary, "tau_g": method.tau,
               "classifier": classifier_report(method, lt_dir, manifest, params.data.group_rule)}
    write_json(metrics_path, metrics)
    return timings

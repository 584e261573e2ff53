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
from ltcl.params import params_dict
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
    history,
    load_train_split,
    no_training_state,
    run_session,
    stage_resumer,
)


def run(params, lt_dir, teacher_path, ckpt_path, metrics_path, live_dir=None,
        resume_path=None) -> dict:
    """Train g from the frozen f; with ``distill.enabled: false`` g is f itself (Table 5 "w/o KD").

    Launched by torchrun, every rank trains its slice of each global batch (DDP); rank 0 computes
    f's clusters and neighbours (broadcast to every rank) and alone writes the outputs."""
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
        return {"enabled": False, "epochs": 0, "seconds": 0.0}
    if not cfg.enabled:
        empty_curves(live_dir)
        no_training_state(resume_path, "distill.enabled is false")
        save_encoder(ckpt_path, teacher, spec, params=params_dict(params, "distill"), distilled=False)
        metrics = {"enabled": False, "epochs": 0, "seconds": 0.0}
        write_json(metrics_path, metrics)
        barrier()
        return metrics
    x, y, manifest = load_train_split(lt_dir)
    check_batch_size(cfg, len(x), section="distill")
    resumer = stage_resumer("distill", params, ("distill", "augment", "pretrain", "data"),
                            [Path(lt_dir) / "manifest.json", Path(teacher_path)], resume_path, cfg.checkpoint_every)
    if params.distill_method == "gml":
        return _gml_student(params, lt_dir, teacher, spec, x, y, manifest, runtime, ckpt_path, metrics_path,
                               live_dir, resumer)
    if cfg.k_kd >= len(x):
        raise UserError(f"distill.k_kd={cfg.k_kd} needs more than {cfg.k_kd} ID images, got {len(x)}")
    if cfg.clusters > len(x):
        raise UserError(f"distill.clusters={cfg.clusters} is larger than the ID set ({len(x)} images)")
    teacher = teacher.to(memory_format=runtime.memory_format())
    data = TrainSet.from_numpy(x, y, len(manifest["class_names"]), runtime.device)
    t0 = time.perf_counter()

    def guidance():
        z_f = embed_images(teacher, data.x, spec["mean"], spec["std"], runtime)
        centroids, clusters, info = cluster_embeddings(z_f, cfg.clusters, seed=cfg.seed)
        return centroids, clusters, info, knn_indices(z_f, cfg.k_kd)

    # under DDP rank 0 computes f's clusters and neighbours and every rank uses the same ones
    centroids, clusters, info, neighbours = on_main(guidance)
    setup_s = time.perf_counter() - t0
    student = copy.deepcopy(teacher).train()
    for p in student.parameters():
        p.requires_grad_(True)
    augment = build_augment(params.augment, spec, runtime.device)
    method = get_method("kdup", "distill")(student, data, cfg, runtime, augment, teacher=teacher, neighbours=neighbours,
                                clusters=clusters, centroids=centroids)
    logs, summary = run_session(method, cfg, runtime, live_dir, desc="distill", resumer=resumer,
                                 resume_state=resumer.load())
    # how often f's neighbour positives share the true class: what guided sampling relies on
    nb_precision = float(np.mean(y[neighbours] == y[:, None]))
    metrics = {"enabled": True, "method": "kdup", **summary, "setup_seconds": setup_s, "neighbour_precision": nb_precision,
               "clusters_converged": bool(info.get("converged", False))}
    if is_distributed():
        metrics["processes"] = world_size()
    if main:  # rank 0 alone writes the outputs
        save_encoder(ckpt_path, student, spec, params=params_dict(params, "distill"), history=history(logs),
                     distilled=True)
        write_json(metrics_path, metrics)
    barrier()
    return metrics


def _gml_student(params, lt_dir, teacher, spec, x, y, manifest, runtime, ckpt_path, metrics_path,
                    live_dir=None, resumer=None) -> dict:
    """GML's student (paper 002 Sec. 3.3): a freshly initialised network of the teacher's
    architecture with a cosine classifier, trained by gamma L_cls + beta L_GML from the frozen
    teacher's class-wise queues; its classifier's test accuracy is reported beside the probe."""
    cfg = params.distill
    n_classes = len(manifest["class_names"])
    if cfg.gml_k < cfg.gml_km * n_classes:
        raise UserError(f"distill.gml_k={cfg.gml_k} must be >= gml_km * classes = {cfg.gml_km * n_classes} (Eq. 6)")
    student = build_from_spec(spec).to(runtime.device, memory_format=runtime.memory_format()).train()
    teacher = teacher.to(memory_format=runtime.memory_format())
    data = TrainSet.from_numpy(x, y, n_classes, runtime.device)
    augment = build_augment(params.augment, spec, runtime.device)
    method = get_method("gml", "distill")(student, data, cfg, runtime, augment, teacher=teacher)
    logs, summary = run_session(method, cfg, runtime, live_dir, desc="gml student", resumer=resumer,
                                 resume_state=resumer.load() if resumer is not None else None)
    save_encoder(ckpt_path, student, spec, params=params_dict(params, "distill"), history=history(logs),
                 distilled=True, method_state=method.state_dict())
    metrics = {"enabled": True, "method": "gml", "supervised": True, **summary, "tau_g": method.tau,
               "classifier": classifier_report(method, lt_dir, manifest, params.data.group_rule)}
    write_json(metrics_path, metrics)
    return metrics

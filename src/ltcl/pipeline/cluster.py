"""cluster@<encoder>: what the frozen features look like, with and without labels.

Needs no labels (always written): the sorted cluster sizes of a k-means (``cluster.clusters``) of the
encoder's features of the *training split* (the collection itself: the tail the model sees), and a
t-SNE map. With a labeled evaluation set, on the balanced test split as before: CHI / DBI with the
true labels, k-means NMI / ARI (paper 003 Table 4, Fig. 3) and, when the manifest defines groups,
paper 001's class geometry per group; the t-SNE map is then of the test features, with their labels.
Without one (``labels.eval`` false) the t-SNE map is of the training features (each point with its
k-means cluster's rank by size, 0 = largest) and the details say why the label metrics are absent.

The headline (CHI, DBI) goes to metrics/cluster/<encoder>.json, the DVC metric; everything to
metrics/cluster/<encoder>_details.json beside it (:mod:`ltcl.headline`).

Bounded on 100,000+ images: the k-means clusters a seeded uniform sample of at most
``cluster.kmeans_samples`` training images (only those are passed through the encoder), and the
t-SNE takes at most ``cluster.tsne_samples`` points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ltcl.data.groups import label_facts
from ltcl.data.splits import load_split
from ltcl.errors import UserError
from ltcl.eval.cluster_metrics import cluster_metrics, cluster_sizes, stratified_subsample, tsne_embedding
from ltcl.eval.geometry import class_geometry
from ltcl.eval.protocols import encoder_features, load_frozen
from ltcl.headline import write_metrics
from ltcl.io import atomic_write

NO_LABEL_METRICS = ("no labeled evaluation set (labels.eval is false in data/lt/manifest.json): CHI, DBI, NMI, "
                    "ARI and the class geometry need true labels and are absent; the cluster sizes and the t-SNE "
                    "map of the training images need none. Set data.labeled to a labeled set to get them")


# the headline of a cluster record (paper 003 Table 4)
HEADLINE_KEYS = ("chi", "dbi")


def cluster_headline(metrics: dict) -> dict:
    """The headline of a cluster record (``metrics/cluster/<encoder>.json``, a DVC metric): CHI and
    DBI with the true labels, nothing else (NMI, ARI, the geometry, the cluster sizes: the details
    file); ``{}`` without a labeled evaluation set."""
    return {k: metrics[k] for k in HEADLINE_KEYS if k in metrics}


def training_cluster_sizes(model, spec, x_train, cfg, device, amp) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(cluster-size metrics, indices of the clustered training images, their features, their
    cluster's rank by size: 0 = the largest)."""
    idx = stratified_subsample(len(x_train), cfg.kmeans_samples, None, cfg.seed)
    if cfg.clusters > idx.size:
        raise UserError(f"cluster.clusters={cfg.clusters} is larger than the training split ({idx.size} images); "
                        "lower cluster.clusters")
    feats = encoder_features(model, spec, x_train[idx], device, amp).numpy()
    sizes, rank = cluster_sizes(feats, cfg.clusters, cfg.seed, cfg.l2_normalize)
    return {**sizes, "images": int(idx.size), "of": int(len(x_train))}, idx, feats, rank


def run(params, ckpt_path, lt_dir, metrics_path, tsne_path) -> dict:
    cfg = params.cluster
    model, spec, manifest, device, amp = load_frozen(params, ckpt_path, lt_dir)
    facts = label_facts(manifest)
    x_train, _ = load_split(lt_dir, "train")
    sizes, train_idx, train_feats, rank = training_cluster_sizes(model, spec, x_train, cfg, device, amp)
    if not facts.eval:  # the map of the training images, coloured by their k-means cluster (no labels)
        metrics = {"labels": "absent", "reason": NO_LABEL_METRICS, "cluster_sizes": sizes}
        sub, coords = tsne_embedding(train_feats, n_max=cfg.tsne_samples, seed=cfg.seed)
        df = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "index": train_idx[sub], "cluster": rank[sub]})
    else:
        x, y = load_split(lt_dir, "test")
        feats = encoder_features(model, spec, x, device, amp).numpy()
        num_classes = len(manifest["class_names"])
        metrics = cluster_metrics(feats, y, num_classes, seed=cfg.seed, l2_normalize=cfg.l2_normalize)
        metrics["cluster_sizes"] = sizes
        idx, coords = tsne_embedding(feats, n_max=cfg.tsne_samples, seed=cfg.seed, labels=y)
        df = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "label": y[idx]})
        if facts.has_groups:
            groups = np.asarray(manifest["groups"])  # the data stage's rule (data.group_rule) on group_counts
            metrics["geometry"] = class_geometry(feats, y, groups)
            df["group"] = groups[y[idx]]
    metrics["group_source"] = facts.group_source
    write_metrics(metrics_path, metrics, cluster_headline(metrics))
    with atomic_write(tsne_path, "w") as fh:
        df.to_csv(fh, index=False, float_format="%.4f")
    return metrics

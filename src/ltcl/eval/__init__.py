"""Evaluation of frozen representations: group accuracies, linear probe, KNN, cluster metrics.

``ltcl.eval`` never imports ``ltcl.train``.
"""

from .cluster_metrics import cluster_metrics, stratified_subsample, tsne_embedding
from .features import extract_features
from .groups import accuracy_report, class_groups, group_summary, per_class_accuracy
from .knn import knn_accuracy, knn_predict
from .probe import ProbeResult, normalize_features, train_linear_probe

__all__ = [
    "ProbeResult",
    "accuracy_report",
    "class_groups",
    "cluster_metrics",
    "extract_features",
    "group_summary",
    "knn_accuracy",
    "knn_predict",
    "normalize_features",
    "per_class_accuracy",
    "stratified_subsample",
    "train_linear_probe",
    "tsne_embedding",
]

try:
    from .geometry import class_geometry  # noqa: F401
except ImportError:  # geometry.py is optional
    pass
else:
    __all__.append("class_geometry")

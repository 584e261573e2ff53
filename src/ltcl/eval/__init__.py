"""Evaluation of frozen representations: group accuracies, linear probe, KNN, cluster metrics.

``ltcl.eval`` never imports ``ltcl.train``.  The names below are imported lazily (PEP 562), so
``from ltcl.eval.groups import class_groups`` (make-lt-dataset) does not pull in torch and
scikit-learn through this package.
"""

from importlib import import_module

_EXPORTS = {
    "ProbeResult": "probe",
    "accuracy_report": "groups",
    "class_geometry": "geometry",
    "class_groups": "groups",
    "cluster_metrics": "cluster_metrics",
    "extract_features": "features",
    "group_summary": "groups",
    "knn_accuracy": "knn",
    "knn_predict": "knn",
    "normalize_features": "probe",
    "per_class_accuracy": "groups",
    "stratified_subsample": "cluster_metrics",
    "train_linear_probe": "probe",
    "tsne_embedding": "cluster_metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

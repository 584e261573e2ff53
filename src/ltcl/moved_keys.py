"""The params keys that moved into per-method subsections (issue 22): old flat key -> new key(s).

Until then every method's keys sat side by side in one flat section (``pretrain.tase_warmup``
beside ``pretrain.gml_scale``), so a DVC stage listing the section reran when a key of a method
it does not run changed.  Each method's and OOD strategy's own keys now live in its subsection
(``pretrain.tase.warmup``), which dvc.yaml lists as ``pretrain.${pretrain.method}``.

A params.yaml or a preset written before the move names old keys: the schema refuses each with
the key that replaced it (:func:`moved_messages`), and :func:`upgrade_flat` renames them in the
records of older experiments so that ``ltcl compare`` tabulates old and new runs together.
Standard library only (ltcl.compare imports it without pydantic).
"""

from __future__ import annotations

from typing import Any

# old flat key -> the key(s) now holding its value (a key several methods read went to each of them)
MOVED: dict[str, tuple[str, ...]] = {
    # the flag `pretrain.sdclr: true|false`; `pretrain.sdclr` is now the sdclr method's subsection
    "pretrain.sdclr": ("pretrain.pruned_branch",),
    "pretrain.k_pos": ("pretrain.psd.k_pos",),
    "pretrain.tau_min": ("pretrain.ts.tau_min", "pretrain.tase.tau_min"),
    "pretrain.tau_max": ("pretrain.ts.tau_max", "pretrain.tase.tau_max", "pretrain.gloco.tau_max",
                         "pretrain.gloco-proco.tau_max"),
    "pretrain.ts_period": ("pretrain.ts.period_fraction",),  # epochs then, T / pretrain.epochs now (UNITS)
    "pretrain.tase_warmup": ("pretrain.tase.warmup",),
    "pretrain.tase_refresh": ("pretrain.tase.refresh",),
    "pretrain.tase_full": ("pretrain.tase.full",),
    "pretrain.tase_clusters": ("pretrain.tase.clusters",),
    "pretrain.tase_mapping": ("pretrain.tase.mapping",),
    "pretrain.gloco_k": ("pretrain.gloco.k", "pretrain.gloco-proco.k"),
    "pretrain.gloco_gamma": ("pretrain.gloco.gamma", "pretrain.gloco-proco.gamma"),
    "pretrain.proco_alpha": ("pretrain.gloco-proco.alpha",),
    "pretrain.proco_coreset": ("pretrain.gloco-proco.coreset",),
    "pretrain.gml_scale": ("pretrain.gml.scale",),
    "distill.k_kd": ("distill.kdup.k_kd",),
    "distill.beta": ("distill.kdup.beta",),
    "distill.clusters": ("distill.kdup.clusters",),
    "distill.guided_sampling": ("distill.kdup.guided_sampling",),
    "distill.guided_weighting": ("distill.kdup.guided_weighting",),
    "distill.gml_k": ("distill.gml.k",),
    "distill.gml_km": ("distill.gml.km",),
    "distill.gml_temperature": ("distill.gml.temperature",),
    "distill.gml_train_tau": ("distill.gml.train_tau",),
    "distill.gml_alpha": ("distill.gml.alpha",),
    "distill.gml_scale": ("distill.gml.scale",),
    "distill.gml_cls_weight": ("distill.gml.cls_weight",),
    "distill.gml_weight": ("distill.gml.weight",),
    "ood.colt_topk": ("ood.colt.topk",),
    "ood.colt_momentum": ("ood.colt.momentum",),
}
# old keys whose new key counts in another unit: what the message adds, and how upgrade_flat converts
UNITS: dict[str, str] = {
    "pretrain.ts_period": "(T as a fraction of pretrain.epochs, not in epochs: TS's runs 400 / 2000 = 0.2)",
}


def _ts_period_fraction(params: dict[str, Any]) -> Any:
    """An old run's ``pretrain.ts_period`` (epochs) as ``pretrain.ts.period_fraction``."""
    epochs = params.get("pretrain.epochs")
    period = params["pretrain.ts_period"]
    return period / epochs if isinstance(epochs, (int, float)) and isinstance(period, (int, float)) and epochs else None


CONVERT = {"pretrain.ts_period": _ts_period_fraction}
# old value of a key -> its new value (None: the value is gone, the message says what to set)
RENAMED_VALUES: dict[tuple[str, str], str | None] = {
    ("pretrain.method", "gloco+proco"): "gloco-proco",  # its subsection's name must be a DVC -S key
    ("distill.method", "auto"): None,  # a params subsection cannot follow another key's value
}
VALUE_HINTS = {
    ("distill.method", "auto"): "distill.method: auto is gone; set distill.method: gml after pretrain.method: "
                                "gml, else kdup (dvc.yaml lists the configured method's subsection "
                                "distill.${distill.method})",
}


def moved_messages(section: str, raw: Any) -> list[str]:
    """One line per old key (or value) in ``raw``, the params.yaml mapping of ``section``,
    naming what replaced it; empty when ``raw`` holds none."""
    if not isinstance(raw, dict):
        return []
    out = []
    for key, value in raw.items():
        old = f"{section}.{key}"
        if old == "pretrain.sdclr" and isinstance(value, dict):
            continue  # the sdclr method's subsection, not the old flag
        if old in MOVED:
            out.append(f"{old} is now {' / '.join(MOVED[old])}" + (f" {UNITS[old]}" if old in UNITS else ""))
        if isinstance(value, str) and (old, value) in RENAMED_VALUES:
            new = RENAMED_VALUES[(old, value)]
            out.append(VALUE_HINTS[(old, value)] if new is None else f"{old}: {value} is now {new}")
    return out


def upgrade_flat(params: dict[str, Any]) -> dict[str, Any]:
    """Flat params (``"pretrain.tase_warmup" -> 50``) of a run made before the move, with each old
    key renamed to its new key(s) and each renamed value replaced; new keys are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in CONVERT:
            value = CONVERT[key](params)
        for new in MOVED.get(key, (key,)):
            out.setdefault(new, value)
    for (key, old), new in RENAMED_VALUES.items():
        if out.get(key) == old and new is not None:
            out[key] = new
    return out

"""The comparison table of the papers, built from experiment rows: mean +- std over seeds,
best value per column, a not-significant mark where the best is within the combined spread of
another row, the params that differ between rows, and the honest baselines (imbalance cost and
its share recovered, compute-matched SimCLR)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ltcl.compare.experiments import SEED_KEYS, Experiment, Row, rows_of

# (key, header, better): accuracies and kNN higher, STD / DBI / time lower
GROUP_COLS = [("many", "Many", "max"), ("medium", "Med.", "max"), ("few", "Few", "max"), ("std", "STD", "min"),
              ("all", "All", "max")]
EXTRA_COLS = [("knn1", "kNN@1", "max"), ("knn10", "kNN@10", "max"), ("chi", "CHI", "max"), ("dbi", "DBI", "min"),
              ("minutes", "train min", "min")]
COLUMNS = GROUP_COLS + EXTRA_COLS


def row_values(row: Row, protocol: str) -> dict[str, float]:
    e, enc = row.experiment, row.encoder
    v: dict[str, float] = {}
    probe = e.metric(f"probe/{enc}", protocol) or {}
    for key, _, _ in GROUP_COLS:
        if isinstance(probe.get(key), (int, float)):
            v[key] = float(probe[key])
    knn = e.metric(f"probe/{enc}", "knn") or {}
    for k in ("1", "10"):
        if isinstance(knn.get(f"k{k}"), (int, float)):
            v[f"knn{k}"] = float(knn[f"k{k}"])
    cl = e.metrics.get(f"cluster/{enc}") or {}
    for k in ("chi", "dbi"):
        if isinstance(cl.get(k), (int, float)):
            v[k] = float(cl[k])
    if enc.startswith("ext-"):  # an imported encoder was not trained by this run
        return v
    # training minutes: the warm-up, pre-training and (for g) distillation seconds of the run records
    secs = [e.timing("ood-sampling", "warmup", "seconds", default=0.0), e.timing("pretrain", "seconds", default=0.0)]
    if enc == "distill":
        secs.append(e.timing("distill", "seconds", default=0.0))
    total = sum(float(s or 0.0) for s in secs)
    if total > 0:
        v["minutes"] = total / 60.0
    return v


@dataclass
class Line:
    """One row of the table: a label, its runs and the mean / std of each column over them."""

    label: str
    supervised: bool
    runs: list[Row]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    best: set = field(default_factory=set)
    not_significant: set = field(default_factory=set)
    params: dict[str, Any] = field(default_factory=dict)  # the differing params (non-seed)


def varying_keys(exps: list[Experiment]) -> list[str]:
    keys = sorted({k for e in exps for k in e.params})
    out = []
    for k in keys:
        if k in SEED_KEYS:
            continue
        vals = {repr(e.params[k]) for e in exps if k in e.params}  # a key an older run lacks is no difference
        if len(vals) > 1:
            out.append(k)
    return out


BASE_ORDER = ["SimCLR", "SDCLR", "TS", "TASE", "GloCo", "GloCo + ProCo", "GML"]
OOD_ORDER = ["", "PSD", "random OOD", "augmented ID", "COLT", "KDUP"]
KDUP_SUBORDER = ["KDUP sampling", "(random sampling)", "(augmented ID)", "(COLT sampling)"]


def line_order(line: "Line") -> tuple:
    """The papers' order: baseline first, then its OOD variants (random, COLT, KDUP), f before g;
    balanced-subset and compute-matched rows right after their long-tailed row."""
    label = line.label
    base = next((i for i, b in reversed(list(enumerate(BASE_ORDER))) if label.startswith(b)), len(BASE_ORDER))
    ood = max((i for i, o in enumerate(OOD_ORDER) if o and f"+ {o}" in label), default=0)
    # within KDUP: the sampler alone (Table 5), then Table 3's samplers random, COLT, KDUP's own
    sampler = next((i for i, v in enumerate(KDUP_SUBORDER) if v in label), len(KDUP_SUBORDER))
    enc = 1 if line.runs and line.runs[0].encoder == "distill" else 0
    return (base, ood, sampler, "[balanced subset]" in label, "(compute-matched)" in label, enc, label)


def build_lines(exps: list[Experiment], protocol: str = "full") -> tuple[list[Line], list[str]]:
    """Lines of the table for ``protocol`` and the keys that vary between experiments."""
    keys = varying_keys(exps)
    groups: dict[tuple, Line] = {}
    for e in exps:
        for r in rows_of(e):
            r.values = row_values(r, protocol)
            if not any(k in r.values for k, _, _ in GROUP_COLS):
                continue
            key = (r.label, tuple(repr(e.params.get(k)) for k in keys))
            line = groups.setdefault(key, Line(r.label, r.supervised, [], params={k: e.params.get(k) for k in keys}))
            line.runs.append(r)
    lines = sorted(groups.values(), key=line_order)
    for line in lines:
        for key, _, _ in COLUMNS:
            vals = [r.values[key] for r in line.runs if key in r.values and math.isfinite(r.values[key])]
            if vals:
                line.mean[key] = float(np.mean(vals))
                line.std[key] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                line.n[key] = len(vals)
    mark_best(lines)
    return lines, keys


def mark_best(lines: list[Line]) -> None:
    """Best mean per column; marked not significant when another line's mean lies within the
    combined spread sqrt(s1^2 + s2^2) of the best (so a win inside the noise is not a win)."""
    for key, _, better in COLUMNS:
        cand = [l for l in lines if key in l.mean]
        if len(cand) < 2:
            continue
        best = max(cand, key=lambda l: l.mean[key]) if better == "max" else min(cand, key=lambda l: l.mean[key])
        best.best.add(key)
        for other in cand:
            if other is best:
                continue
            spread = math.hypot(best.std.get(key, 0.0), other.std.get(key, 0.0))
            if abs(best.mean[key] - other.mean[key]) <= spread:
                best.not_significant.add(key)
                break


def honest_baselines(lines: list[Line]) -> dict[str, Any]:
    """Cost of imbalance (balanced subset minus long-tailed, per group; paper 003 Table 1) for
    every method that has both, and each long-tailed line's share of SimCLR's cost recovered:
    (line - SimCLR) / (SimCLR balanced - SimCLR)."""
    by_label = {l.label: l for l in lines}
    cost: dict[str, dict[str, float]] = {}
    noise: dict[str, dict[str, float]] = {}
    for l in lines:
        if l.label.endswith(" [balanced subset]"):
            lt = by_label.get(l.label[: -len(" [balanced subset]")])
            if lt:
                keys = [k for k in ("many", "medium", "few", "all") if k in l.mean and k in lt.mean]
                cost[lt.label] = {k: l.mean[k] - lt.mean[k] for k in keys}
                noise[lt.label] = {k: math.hypot(l.std.get(k, 0.0), lt.std.get(k, 0.0)) for k in keys}
    recovered: dict[str, dict[str, float | None]] = {}
    base = by_label.get("SimCLR")
    if base and "SimCLR" in cost:
        for l in lines:
            if l is base or "[balanced subset]" in l.label:
                continue
            # a share of a cost that lies within the seeds' spread is not defined (None)
            recovered[l.label] = {k: ((l.mean[k] - base.mean[k]) / c
                                      if abs(c) > max(noise["SimCLR"][k], 1e-9) else None)
                                  for k, c in cost["SimCLR"].items() if k in l.mean}
    return {"imbalance_cost": cost, "cost_spread": noise, "share_recovered": recovered}

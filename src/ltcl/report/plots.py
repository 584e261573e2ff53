"""Matplotlib figures for the report, returned as inline PNG data URIs (the page renders
offline: no CDN, no external files)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

GROUP_COLOURS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def class_counts(counts, names, groups) -> str:
    order = np.argsort(-np.asarray(counts), kind="stable")
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(counts)), 3))
    ax.bar(range(len(order)), np.asarray(counts)[order],
           color=[GROUP_COLOURS.get(groups[i], "grey") for i in order])
    ax.set_xticks(range(len(order)), [str(names[i]) for i in order], rotation=60, fontsize=7)
    ax.set_ylabel("images in the long-tailed split")
    ax.set_title("Class counts (colour = Many / Medium / Few)")
    return to_data_uri(fig)


def read_live_curves(directory: str | Path) -> dict[str, pd.DataFrame]:
    """dvclive's per-metric TSV files (``plots/metrics/<name>.tsv``) as DataFrames."""
    d = Path(directory) / "plots" / "metrics"
    return {p.stem: pd.read_csv(p, sep="\t") for p in sorted(d.glob("*.tsv"))} if d.exists() else {}


def training_curves(curves: dict[str, dict[str, pd.DataFrame]]) -> str | None:
    """One panel per metric (loss, lr, images/s), one line per training stage."""
    names = ["loss", "lr", "images_per_s"]
    if not any(c for c in curves.values()):
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3))
    for ax, name in zip(axes, names):
        for stage, c in curves.items():
            if name in c:
                df = c[name]
                ax.plot(df["step"] + 1, df[name], label=stage)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend(fontsize=7)
    return to_data_uri(fig)


def per_class_bars(per_class: dict[str, pd.DataFrame], protocol: str, names) -> str | None:
    """Per-class test accuracy of each encoder, classes ordered from head to tail."""
    frames = {k: v for k, v in per_class.items() if protocol in v}
    if not frames:
        return None
    first = next(iter(frames.values()))
    order = np.argsort(-first["train_count"].to_numpy(), kind="stable")
    width = 0.8 / len(frames)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(order)), 3))
    values = []
    for j, (enc, df) in enumerate(frames.items()):
        values += list(df[protocol].to_numpy()[order])
        ax.bar(np.arange(len(order)) + j * width, df[protocol].to_numpy()[order], width, label=enc)
    ax.set_xticks(np.arange(len(order)) + 0.4 - width / 2,
                  [f"{names[i]}\n({first['train_count'][i]})" for i in order], fontsize=7)
    ax.set_ylim(*accuracy_ylim(values))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-class accuracy, {protocol} protocol (head -> tail; train count)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return to_data_uri(fig)


def accuracy_ylim(values, margin: float = 0.15) -> tuple[float, float]:
    """A y range that shows the differences between the bars: from a little below the lowest
    value to a little above the highest (not 0-100, where a 2-point difference is invisible), at
    least 4 points tall, clipped to 0-100."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return 0.0, 100.0
    lo, hi = float(v.min()), float(v.max())
    pad = max((hi - lo) * margin, 1.0)
    lo, hi = lo - pad, hi + pad
    if hi - lo < 4.0:
        mid = (hi + lo) / 2
        lo, hi = mid - 2.0, mid + 2.0
    return max(0.0, lo), min(hi, 100.0 + pad)  # room above a bar at 100 for its label


def group_bars(rows: list[dict], title: str) -> str | None:
    """Grouped bars Many / Medium / Few / All for each row (encoder or experiment): the y axis
    spans the values (not 0-100), each bar carries its value, the legend sits beside the plot."""
    if not rows:
        return None
    keys = ["many", "medium", "few", "all"]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    values = []
    for j, r in enumerate(rows):
        vals = [r.get(k, np.nan) for k in keys]
        values += vals
        bars = ax.bar(np.arange(len(keys)) + j * width, vals, width, label=r["name"])
        ax.bar_label(bars, labels=[f"{v:.1f}" if np.isfinite(v) else "" for v in vals], fontsize=6, padding=1)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, ["Many", "Medium", "Few", "All"])
    ax.set_ylim(*accuracy_ylim(values))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return to_data_uri(fig)


def per_class_vs_count(per_class: dict[str, pd.DataFrame], protocol: str) -> str | None:
    """Per-class test accuracy against the class's training count (log axis), one colour per
    encoder. One run cannot separate rarity from difficulty (the seed decides which classes are
    rare); the caption says so."""
    frames = {k: v for k, v in per_class.items() if protocol in v}
    if not frames:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for enc, df in frames.items():
        ok = df["train_count"] > 0
        ax.scatter(df.loc[ok, "train_count"], df.loc[ok, protocol], s=18, alpha=0.7, label=enc)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-class accuracy vs count, {protocol} (one seed: rarity and difficulty mixed)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return to_data_uri(fig)


def budget_bars(budgets, cluster_tailness, majority_class=None, majority_group=None) -> str:
    """OOD budget per cluster beside its tailness (paper 003 Eq. 6-7)."""
    budgets = np.asarray(budgets)
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(budgets)), 3))
    colours = [GROUP_COLOURS.get(g, "grey") for g in majority_group] if majority_group is not None else None
    ax.bar(range(len(budgets)), budgets, color=colours)
    labels = [f"c{k}" + (f"\n({majority_class[k]})" if majority_class is not None else "")
              for k in range(len(budgets))]
    ax.set_xticks(range(len(budgets)), labels, fontsize=7)
    ax.set_ylabel("OOD images")
    ax2 = ax.twinx()
    ax2.plot(range(len(budgets)), cluster_tailness, "k.--", label="cluster tailness")
    ax2.set_ylabel("tailness")
    ax.set_title("OOD budget per cluster (colour = group of the cluster's majority class)")
    return to_data_uri(fig)


def tsne_scatter(coords, labels, groups_of_class, names, title: str) -> str:
    coords = np.asarray(coords)
    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    markers = {"many": "o", "medium": "s", "few": "^"}
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for c in np.unique(labels):
        m = labels == c
        ax.scatter(coords[m, 0], coords[m, 1], s=6, color=cmap(c % cmap.N),
                   marker=markers.get(groups_of_class[c], "o"), label=f"{names[c]} ({groups_of_class[c]})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if len(names) <= 20:
        ax.legend(fontsize=5, markerscale=2, loc="best")
    return to_data_uri(fig)

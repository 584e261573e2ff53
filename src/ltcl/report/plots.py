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


def throughput_curve(per_epoch: list[dict]) -> dict[str, pd.DataFrame]:
    """``{"images_per_s": <step, images_per_s>}`` of a session's epochs (a run record's
    ``per_epoch``, ``ltcl.train.session.train_timings``), in dvclive's curve layout (step 0 = the
    session's first epoch); {} for a session without epochs."""
    if not per_epoch:
        return {}
    return {"images_per_s": pd.DataFrame({"step": range(len(per_epoch)),
                                          "images_per_s": [e["images_per_s"] for e in per_epoch]})}


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
    ax.set_title("OOD budget per cluster (colour = group of the cluster's majority class)" if colours is not None
                 else "OOD budget per cluster (bars) and cluster tailness (line)")
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


def cluster_size_bars(sizes: dict[str, list[int]]) -> str | None:
    """The sorted cluster sizes of each encoder's k-means of the training split (largest first, log
    y axis, one colour per encoder): the tail the model sees, with or without labels."""
    sizes = {k: v for k, v in sizes.items() if v}
    if not sizes:
        return None
    k_max = max(len(v) for v in sizes.values())
    width = 0.8 / len(sizes)
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * k_max * len(sizes) + 2), 3))
    for j, (enc, v) in enumerate(sizes.items()):
        v = np.sort(np.asarray(v))[::-1]
        ax.bar(np.arange(len(v)) + j * width, np.maximum(v, 0.5), width, label=enc)
    ax.set_yscale("log")
    from matplotlib import ticker

    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    top, bottom = max(max(v) for v in sizes.values()), max(min(min(v) for v in sizes.values()), 0.5)
    # within one decade the minor ticks carry the labels (else there would be one or none)
    ax.yaxis.set_minor_formatter(plain if top / bottom < 10 else ticker.NullFormatter())
    ax.set_xticks(np.arange(k_max) + 0.4 - width / 2, [str(r + 1) for r in range(k_max)], fontsize=7)
    ax.set_xlabel("cluster, largest first")
    ax.set_ylabel("training images (log)")
    ax.set_title("Cluster sizes of a k-means of the training features (the tail the model sees)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return to_data_uri(fig)


def tsne_points(coords, labels, names, title: str) -> str:
    """A t-SNE map without groups: one colour per class when ``labels`` are given (``names`` their
    class names, or None for unnamed clusters: an unlabeled map coloured by k-means cluster), one
    colour for all points when ``labels`` is None."""
    coords = np.asarray(coords)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=6, color="#1f77b4")
    elif names is None:
        labels = np.asarray(labels)
        from matplotlib import ticker

        k = int(labels.max()) + 1
        sc = ax.scatter(coords[:, 0], coords[:, 1], s=6, c=labels, cmap=plt.get_cmap("viridis_r", k),
                        vmin=-0.5, vmax=k - 0.5)
        bar = fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.02)
        bar.locator = ticker.MaxNLocator(integer=True)
        bar.update_ticks()
        bar.set_label("k-means cluster (0 = largest)", fontsize=7)
    else:
        labels = np.asarray(labels)
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for c in np.unique(labels):
            m = labels == c
            ax.scatter(coords[m, 0], coords[m, 1], s=6, color=cmap(c % cmap.N), label=str(names[c]))
        if len(names) <= 20:
            ax.legend(fontsize=5, markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return to_data_uri(fig)


def per_class_bars_by_class(per_class: dict[str, pd.DataFrame], protocol: str, names) -> str | None:
    """Per-class test accuracy of each encoder in class order: for a split whose training labels are
    not real, where no training count orders the classes from head to tail."""
    frames = {k: v for k, v in per_class.items() if protocol in v and len(v)}
    if not frames:
        return None
    n = len(next(iter(frames.values())))
    width = 0.8 / len(frames)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * n), 3))
    values = []
    for j, (enc, df) in enumerate(frames.items()):
        values += list(df[protocol].to_numpy())
        ax.bar(np.arange(n) + j * width, df[protocol].to_numpy(), width, label=enc)
    ax.set_xticks(np.arange(n) + 0.4 - width / 2, [str(names[i]) for i in range(n)], fontsize=7, rotation=60)
    ax.set_ylim(*accuracy_ylim(values))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-class accuracy, {protocol} protocol")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return to_data_uri(fig)


# --------------------------------------------------------------------------- OOD update pictures
# (the records of ltcl.sampling.update_pictures: they need no labels)
GRID_PAD = 2  # white pixels around each thumbnail of a grid


def tailness_histogram(edges, counts, groups, title: str) -> str:
    """The ID images' tailness as a histogram: one stacked series per Many / Medium / Few group
    (only when the record was made from real labels) or the single grey series ``all``."""
    edges = np.asarray(edges, dtype=float)
    counts = np.asarray(counts)
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    bottom = np.zeros(counts.shape[1])
    for g, c in zip(groups, counts):
        ax.bar(edges[:-1], c, width=np.diff(edges), bottom=bottom, align="edge", label=str(g),
               color=GROUP_COLOURS.get(str(g), "grey"), edgecolor="white", linewidth=0.3)
        bottom = bottom + c
    if [str(g) for g in groups] != ["all"]:
        ax.legend(fontsize=7, title="group of the class", title_fontsize=7, frameon=False)
    ax.set_xlabel("tailness (higher: the image lies where the ID data is thin)", fontsize=8)
    ax.set_ylabel("ID images")
    ax.set_title(title, fontsize=9)
    return to_data_uri(fig)


def thumbnail_mosaic(left, left_rows, right, right_rows) -> np.ndarray:
    """One RGB uint8 image of two thumbnail blocks side by side, one row per cluster: ``left``
    (R, T, h, w, c; None: no left block), a gap of one cell, ``right``.  ``*_rows`` (R, T) are
    the thumbnails' row numbers, -1 for an empty cell (left white).  Each cell is the image
    itself, pixel for pixel, with :data:`GRID_PAD` white pixels around it; a gray image
    (c = 1) is shown as gray (its value in R, G and B)."""
    blocks = [(b, np.asarray(r)) for b, r in ((left, left_rows), (right, right_rows)) if b is not None]
    n_rows, (h, w) = blocks[0][0].shape[0], blocks[0][0].shape[2:4]
    cols = sum(b.shape[1] for b, _ in blocks) + len(blocks) - 1
    ch, cw = h + GRID_PAD, w + GRID_PAD
    out = np.full((n_rows * ch + GRID_PAD, cols * cw + GRID_PAD, 3), 255, dtype=np.uint8)
    col0 = 0
    for thumbs, rows in blocks:
        for r in range(n_rows):
            for j in range(thumbs.shape[1]):
                if rows[r, j] >= 0:
                    y, x = r * ch + GRID_PAD, (col0 + j) * cw + GRID_PAD
                    out[y: y + h, x: x + w] = thumbs[r, j]  # (h, w, 1) broadcasts to gray RGB
        col0 += thumbs.shape[1] + 1
    return out


def thumbnail_grid(left, left_rows, right, right_rows, row_labels, left_title, right_title, title: str) -> str:
    """:func:`thumbnail_mosaic` drawn with a label per row (the cluster: id, ID size, tailness,
    budget) and a title over each block."""
    mosaic = thumbnail_mosaic(left, left_rows, right, right_rows)
    ref = left if left is not None else right
    n_rows, t_left = ref.shape[0], 0 if left is None else left.shape[1]
    ch, cw = ref.shape[2] + GRID_PAD, ref.shape[3] + GRID_PAD
    cell_in = 0.36  # inches per thumbnail on the page
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] / cw * cell_in + 2.6, n_rows * cell_in + 0.9))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([r * ch + ch / 2 for r in range(n_rows)], row_labels, fontsize=7)
    centres, names = [], []
    if left is not None:
        centres.append(t_left * cw / 2)
        names.append(left_title)
    start = (t_left + 1) * cw if left is not None else 0
    centres.append(start + right.shape[1] * cw / 2)
    names.append(right_title)
    ax.set_xticks(centres, names, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    return to_data_uri(fig)

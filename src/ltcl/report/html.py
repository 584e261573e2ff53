"""The report stage: one self-contained HTML page (images inline, no CDN) and a Markdown
twin, built from the metrics and artefacts the other stages wrote."""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ltcl.data.groups import label_facts
from ltcl.headline import details_path, is_details
from ltcl.registry import STRATEGIES
from ltcl.report import plots
from ltcl.runrecord import read_run_record
from ltcl.sampling.steps import UPDATE_STEPS

ENCODER_LABELS = {"pretrain": "f (pre-trained)", "distill": "g (distilled)"}
ENCODER_SHORT = {"pretrain": "f", "distill": "g"}
# the reference rows of every probe table (stage reference-probe-*, ltcl.eval.reference)
REFERENCE_LABELS = {"ref-pixels": "raw pixels (reference)", "ref-random": "random-init encoder (reference)"}
REFERENCE_SHORT = {"ref-pixels": "raw pixels", "ref-random": "random init"}
PROTOCOL_LABELS = {"full": "Linear probe (full)", "few_shot": "Few-shot linear probe",
                   "ms": "MS linear probe", "lt": "LT linear probe", "one_percent": "1% linear probe"}
GROUP_COLUMNS = [("many", "Many"), ("medium", "Med."), ("few", "Few"), ("std", "STD"), ("all", "All")]


@dataclass
class Section:
    title: str
    html: str
    md: str
    anchor: str = ""


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, html_body: str, md_body: str) -> None:
        anchor = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
        self.sections.append(Section(title, html_body, md_body, anchor))

    def to_html(self) -> str:
        toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in self.sections)
        body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.html}</section>'
                       for s in self.sections)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
td.best {{ font-weight: bold; background: #eef6ee; }}
img {{ max-width: 100%; border: 1px solid #eee; margin: .3em 0; }}
pre {{ background: #f6f6f6; padding: .6em; font-size: 12px; overflow-x: auto; }}
.note {{ color: #666; font-size: 13px; }}
</style></head><body>
<h1>{html.escape(self.title)}</h1><nav><ul>{toc}</ul></nav>{body}</body></html>
"""

    def to_markdown(self) -> str:
        return f"# {self.title}\n\n" + "\n".join(f"## {s.title}\n\n{s.md}\n" for s in self.sections)


def fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if isinstance(v, (bool, str)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def table(rows: list[dict], columns: list[tuple[str, str]], best: dict[str, str] | None = None,
          first: tuple[str, str] = ("name", "")) -> tuple[str, str]:
    """(HTML, Markdown) table; ``best`` maps a column key to "max" or "min" to mark the best."""
    best = best or {}
    marks = {}
    for key, how in best.items():
        vals = [r.get(key) for r in rows if isinstance(r.get(key), (int, float)) and np.isfinite(r.get(key))]
        if len(vals) > 1:
            marks[key] = max(vals) if how == "max" else min(vals)
    head = [first[1]] + [c[1] for c in columns]
    h = "<table><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in head) + "</tr>"
    m = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
    for r in rows:
        cells_h, cells_m = [f"<td>{html.escape(str(r.get(first[0], '')))}</td>"], [str(r.get(first[0], ""))]
        for key, _ in columns:
            v = r.get(key)
            is_best = key in marks and v == marks[key]
            cells_h.append(f'<td class="best">{fmt(v)}</td>' if is_best else f"<td>{fmt(v)}</td>")
            cells_m.append(f"**{fmt(v)}**" if is_best else fmt(v))
        h += "<tr>" + "".join(cells_h) + "</tr>"
        m += "| " + " | ".join(cells_m) + " |\n"
    return h + "</table>", m


def img(uri: str | None, alt: str) -> tuple[str, str]:
    if not uri:
        return "", ""
    return f'<img src="{uri}" alt="{html.escape(alt)}">', f"![{alt}]({uri})"


def _read_json(p: Path):
    return json.loads(p.read_text()) if p.exists() else None


def _read_details(root: Path, headline: str):
    """The whole record of a stage whose DVC metric is the headline file ``headline``
    (``metrics/probe/pretrain.json``): its details file beside it (:mod:`ltcl.headline`), or None."""
    return _read_json(details_path(root / headline))


def encoder_labels(root: Path, encoders) -> dict[str, str]:
    """"f (pre-trained): gml [supervised]" etc.: which method made each encoder, and whether it
    read the labels of the long-tailed split (supervised rows are not comparable with
    self-supervised ones as equals)."""
    out = {}
    for e in encoders:
        if e.startswith("ext-"):
            out[e] = f"{e[4:]} (external encoder, imported)"
            continue
        mt = _read_json(root / f"metrics/{e}.json") or {}
        method = mt.get("method")
        if e == "distill" and mt.get("enabled") is False:
            method = "= f (no distillation)"
        label = ENCODER_LABELS.get(e, e) + (f": {method}" if method else "")
        if e == "pretrain" and mt.get("ood_strategy", "none") != "none":
            label += f" + {mt['ood_strategy']} OOD"
        out[e] = label + (" [supervised]" if mt.get("supervised") else "")
    return out


# the stages whose run records (runs/<stage>.json, ltcl.runrecord) the run card shows: the report
# stage's upstream stages (dvc.yaml lists their records in its deps)
RUN_STAGES = ("make-lt-dataset", "ood-pool", "ood-sampling", "pretrain", "distill", "linear-probe@pretrain",
              "linear-probe@distill", "reference-probe-pixels", "reference-probe-random", "cluster@pretrain",
              "cluster@distill")


def timings(root: Path, stage: str) -> dict:
    """The timings of ``stage``'s run record ({} when it has none)."""
    return read_run_record(root, stage).get("timings") or {}


def split_fact(ds: dict, manifest: dict) -> str:
    """Where the split came from: generated from a seed, or the community's list files, each
    named with its sha256 (comparable with the published tables only on the same files)."""
    name = ds.get("split_name") or manifest.get("split") or "generated"
    if name == "generated":
        return "generated by ltcl from data.split_seed (not the papers' split files)"
    files = manifest.get("split_files") or {}
    listed = "; ".join(f"{role}: {r.get('file')} sha256 {r.get('sha256')}" for role, r in files.items())
    return f"{name} (community lists): {listed}"


def run_card(root: Path, params: dict | None = None) -> tuple[str, str] | None:
    """Dataset, split sizes, seeds (from ``params``, the params the run's stages read), machine,
    wall time and peak memory per stage (the stages' run records), and the time table of paper 003
    (Tables 13-15) measured on this run."""
    runs = {st: read_run_record(root, st).get("run") for st in RUN_STAGES}
    runs = {st: r for st, r in runs.items() if r}
    ds = _read_json(root / "metrics/dataset.json") or {}
    if not runs and not ds:
        return None
    params = params or {}
    first = next(iter(runs.values()), {})
    seeds = {f"{sec}.seed": (params.get(sec) or {}).get("seed") for sec in ("pretrain", "ood", "distill", "probe")}
    seeds["data.split_seed"] = (params.get("data") or {}).get("split_seed")
    facts = [
        ("dataset", f"{ds.get('source', '?')} ({ds.get('image_shape', '?')}), imbalance ratio "
                    f"{ds.get('imbalance_ratio', '?')}, {ds.get('subset', '')}" if ds.get("train_labels", True) else
                    f"{ds.get('source', '?')} ({ds.get('image_shape', '?')}): an unlabeled collection of "
                    f"{ds.get('size_train', '?')} images, used whole" + (
                        f"; labeled evaluation set of {ds.get('num_classes')} classes" if ds.get("eval_labels")
                        else "; no labeled evaluation set")),
        ("split", split_fact(ds, _read_json(root / "data/lt/manifest.json") or {})),
        ("split sizes", ", ".join(f"{k[5:]} {v}" for k, v in ds.items() if k.startswith("size_"))),
        ("seeds", ", ".join(f"{k} {v}" for k, v in seeds.items() if v is not None)),
        ("machine", f"{first.get('cpu', '?')}, {first.get('cores', '?')} cores, torch threads "
                    f"{first.get('torch_threads', '?')}, GPU {first.get('gpu') or 'none'}, torch "
                    f"{first.get('torch', '?')}, Python {first.get('python', '?')}"),
    ]
    reasons = sorted({(r.get("precision") or {}).get("reason") for r in runs.values()} - {None})
    if reasons:
        facts.append(("precision", "; ".join(reasons)))
    h = "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                            for k, v in facts) + "</table>"
    m = "\n".join(f"- **{k}**: {v}" for k, v in facts) + "\n\n"
    rows = [{"name": st, "wall_s": r.get("wall_s"), "peak_rss_mb": r.get("peak_rss_mb"),
             "precision": (r.get("precision") or {}).get("precision", "")} for st, r in runs.items()]
    if rows:
        rows.append({"name": "total", "wall_s": sum(r["wall_s"] or 0 for r in rows),
                     "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in rows), "precision": ""})
        th, tm = table(rows, [("wall_s", "wall time (s)"), ("peak_rss_mb", "peak memory (MB)"),
                              ("precision", "precision")], first=("name", "stage"))
        h += "<p>Wall time and peak resident memory per stage (this run):</p>" + th
        m += "Wall time and peak resident memory per stage (this run):\n\n" + tm
    pre = timings(root, "pretrain")
    dis = timings(root, "distill")
    distilled = (_read_json(root / "metrics/distill.json") or {}).get("enabled", True)
    secs = timings(root, "ood-sampling").get("seconds") or {}
    trow = [{"name": "this run",
             "pre": pre.get("seconds_per_epoch"),
             "dis": dis.get("seconds_per_epoch") if distilled else None,
             "clu": pre.get("ood_update_clustering_s", secs.get("clustering")),
             "tail": pre.get("ood_update_tailness_s", secs.get("tailness")),
             "samp": pre.get("ood_update_sampling_s", secs.get("sampling")),
             "upd": pre.get("ood_update_total_s", secs.get("total"))}]
    cols = [("pre", "s / pre-training epoch"), ("dis", "s / distillation epoch"), ("clu", "clustering (s)"),
            ("tail", "tailness (s)"), ("samp", "sampling (s)"), ("upd", "OOD update total (s)")]
    th, tm = table(trow, cols, first=("name", "paper 003 Tables 13-15"))
    h += ("<p>Time table in the form of paper 003 Tables 13-15 (their CIFAR-10-LT run on two GPUs: 4.32 s per "
          "pre-training epoch, 2.32 s per distillation epoch, 9.65 s per OOD update with a 300K pool). The OOD "
          "columns are the mean over this run's updates and are explained in the OOD sampling section.</p>" + th)
    m += "\nTime table in the form of paper 003 Tables 13-15 (paper, CIFAR-10-LT on 2 GPUs: 4.32 s / 2.32 s / 9.65 s):\n\n" + tm
    return h, m


def external_encoders(root: Path) -> tuple[str, ...]:
    """``ext-<name>`` of every imported encoder whose probe ran (``metrics/probe/ext-<name>.json``)."""
    return tuple(sorted(p.stem for p in (root / "metrics/probe").glob("ext-*.json") if not is_details(p)))


def short_name(encoder: str) -> str:
    """f, g, or an external encoder's name: how the reference line names an encoder."""
    return ENCODER_SHORT.get(encoder, encoder[4:] if encoder.startswith("ext-") else encoder)


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def reference_line(values: dict[str, object], refs: dict[str, object], what: str) -> str:
    """One sentence: how far each encoder (``values``: encoder -> accuracy) is above each reference
    row (``refs``: ref-pixels / ref-random -> accuracy) on ``what``; an encoder below a reference is
    said to be below it, in words. "" when there is nothing to compare."""
    refs = {r: _number(v) for r, v in refs.items() if _number(v) is not None}
    parts, below = [], {r: [] for r in refs}
    for enc, v in values.items():
        v = _number(v)
        if v is None or not refs:
            continue
        cmp = []
        for r, ref in refs.items():
            d = v - ref
            if d > 0:
                cmp.append(f"+{d:.2f} over {REFERENCE_SHORT[r]}")
            elif d == 0:
                cmp.append(f"level with {REFERENCE_SHORT[r]}")
            else:
                cmp.append(f"{-d:.2f} below {REFERENCE_SHORT[r]}")
                below[r].append(short_name(enc))
        parts.append(f"{short_name(enc)}: " + ", ".join(cmp))
    if not parts:
        return ""
    line = "; ".join(parts) + f" ({what})."
    if below.get("ref-pixels"):
        line += (f" {' and '.join(below['ref-pixels'])} below raw pixels: the same evaluation on the pixels "
                 "themselves does better than on the encoder's features.")
    if below.get("ref-random"):
        line += f" {' and '.join(below['ref-random'])} below a randomly initialised encoder: training did not help."
    return line


def _line_html(line: str) -> str:
    return f"<p><b>Against the references:</b> {html.escape(line)}</p>" if line else ""


def _line_md(line: str) -> str:
    return f"**Against the references:** {line}\n\n" if line else ""


def _reason_html(reason: str) -> str:
    return f"<p class='note'>{html.escape(reason)}</p>"


def dataset_group_note(manifest: dict) -> str:
    """The Dataset section's sentence on labels and groups: where the labels come from, and where the
    Many / Medium / Few groups come from (the manifest's ``group_source``) or that they are absent."""
    if not manifest:
        return ""
    facts = label_facts(manifest)
    parts = [f"Labels: {facts.note}."] if facts.note else []
    if not facts.train and not facts.note:
        parts.append("The training images carry no labels (an unlabeled collection).")
    if not facts.eval:
        parts.append("Without a labeled evaluation set no accuracy is measured and no Many / Medium / Few groups "
                     "exist; the sections below show what needs no labels.")
    elif facts.has_groups:
        rule = manifest.get("group_rule")
        parts.append(f"Many / Medium / Few groups come from the class counts of the {facts.group_source}"
                     + (f" (data.group_rule: {rule})." if rule else "."))
    else:
        parts.append("Many / Medium / Few groups are absent: no class counts define them, so accuracies are "
                     "reported over all classes (All) and per class only.")
    sub = manifest.get("subsampling")
    if sub:  # what a long-tailed draw left out of pre-training, said where the data set is described
        parts.append(f"Pre-training uses {sub['kept']} of the source's {sub['source_images']} training images "
                     f"({sub['held_out']} held out for val; {sub['unused']} left out of pre-training and used only "
                     f"by the full probe). Why: {sub['reason']}.")
    skipped = manifest.get("skipped_images") or []
    if skipped:
        parts.append(f"{len(skipped)} unreadable image file(s) were skipped (data.on_bad_image: skip), first: "
                     f"{', '.join(skipped[:3])}; all are listed in data/lt/manifest.json.")
    return " ".join(parts)


def ood_label_absence(ood: dict, manifest: dict) -> str | None:
    """Why the OOD diagnostics that need labels are absent (None: they are real): what the
    ood-sampling metrics say, or the split manifest when it says the training labels are not real
    (``labels.train``, docs/data-manifest.md): no number computed from placeholder labels is printed."""
    absent = (ood.get("diagnostics") or {}).get("absent")
    if absent is None and not (manifest.get("labels") or {"train": True})["train"]:
        absent = "the training images have no labels (labels.train is false in the split manifest)"
    return absent


def ood_update_pictures(rec: dict, where: str) -> tuple[str, str]:
    """The tailness histogram and the thumbnail grid of one OOD update's record
    (:mod:`ltcl.sampling.update_pictures`): no labels needed."""
    strategy = str(rec["strategy"])
    entry = STRATEGIES[strategy]
    h, m = "", ""
    if "tailness_counts" in rec:
        kind = entry.tailness
        n = int(np.asarray(rec["tailness_counts"]).sum())
        hist = img(plots.tailness_histogram(rec["tailness_edges"], rec["tailness_counts"], rec["tailness_groups"],
                                            f"Tailness of the {n} ID images ({kind}), {where}"),
                   f"tailness histogram, {where}")
        h, m = h + hist[0], m + hist[1] + "\n\n"
    if "extra_thumbs" not in rec:
        return h, m
    clustered = "id_thumbs" in rec
    if clustered:
        labels = [f"c{k}: {int(rec['cluster_sizes'][k])} ID, tailness {float(rec['cluster_tailness'][k]):.3f}, "
                  f"budget {int(rec['budgets'][k])}" for k in rec["cluster_ids"]]
        caption = (f"{where}: one row per cluster of the ID images in the {rec['space']} embedding the sampler "
                   f"clusters in (cluster id, ID images in it, cluster tailness, OOD budget). Left: the "
                   f"{rec['id_thumbs'].shape[1]} images of the cluster nearest its centre; right: the "
                   f"{entry.picks}.")
    else:
        width = rec["extra_thumbs"].shape[1]
        labels = [f"draw {r * width + 1}-{(r + 1) * width}" for r in range(len(rec["cluster_ids"]))]
        caption = (f"{where}: strategy {strategy} gives no per-cluster budgets; shown are the "
                   f"{entry.picks}.")
    grid = img(plots.thumbnail_grid(rec.get("id_thumbs"), rec.get("id_rows"), rec["extra_thumbs"], rec["extra_rows"],
                                    labels, "ID images nearest the centre", entry.picks,
                                    f"Thumbnail grid, {where}"), f"thumbnail grid, {where}")
    return (h + f"<p class='note'>{html.escape(caption)}</p>" + grid[0],
            m + caption + "\n\n" + grid[1] + "\n\n")


def ood_pictures(root: Path) -> tuple[str, str]:
    """The pictures of the first OOD update (``data/ood/diagnostics.npz``, ood-sampling) and of
    pretrain's later ones (``data/ood/pretrain_diagnostics.npz``: every update's when it kept
    them all, else the first and the last, and the page says so)."""
    from ltcl.sampling.update_file import load_updates

    h, m = "", ""
    first = root / "data/ood/diagnostics.npz"
    for rec in load_updates(first) if first.exists() else []:
        ph, pm = ood_update_pictures(rec, f"first update (ood-sampling, epoch {rec['epoch']})")
        h, m = h + ph, m + pm
    later_path = root / "data/ood/pretrain_diagnostics.npz"
    later = load_updates(later_path) if later_path.exists() else []
    if later:
        shown = [r for r in later if "extra_thumbs" in r]
        epochs = ", ".join(str(r["epoch"]) for r in later)
        note = (f"pretrain re-sampled {len(later)} times (at the start of epochs {epochs}); "
                + ("the pictures of each update follow." if len(shown) == len(later) else
                   "the pictures of the first and the last of them follow (the file keeps the others' "
                   "histogram and cluster numbers only)."))
        h, m = h + f"<p>{html.escape(note)}</p>", m + note + "\n\n"
        for rec in shown:
            ph, pm = ood_update_pictures(rec, f"update at epoch {rec['epoch']} (pretrain)")
            h, m = h + ph, m + pm
    return h, m


def ood_section(root: Path, manifest: dict) -> tuple[str, str] | None:
    """OOD sampling (paper 003 Sec. 3.1.1): the first selection, its clusters and budgets; with
    real training labels how tailness tracks rarity, without them why that is absent; the
    pictures of the updates (:func:`ood_pictures`); seconds per update."""
    ood = _read_details(root, "metrics/ood.json")
    if not ood or ood.get("strategy", "none") == "none":
        return None
    names = manifest.get("class_names") or []
    counts = manifest.get("lt_counts") or []
    n_id = sum(counts) if counts else sum(ood.get("cluster_sizes") or [])
    h = (f"<p>Strategy <b>{html.escape(ood['strategy'])}</b>: {ood.get('selected', 0)} images added "
         + (f"to the {n_id} ID images " if n_id else "") + "at the first sampling.</p>")
    m = f"Strategy **{ood['strategy']}**: {ood.get('selected', 0)} images added at the first sampling.\n\n"
    diag = ood.get("diagnostics") or {}
    absent = ood_label_absence(ood, manifest)
    if "budgets" in ood and absent is not None:
        rows = [{"name": f"c{k}", "budget": b, "size": ood["cluster_sizes"][k], "tailness": ood["cluster_tailness"][k]}
                for k, b in enumerate(ood["budgets"])]
        th, tm = table(rows, [("budget", "OOD budget"), ("size", "ID images"), ("tailness", "tailness")],
                       first=("name", "cluster"))
        bb = img(plots.budget_bars(ood["budgets"], ood["cluster_tailness"]), "OOD budget per cluster")
        note = ("The diagnostics that need labels (how tailness tracks class rarity, the budget by Many / Medium / "
                f"Few group, each cluster's majority class and purity) are absent: {absent}.")
        h += f"<p class='note'>{html.escape(note)}</p>" + th + bb[0]
        m += note + "\n\n" + tm + "\n" + bb[1]
    elif "budgets" in ood:
        rows = [{"name": f"c{k}", "budget": b, "size": ood["cluster_sizes"][k],
                 "tailness": ood["cluster_tailness"][k],
                 "majority": names[diag["cluster_majority_class"][k]] if diag.get("cluster_majority_class")
                 and diag["cluster_majority_class"][k] >= 0 else "-",
                 "group": (diag.get("cluster_majority_group") or ["-"] * len(ood["budgets"]))[k],
                 "purity": (diag.get("cluster_purity") or [None] * len(ood["budgets"]))[k]}
                for k, b in enumerate(ood["budgets"])]
        th, tm = table(rows, [("budget", "OOD budget"), ("size", "ID images"), ("tailness", "tailness"),
                              ("majority", "majority class"), ("group", "its group"), ("purity", "purity")],
                       first=("name", "cluster"))
        bb = img(plots.budget_bars(ood["budgets"], ood["cluster_tailness"],
                                   [rows[k]["majority"] for k in range(len(rows))],
                                   [rows[k]["group"] for k in range(len(rows))]), "OOD budget per cluster")
        verdict = ("tracks rarity" if diag.get("spearman_rarity", 0) > 0.1 else
                   "does NOT track rarity: budgets follow dense (head) regions")
        dh = (f"<p>Diagnostics (uses the labels, which the method never sees): Spearman correlation of "
              f"sample tailness with true class rarity <b>{fmt(diag.get('spearman_rarity'), 3)}</b> "
              f"(tailness {verdict}); share of the budget given to clusters whose majority class is Few: "
              f"<b>{fmt(100 * diag.get('few_budget_share', float('nan')))} %</b>; "
              f"cluster purity {fmt(diag.get('overall_purity'), 3)}.</p>")
        dm = (f"Spearman(tailness, rarity) = {fmt(diag.get('spearman_rarity'), 3)} ({verdict}); "
              f"budget share of Few-majority clusters = {fmt(100 * diag.get('few_budget_share', float('nan')))} %.\n\n")
        h += dh + th + bb[0]
        m += dm + tm + "\n" + bb[1]
    scores = ood.get("pool_scores") or {}
    if ood["strategy"] == "mak" and scores:  # MAK's label-free account of its scores
        line = (f"MAK kept the {scores['core']} pool images of highest score (standardised ECLE minus standardised "
                f"distance, weighted by ood.mak.loss_weight) and picked {ood.get('selected', 0)} of them by K-center. "
                "Mean ECLE (its tailness): "
                f"{fmt(scores['ecle_selected_mean'], 3)} selected vs {fmt(scores['ecle_pool_mean'], 3)} over the "
                f"pool; mean distance to the nearest k-means centre of the ID features: "
                f"{fmt(scores['distance_selected_mean'], 3)} vs {fmt(scores['distance_pool_mean'], 3)}. pretrain "
                "then trained a new encoder on the ID images and these.")
        h += f"<p>{html.escape(line)}</p>"
        m += line + "\n\n"
    ph, pm = ood_pictures(root)
    h, m = h + ph, m + "\n" + pm
    secs = timings(root, "ood-sampling").get("seconds") or {}
    pre = timings(root, "pretrain")
    trow = [{"name": "first update (ood-sampling)", **secs}]
    n_updates = len(pre.get("ood_update_history") or [])
    if n_updates:
        trow.append({"name": f"mean of {n_updates} updates in pretrain",
                     **{k: pre.get(f"ood_update_{k}_s") for k in secs}})
    keys = [k for k in UPDATE_STEPS if k in secs]
    th, tm = table(trow, [(k, k + " (s)") for k in keys], first=("name", "OOD update"))
    return (h + "<p>Seconds per update (paper 003 Table 15):</p>" + th,
            m + "Seconds per update (paper 003 Table 15):\n\n" + tm)


def build_report(root: str | Path = ".", *, title: str, encoders=("pretrain", "distill"),
                 params: dict | None = None) -> Report:
    """The report of the run in ``root``; ``params`` (the params its stages read, nested as in
    params.yaml: ``ltcl.params.stage_view`` of ``STAGE_PARAMS["report"]``) give the seeds of the run
    card and the Parameters section."""
    root = Path(root)
    encoders = tuple(encoders) + tuple(e for e in external_encoders(root) if e not in encoders)
    rep = Report(title)
    labels = encoder_labels(root, encoders)
    manifest = _read_json(root / "data/lt/manifest.json") or {}
    names = manifest.get("class_names") or []
    counts = manifest.get("lt_counts") or []
    groups = manifest.get("groups") or []
    dataset = _read_json(root / "metrics/dataset.json") or {}

    # ---- summary
    probe = {e: _read_details(root, f"metrics/probe/{e}.json") for e in encoders}
    probe = {e: m for e, m in probe.items() if m}
    # without a labeled evaluation set the probe metrics say why accuracy is absent (no numbers)
    absent = {e: m for e, m in probe.items() if m.get("labels") == "absent"}
    probe = {e: m for e, m in probe.items() if e not in absent}
    refs = {r: _read_details(root, f"metrics/probe/{r}.json") for r in REFERENCE_LABELS}
    refs = {r: m for r, m in refs.items() if m and m.get("labels") != "absent"}
    per_class = {e: pd.read_csv(root / f"metrics/probe/{e}_per_class.csv") for e in probe
                 if (root / f"metrics/probe/{e}_per_class.csv").exists()}
    summary_rows = [{"name": k, "value": v} for k, v in dataset.items() if not isinstance(v, (dict, list))]
    h, m = table(summary_rows, [("value", "value")], first=("name", "dataset"))
    note = dataset_group_note(manifest)
    if note:
        h, m = f"<p>{html.escape(note)}</p>" + h, note + "\n\n" + m
    cc = (img(plots.class_counts(counts, names, groups or [""] * len(counts)), "class counts") if counts
          else ("", ""))
    rep.add("Dataset", h + cc[0], m + "\n" + cc[1])

    # ---- run card
    card = run_card(root, params)
    if card:
        rep.add("Run card", *card)

    # ---- results per protocol, each table with the two reference rows (raw pixels, random init)
    if absent and not probe:
        reason = next(iter(absent.values())).get("reason", "")
        for sec in ("Linear probe", "kNN accuracy"):
            rep.add(sec, _reason_html(reason), reason)
    skipped = {}
    for mtr in list(probe.values()) + list(refs.values()):
        skipped.update(mtr.get("skipped") or {})
    protocols = []
    for proto in PROTOCOL_LABELS:
        if any(proto in mtr for mtr in probe.values()):
            protocols.append(proto)
        elif proto in skipped:
            rep.add(PROTOCOL_LABELS[proto], _reason_html(f"Not run: {skipped[proto]}."),
                    f"Not run: {skipped[proto]}.")
    has_counts = any(df["train_count"].notna().any() for df in per_class.values() if "train_count" in df)
    for proto in protocols:
        rows = [{"name": labels[e], **mtr[proto]} for e, mtr in probe.items() if proto in mtr]
        if proto == "full":  # a method's own classifier (GML), on the same test set
            for e in encoders:
                clf = (_read_json(root / f"metrics/{e}.json") or {}).get("classifier")
                if clf:
                    rows.append({"name": f"{labels[e]}, own classifier", **clf})
        ref_rows = [{"name": REFERENCE_LABELS[r], **mtr[proto]} for r, mtr in refs.items() if proto in mtr]
        grouped = any(k in r for r in rows + ref_rows for k in ("many", "medium", "few", "std"))
        h, m = table(rows + ref_rows, GROUP_COLUMNS if grouped else [("all", "All")],
                     best={"many": "max", "medium": "max", "few": "max", "std": "min", "all": "max"},
                     first=("name", "encoder"))
        line = reference_line({e: mtr[proto].get("all") for e, mtr in probe.items() if proto in mtr},
                              {r: mtr[proto].get("all") for r, mtr in refs.items() if proto in mtr},
                              f"{PROTOCOL_LABELS[proto]}, All")
        h, m = h + _line_html(line), m + "\n" + _line_md(line)
        # a null group accuracy (an empty group) is a gap in the bars
        plot_rows = [{k: np.nan if v is None else v for k, v in r.items()} for r in rows + ref_rows]
        bars = img(plots.group_bars(plot_rows, PROTOCOL_LABELS[proto]), f"{proto} group accuracy") \
            if grouped else ("", "")
        if has_counts:
            pcb = img(plots.per_class_bars(per_class, proto, names), f"{proto} per-class accuracy")
            pvc = img(plots.per_class_vs_count(per_class, proto), f"{proto} per-class accuracy vs count")
        else:  # no training counts (an unlabeled collection): classes in their order, no count axis
            pcb = img(plots.per_class_bars_by_class(per_class, proto, names), f"{proto} per-class accuracy")
            pvc = ("", "")
        note = ("One run cannot separate what rarity costs a class from how hard the class is: the seed decides "
                "which classes are rare. Run at least 3 seeds with permuted class orders and read the rarity "
                "penalty in `ltcl compare` (docs/comparing.md: The rarity penalty).") if pvc[0] else ""
        rep.add(PROTOCOL_LABELS[proto], h + bars[0] + pcb[0] + pvc[0] + (f"<p class='note'>{html.escape(note)}</p>"
                                                                         if note else ""),
                m + "\n" + bars[1] + "\n" + pcb[1] + "\n" + pvc[1] + ("\n\n" + note if note else ""))
    if probe:
        rows = [{"name": labels[e], **mtr.get("knn", {})} for e, mtr in probe.items()]
        rows += [{"name": REFERENCE_LABELS[r], **mtr.get("knn", {})} for r, mtr in refs.items()]
        keys = sorted({k for r in rows for k in r if k != "name"}, key=lambda k: (len(k), k))
        h, m = table(rows, [(k, k.replace("k", "kNN@", 1)) for k in keys], best={k: "max" for k in keys},
                     first=("name", "encoder"))
        for k in (k for k in keys if not k.endswith("_few")):
            line = reference_line({e: mtr.get("knn", {}).get(k) for e, mtr in probe.items()},
                                  {r: mtr.get("knn", {}).get(k) for r, mtr in refs.items()},
                                  f"kNN@{k[1:]}, All")
            h, m = h + _line_html(line), m + "\n" + _line_md(line)
        rep.add("kNN accuracy", h, m)

    # ---- OOD sampling (paper 003 Sec. 3.1.1)
    section = ood_section(root, manifest)
    if section:
        rep.add("OOD sampling", *section)

    # ---- cluster quality (paper 003 Table 4, Fig. 3; paper 001 Sec. 4) and the label-free cluster sizes
    clusters = {e: _read_details(root, f"metrics/cluster/{e}.json") for e in encoders}
    clusters = {e: c for e, c in clusters.items() if c}
    if clusters:
        labeled = {e: c for e, c in clusters.items() if c.get("labels") != "absent"}
        h, m = "", ""
        if labeled:
            rows = [{"name": labels[e], **{k: v for k, v in c.items() if k != "geometry"}}
                    for e, c in labeled.items()]
            h, m = table(rows, [("chi", "CHI"), ("dbi", "DBI"), ("nmi", "NMI"), ("ari", "ARI")],
                         best={"chi": "max", "dbi": "min", "nmi": "max", "ari": "max"}, first=("name", "encoder"))
            h += "<p>CHI higher and DBI lower are better (true labels of the test split).</p>"
            geo_keys = sorted({k for c in labeled.values() for k in c.get("geometry", {})})
            if geo_keys:
                grows = [{"name": labels[e], **c.get("geometry", {})} for e, c in labeled.items()]
                gh, gm = table(grows, [(k, k) for k in geo_keys], first=("name", "encoder"))
                h += "<p>Class geometry (paper 001 Sec. 4) on L2-normalised test features:</p>" + gh
                m += "\nClass geometry (paper 001 Sec. 4):\n\n" + gm
        for c in clusters.values():
            if c.get("labels") == "absent":
                h, m = h + _reason_html(c["reason"]), m + "\n" + c["reason"] + "\n\n"
                break
        sizes = {e: c["cluster_sizes"] for e, c in clusters.items() if c.get("cluster_sizes")}
        if sizes:  # a sentence per encoder (the section's tables are the label metrics')
            lines = [f"{labels[e]}: largest / smallest cluster {fmt(c.get('largest_smallest_ratio'))} (sizes "
                     f"{', '.join(str(v) for v in c['sizes'])}; {c['k']} clusters of "
                     + (f"all {c['of']}" if c["images"] == c["of"] else f"a sample of {c['images']} of the {c['of']}")
                     + " training images)" for e, c in sizes.items()]
            text = ("The tail the model sees (needs no labels): a k-means (cluster.clusters) of each encoder's "
                    "features of the training images, its clusters sorted by size.")
            pic = img(plots.cluster_size_bars({labels[e]: c["sizes"] for e, c in sizes.items()}), "cluster sizes")
            h += (f"<p>{html.escape(text)}</p><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"
                  + pic[0])
            m += "\n" + text + "\n\n" + "".join(f"- {x}\n" for x in lines) + "\n" + pic[1] + "\n"
        pics_h, pics_m = "", ""
        for e in clusters:
            p = root / f"metrics/cluster/{e}_tsne.csv"
            if p.exists():
                df = pd.read_csv(p)
                if "group" in df:
                    gmap = {int(l): g for l, g in zip(df["label"], df["group"])}
                    groups_of_class = [gmap.get(c, groups[c] if c < len(groups) else "") for c in range(len(names))]
                    uri = plots.tsne_scatter(df[["x", "y"]].to_numpy(), df["label"].to_numpy(), groups_of_class,
                                             names, f"t-SNE of test features, {labels[e]}")
                elif "label" in df:
                    uri = plots.tsne_points(df[["x", "y"]].to_numpy(), df["label"].to_numpy(), names,
                                            f"t-SNE of test features, {labels[e]}")
                else:  # no labels: the training images, coloured by their k-means cluster
                    uri = plots.tsne_points(df[["x", "y"]].to_numpy(),
                                            df["cluster"].to_numpy() if "cluster" in df else None, None,
                                            f"t-SNE of training features (no labels), {labels[e]}")
                pic = img(uri, f"t-SNE {e}")
                pics_h += pic[0]
                pics_m += pic[1] + "\n"
        marker_note = "<p>Markers: o Many, s Medium, ^ Few.</p>" if any(
            "group" in pd.read_csv(root / f"metrics/cluster/{e}_tsne.csv", nrows=0)
            for e in clusters if (root / f"metrics/cluster/{e}_tsne.csv").exists()) else ""
        rep.add("Cluster quality", h + marker_note + pics_h, m + "\n" + pics_m)

    # ---- training
    stage_metrics = {s: _read_json(root / f"metrics/{s}.json") for s in ("pretrain", "distill")}
    stage_metrics = {s: mt for s, mt in stage_metrics.items() if mt and mt.get("enabled", True)}
    rows = [{"name": s, **{k: v for k, v in {**mt, **timings(root, s)}.items() if isinstance(v, (int, float))}}
            for s, mt in stage_metrics.items() if mt]
    if rows:
        keys = ["epochs", "steps", "final_loss", "seconds", "seconds_per_epoch", "images_per_s"]
        h, m = table(rows, [(k, k) for k in keys], first=("name", "stage"))
        # loss, lr and the loss terms from dvclive's curves; images/s per epoch from the run records
        sessions = {"ood-warmup": timings(root, "ood-sampling").get("warmup") or {},
                    "pretrain": timings(root, "pretrain"), "distill": timings(root, "distill")}
        curves = {s: {**plots.read_live_curves(root / "dvclive" / s),
                      **plots.throughput_curve(t.get("per_epoch") or [])} for s, t in sessions.items()}
        c = img(plots.training_curves(curves), "training curves")
        rep.add("Training", h + c[0], m + "\n" + c[1])

    # ---- params
    if params:
        import yaml

        text = yaml.safe_dump(params, sort_keys=False)
        rep.add("Parameters", "<p>The params this run's stages read (other methods' keys left out):</p>"
                f"<pre>{html.escape(text)}</pre>",
                f"The params this run's stages read (other methods' keys left out):\n\n```yaml\n{text}```")
    return rep


_DATA_URI = re.compile(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def write_report(out_dir: str | Path, report: Report) -> None:
    """index.html with inline images; report.md with the same images as figures/*.png."""
    from ltcl.io import atomic_write

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "index.html", "w") as fh:
        fh.write(report.to_html())
    counter = iter(range(1, 10_000))

    def _to_file(match: re.Match) -> str:
        name = f"figures/fig{next(counter):02d}.png"
        with atomic_write(out / name, "wb") as fh:
            fh.write(base64.b64decode(match.group(1)))
        return f"({name})"

    md = _DATA_URI.sub(_to_file, report.to_markdown())
    with atomic_write(out / "report.md", "w") as fh:
        fh.write(md)

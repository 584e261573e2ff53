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

from ltcl.report import plots

ENCODER_LABELS = {"pretrain": "f (pre-trained)", "distill": "g (distilled)"}
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


STAGE_METRICS = {"make-lt-dataset": "dataset", "ood-sampling": "ood", "pretrain": "pretrain", "distill": "distill",
                 "linear-probe@pretrain": "probe/pretrain", "linear-probe@distill": "probe/distill",
                 "cluster@pretrain": "cluster/pretrain", "cluster@distill": "cluster/distill"}


def split_fact(ds: dict, manifest: dict) -> str:
    """Where the split came from: generated from a seed, or the community's list files, each
    named with its sha256 (comparable with the published tables only on the same files)."""
    name = ds.get("split_name") or manifest.get("split") or "generated"
    if name == "generated":
        return "generated by ltcl from data.split_seed (not the papers' split files)"
    files = manifest.get("split_files") or {}
    listed = "; ".join(f"{role}: {r.get('file')} sha256 {r.get('sha256')}" for role, r in files.items())
    return f"{name} (community lists): {listed}"


def run_card(root: Path) -> tuple[str, str] | None:
    """Dataset, split sizes, seeds, machine, wall time and peak memory per stage, and the time
    table of paper 003 (Tables 13-15) measured on this run."""
    runs = {st: (_read_json(root / f"metrics/{f}.json") or {}).get("run") for st, f in STAGE_METRICS.items()}
    runs = {st: r for st, r in runs.items() if r}
    ds = _read_json(root / "metrics/dataset.json") or {}
    if not runs and not ds:
        return None
    params = {}
    if (root / "params.yaml").exists():
        import yaml

        params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    first = next(iter(runs.values()), {})
    seeds = {f"{sec}.seed": (params.get(sec) or {}).get("seed") for sec in ("pretrain", "ood", "distill", "probe")}
    seeds["data.split_seed"] = (params.get("data") or {}).get("split_seed")
    facts = [
        ("dataset", f"{ds.get('source', '?')} ({ds.get('image_shape', '?')}), imbalance ratio "
                    f"{ds.get('imbalance_ratio', '?')}, {ds.get('subset', '')}"),
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
    pre = _read_json(root / "metrics/pretrain.json") or {}
    dis = _read_json(root / "metrics/distill.json") or {}
    ood = _read_json(root / "metrics/ood.json") or {}
    secs = ood.get("seconds") or {}
    trow = [{"name": "this run",
             "pre": pre.get("seconds_per_epoch"),
             "dis": dis.get("seconds_per_epoch") if dis.get("enabled", True) else None,
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
    return tuple(sorted(p.stem for p in (root / "metrics/probe").glob("ext-*.json")))


def build_report(root: str | Path = ".", title: str = "ltcl report", encoders=("pretrain", "distill")) -> Report:
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
    probe = {e: _read_json(root / f"metrics/probe/{e}.json") for e in encoders}
    probe = {e: m for e, m in probe.items() if m}
    per_class = {e: pd.read_csv(root / f"metrics/probe/{e}_per_class.csv") for e in probe
                 if (root / f"metrics/probe/{e}_per_class.csv").exists()}
    summary_rows = [{"name": k, "value": v} for k, v in dataset.items() if not isinstance(v, (dict, list))]
    h, m = table(summary_rows, [("value", "value")], first=("name", "dataset"))
    cc = img(plots.class_counts(counts, names, groups), "class counts") if counts else ("", "")
    rep.add("Dataset", h + cc[0], m + "\n" + cc[1])

    # ---- run card
    card = run_card(root)
    if card:
        rep.add("Run card", *card)

    # ---- results per protocol
    protocols = []
    for proto in PROTOCOL_LABELS:
        if any(proto in mtr for mtr in probe.values()):
            protocols.append(proto)
    for proto in protocols:
        rows = [{"name": labels[e], **mtr[proto]} for e, mtr in probe.items() if proto in mtr]
        if proto == "full":  # a method's own classifier (GML), on the same test set
            for e in encoders:
                clf = (_read_json(root / f"metrics/{e}.json") or {}).get("classifier")
                if clf:
                    rows.append({"name": f"{labels[e]}, own classifier", **clf})
        h, m = table(rows, GROUP_COLUMNS, best={"many": "max", "medium": "max", "few": "max",
                                                 "std": "min", "all": "max"}, first=("name", "encoder"))
        bars = img(plots.group_bars(rows, PROTOCOL_LABELS[proto]), f"{proto} group accuracy")
        pcb = img(plots.per_class_bars(per_class, proto, names), f"{proto} per-class accuracy")
        pvc = img(plots.per_class_vs_count(per_class, proto), f"{proto} per-class accuracy vs count")
        note = ("One run cannot separate what rarity costs a class from how hard the class is: the seed decides "
                "which classes are rare. Run at least 3 seeds with permuted class orders and read the rarity "
                "penalty in `ltcl compare` (README: The rarity penalty).") if pvc[0] else ""
        rep.add(PROTOCOL_LABELS[proto], h + bars[0] + pcb[0] + pvc[0] + (f"<p class='note'>{html.escape(note)}</p>"
                                                                         if note else ""),
                m + "\n" + bars[1] + "\n" + pcb[1] + "\n" + pvc[1] + ("\n\n" + note if note else ""))
    if probe:
        rows = [{"name": labels[e], **mtr.get("knn", {})} for e, mtr in probe.items()]
        keys = sorted({k for r in rows for k in r if k != "name"}, key=lambda k: (len(k), k))
        h, m = table(rows, [(k, k.replace("k", "kNN@", 1)) for k in keys], best={k: "max" for k in keys},
                     first=("name", "encoder"))
        rep.add("kNN accuracy", h, m)

    # ---- OOD sampling (paper 003 Sec. 3.1.1)
    ood = _read_json(root / "metrics/ood.json")
    if ood and ood.get("strategy", "none") != "none":
        h = (f"<p>Strategy <b>{html.escape(ood['strategy'])}</b>: {ood.get('selected', 0)} images added "
             f"to the {len(counts) and sum(counts)} ID images at the first sampling.</p>")
        m = f"Strategy **{ood['strategy']}**: {ood.get('selected', 0)} images added at the first sampling.\n\n"
        diag = ood.get("diagnostics") or {}
        if "budgets" in ood:
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
        secs = ood.get("seconds", {})
        pre = _read_json(root / "metrics/pretrain.json") or {}
        trow = [{"name": "first update (ood-sampling)", **secs}]
        if pre.get("ood_updates"):
            trow.append({"name": f"mean of {pre['ood_updates']} updates in pretrain",
                         **{k: pre.get(f"ood_update_{k}_s") for k in secs}})
        keys = [k for k in ("embedding", "clustering", "tailness", "budget", "sampling", "total") if k in secs]
        th, tm = table(trow, [(k, k + " (s)") for k in keys], first=("name", "OOD update"))
        rep.add("OOD sampling", h + "<p>Seconds per update (paper 003 Table 15):</p>" + th,
                m + "Seconds per update (paper 003 Table 15):\n\n" + tm)

    # ---- cluster quality (paper 003 Table 4, Fig. 3; paper 001 Sec. 4)
    clusters = {e: _read_json(root / f"metrics/cluster/{e}.json") for e in encoders}
    clusters = {e: c for e, c in clusters.items() if c}
    if clusters:
        rows = [{"name": labels[e], **{k: v for k, v in c.items() if k != "geometry"}}
                for e, c in clusters.items()]
        h, m = table(rows, [("chi", "CHI"), ("dbi", "DBI"), ("nmi", "NMI"), ("ari", "ARI")],
                     best={"chi": "max", "dbi": "min", "nmi": "max", "ari": "max"}, first=("name", "encoder"))
        geo_keys = sorted({k for c in clusters.values() for k in c.get("geometry", {})})
        if geo_keys:
            grows = [{"name": labels[e], **c.get("geometry", {})} for e, c in clusters.items()]
            gh, gm = table(grows, [(k, k) for k in geo_keys], first=("name", "encoder"))
            h += "<p>Class geometry (paper 001 Sec. 4) on L2-normalised test features:</p>" + gh
            m += "\nClass geometry (paper 001 Sec. 4):\n\n" + gm
        pics_h, pics_m = "", ""
        for e in clusters:
            p = root / f"metrics/cluster/{e}_tsne.csv"
            if p.exists():
                df = pd.read_csv(p)
                gmap = {int(l): g for l, g in zip(df["label"], df["group"])}
                groups_of_class = [gmap.get(c, groups[c] if c < len(groups) else "") for c in range(len(names))]
                pic = img(plots.tsne_scatter(df[["x", "y"]].to_numpy(), df["label"].to_numpy(), groups_of_class,
                                             names, f"t-SNE of test features, {labels[e]}"),
                          f"t-SNE {e}")
                pics_h += pic[0]
                pics_m += pic[1] + "\n"
        rep.add("Cluster quality", h + "<p>CHI higher and DBI lower are better (true labels). "
                "Markers: o Many, s Medium, ^ Few.</p>" + pics_h, m + "\n" + pics_m)

    # ---- training
    stage_metrics = {s: _read_json(root / f"metrics/{s}.json") for s in ("pretrain", "distill")}
    stage_metrics = {s: mt for s, mt in stage_metrics.items() if mt and mt.get("enabled", True)}
    rows = [{"name": s, **{k: v for k, v in mt.items() if isinstance(v, (int, float))}}
            for s, mt in stage_metrics.items() if mt]
    if rows:
        keys = ["epochs", "steps", "final_loss", "seconds", "seconds_per_epoch", "images_per_s"]
        h, m = table(rows, [(k, k) for k in keys], first=("name", "stage"))
        curves = {s: plots.read_live_curves(root / "dvclive" / s) for s in ("ood-warmup", "pretrain", "distill")}
        c = img(plots.training_curves(curves), "training curves")
        rep.add("Training", h + c[0], m + "\n" + c[1])

    # ---- params
    params_path = root / "params.yaml"
    if params_path.exists():
        text = params_path.read_text()
        rep.add("Parameters", f"<pre>{html.escape(text)}</pre>", f"```yaml\n{text}```")
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

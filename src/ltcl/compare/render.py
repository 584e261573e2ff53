"""Render comparison tables: terminal text, Markdown, and one self-contained HTML page (inline
PNG charts, no CDN) with grouped Many/Med/Few bars per protocol and the published numbers."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from ltcl.compare.reference import SPLIT_LABELS
from ltcl.compare.table import COLUMNS, GROUP_COLS, Line

PROTOCOL_TITLES = {"full": "Linear probe, full", "few_shot": "Few-shot linear probe", "ms": "MS linear probe",
                   "lt": "LT linear probe", "one_percent": "1% linear probe"}


def cell(line: Line, key: str, marks: bool = True, bold=("**", "**")) -> str:
    if key not in line.mean:
        return "-"
    digits = 1 if key in ("chi", "minutes") else 2
    s = f"{line.mean[key]:.{digits}f}"
    if line.n.get(key, 1) > 1:
        s += f" ± {line.std[key]:.{digits}f}"
    if marks and key in line.best:
        s = f"{bold[0]}{s}{bold[1]}" + (" (n.s.)" if key in line.not_significant else "")
    return s


def html_cell(line: Line, key: str) -> str:
    text = html.escape(cell(line, key, marks=False))
    if key in line.best:
        return f"<b>{text}</b>" + (" (n.s.)" if key in line.not_significant else "")
    return text


def _name(line: Line) -> str:
    return line.label + (" *" if line.supervised else "")


def _runs(line: Line) -> str:
    return str(len(line.runs))


def pub_label(p: dict) -> str:
    """A published row's name: method, paper, table and the split it was measured on."""
    split = SPLIT_LABELS.get(p.get("split", ""), "")
    return f"{p['method']} (published, {p['paper']} T{p['table']}" + (f", {split})" if split else ")")


def notes(lines: list[Line], keys: list[str], pub_notes: list[str] | tuple = ()) -> list[str]:
    out = list(pub_notes)
    if any(l.supervised for l in lines):
        out.append("* supervised: uses the labels of the long-tailed split (not comparable as an equal).")
    if any(l.not_significant for l in lines):
        out.append("(n.s.): best mean, but another row lies within the combined spread sqrt(s1² + s2²): not a win.")
    if any(len(l.runs) == 1 for l in lines):
        out.append("Rows from a single run have no spread; repeat them over seeds before calling a difference.")
    if keys:
        out.append("Params that differ between rows (seeds excluded):")
        for l in lines:
            diff = ", ".join(f"{k}={l.params.get(k)}" for k in keys)
            out.append(f"  {_name(l)}: {diff}")
    return out


def text_table(lines: list[Line], title: str, keys: list[str], published: list[dict] | None = None,
               pub_notes: list[str] | tuple = ()) -> str:
    header = ["row", "runs"] + [h for _, h, _ in COLUMNS]
    body = [[_name(l), _runs(l)] + [cell(l, k, bold=("[", "]")) for k, _, _ in COLUMNS] for l in lines]
    for p in published or []:
        body.append([pub_label(p), "-"] + [_fmt(p.get(k)) for k, _, _ in GROUP_COLS]
                    + ["-"] * (len(COLUMNS) - len(GROUP_COLS)))
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    out = [title, fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]
    return "\n".join(out + ["[x] best mean per column"] + notes(lines, keys, pub_notes))


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if f != f else f"{f:.2f}"


def markdown_table(lines: list[Line], title: str, keys: list[str], published: list[dict] | None = None,
                   pub_notes: list[str] | tuple = ()) -> str:
    header = ["row", "runs"] + [h for _, h, _ in COLUMNS]
    out = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for l in lines:
        out.append("| " + " | ".join([_name(l), _runs(l)] + [cell(l, k) for k, _, _ in COLUMNS]) + " |")
    for p in published or []:
        out.append("| " + " | ".join([pub_label(p), "-"]
                                     + [_fmt(p.get(k)) for k, _, _ in GROUP_COLS]
                                     + ["-"] * (len(COLUMNS) - len(GROUP_COLS))) + " |")
    out.append("")
    out += [f"{n}  " for n in ["**bold**: best mean per column"] + notes(lines, keys, pub_notes)]
    return "\n".join(out) + "\n"


def group_bars_png(lines: list[Line], title: str) -> str:
    """Grouped bars Many / Med. / Few (+ All) per row with std error bars, as a data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [("many", "Many"), ("medium", "Med."), ("few", "Few"), ("all", "All")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys) + 0.5 * len(lines)), 3.6))
    width = 0.8 / max(len(lines), 1)
    x = np.arange(len(keys))
    from ltcl.report.plots import accuracy_ylim

    ends = []
    for i, l in enumerate(lines):
        m = [l.mean.get(k, np.nan) for k, _ in keys]
        s = [l.std.get(k, 0.0) for k, _ in keys]
        ends += [a - b for a, b in zip(m, s)] + [a + b for a, b in zip(m, s)]
        ax.bar(x + (i - (len(lines) - 1) / 2) * width, m, width, yerr=s, capsize=2, label=_name(l))
    ax.set_xticks(x, [h for _, h in keys])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(*accuracy_ylim(ends))  # the values' range, not 0-100: a 2-point gap stays visible
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside, not over
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def html_page(sections: list[tuple], extra_md: str = "", title: str = "ltcl comparison", extra_html: str = "") -> str:
    """One page; each section is (name, lines, keys, published) or (..., published, pub_notes)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
             ".pub{color:#666;font-style:italic}.note{color:#444;font-size:90%}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for name, lines, keys, published, *pub_notes in sections:
        parts.append(f"<h2>{html.escape(name)}</h2><table><tr><th>row</th><th>runs</th>"
                     + "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in COLUMNS) + "</tr>")
        for l in lines:
            parts.append("<tr><td>" + html.escape(_name(l)) + f"</td><td>{len(l.runs)}</td>"
                         + "".join(f"<td>{html_cell(l, k)}</td>"
                             for k, _, _ in COLUMNS) + "</tr>")
        for p in published:
            parts.append(f"<tr class='pub'><td>{html.escape(pub_label(p))}</td><td>-</td>"
                         + "".join(f"<td>{_fmt(p.get(k))}</td>" for k, _, _ in GROUP_COLS)
                         + "<td>-</td>" * (len(COLUMNS) - len(GROUP_COLS)) + "</tr>")
        parts.append("</table>")
        parts.append("<p class='note'>" + "<br>".join(html.escape(n) for n in
                                                      ["bold: best mean per column"]
                                                      + notes(lines, keys, *pub_notes)) + "</p>")
        if lines:
            parts.append(f"<img alt='{html.escape(name)} group accuracy' src='{group_bars_png(lines, name)}'>")
    if extra_md:
        parts.append("<pre>" + html.escape(extra_md) + "</pre>")
    if extra_html:
        parts.append(extra_html)
    parts.append("</body></html>")
    return "\n".join(parts)


def honest_text(honest: dict) -> str:
    out = []
    spread = honest.get("cost_spread", {})
    if honest.get("imbalance_cost"):
        out.append("Cost of imbalance (balanced subset minus long-tailed, points; ± combined seed spread):")
        for label, c in honest["imbalance_cost"].items():
            sp = spread.get(label, {})
            out.append(f"  {label}: " + ", ".join(f"{k} {v:+.2f}" + (f" ± {sp[k]:.2f}" if k in sp else "")
                                                  for k, v in c.items()))
    if honest.get("share_recovered"):
        out.append("Share of SimCLR's imbalance cost recovered ((row - SimCLR) / cost; n/a where the cost "
                   "lies within the seeds' spread):")
        for label, c in honest["share_recovered"].items():
            out.append(f"  {label}: " + ", ".join(f"{k} " + ("n/a" if v is None else f"{100 * v:+.0f}%")
                                                  for k, v in c.items()))
    return "\n".join(out)


def write_outputs(out_dir: str | Path, text: str, markdown: str, page: str) -> list[Path]:
    from ltcl.io import write_text

    out = Path(out_dir)
    paths = [out / "compare.txt", out / "compare.md", out / "compare.html"]
    for p, content in zip(paths, (text, markdown, page)):
        write_text(p, content)
    return paths

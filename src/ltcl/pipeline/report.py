"""report: one self-contained HTML page (and Markdown) of a pipeline run: dataset, OOD sampling,
training curves, probe and cluster metrics of f and g, the run card and params.yaml
(``ltcl.report.html`` builds it from the metrics files)."""

from __future__ import annotations

from pathlib import Path

from ltcl.report.html import build_report, write_report


def run(params, root: str | Path = ".", out_dir: str | Path = "report") -> None:
    write_report(out_dir, build_report(root, title=params.report.title))

"""report: one self-contained HTML page (and Markdown) of a pipeline run: dataset, OOD sampling,
training curves, probe and cluster metrics of f and g, the run card and the params the run's stages read
(``ltcl.report.html`` builds it from the stages' whole records: the ``<name>_details.json`` beside
each DVC metrics file (``ltcl.headline``), metrics/dataset.json, pretrain.json, distill.json, and the
stages' run records, runs/*.json)."""

from __future__ import annotations

from pathlib import Path

from ltcl.params import STAGE_PARAMS, stage_view
from ltcl.report.html import build_report, write_report


def run(params, root: str | Path = ".", out_dir: str | Path = "report") -> None:
    """The report prints the params the run's stages read (``STAGE_PARAMS["report"]`` and
    ``runtime``), the list dvc.yaml's report stage depends on."""
    view = stage_view(params, ("runtime", *STAGE_PARAMS["report"]))
    write_report(out_dir, build_report(root, title=params.report.title, params=view))

"""report: report/index.html (self-contained, renders offline) and report/report.md.

Reads params: report (and shows params.yaml).  Reads every metrics file the pipeline wrote.
"""

from ltcl.params import load_params
from ltcl.report.html import build_report, write_report
from ltcl.stage import run_stage


def main() -> None:
    params = load_params()
    write_report("report", build_report(".", title=params.report.title))


if __name__ == "__main__":
    run_stage("report", main, outputs=["report"])

"""report: report/index.html (self-contained, renders offline) and report/report.md.

Reads params: report (and shows params.yaml).  Reads every metrics file the pipeline wrote and the
run records of the stages before it (runs/<stage>.json: run card, timings, images/s per epoch).
"""

from ltcl.params import load_params
from ltcl.pipeline import report
from ltcl.stage import run_stage


def main() -> None:
    report.run(load_params(), ".", "report")


if __name__ == "__main__":
    run_stage("report", main, outputs=["report"])

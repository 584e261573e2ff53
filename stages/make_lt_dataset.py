"""make-lt-dataset: load a source, cut the long-tailed split and the evaluation splits.

Reads params: data.  Writes: data/lt/ (split arrays + manifest.json), metrics/dataset.json,
metrics/class_counts.csv.
"""

from ltcl.params import load_params
from ltcl.pipeline import make_lt_dataset
from ltcl.stage import run_stage

OUT = "data/lt"


def main() -> None:
    params = load_params()
    make_lt_dataset.run(params, OUT, "metrics/dataset.json", "metrics/class_counts.csv")


if __name__ == "__main__":
    run_stage("make-lt-dataset", main, outputs=[OUT, "metrics/dataset.json", "metrics/class_counts.csv"])

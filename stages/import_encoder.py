"""import-encoder@<name>: an external encoder (params external.<name>) as an ltcl encoder checkpoint.

Usage: python stages/import_encoder.py <name>
Reads params: external.<name>.  Reads its checkpoint file, data/lt (image shape; the training split
when the normalisation comes from the data).  Writes data/models/ext-<name>.pt (+ .sha256), which
linear-probe-external@<name> and cluster-external@<name> evaluate.
"""

import sys

from ltcl.params import load_params
from ltcl.pipeline import import_encoder
from ltcl.stage import run_stage

name = sys.argv[1]
OUTS = [f"data/models/ext-{name}.pt", f"data/models/ext-{name}.pt.sha256"]


def main() -> None:
    import_encoder.run(load_params(), name, "data/lt", OUTS[0])


if __name__ == "__main__":
    run_stage(f"import-encoder@{name}", main, outputs=OUTS)

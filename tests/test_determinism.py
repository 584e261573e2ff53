"""Issue 7, "Determinism": the same params and seeds give identical metrics on CPU.  The tiny
KDUP pipeline (make-lt-dataset, ood-pool, ood-sampling with strategy kdup, pretrain with psd,
distill, linear-probe of f and g) runs twice: once in the pytest process (the shared
``kdup_project``, built by conftest after whatever ran before it) and once in a fresh Python
process, in a second project; the probe and kNN accuracies, the OOD selection and the weights
must be identical.  (The fresh process runs its stages one after the other through
``conftest.stage_inproc``, which restores the global state each stage sets, so the comparison
also checks that nothing leaks from one in-process stage run to the next.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from conftest import make_project

PIPELINE = ("make_lt_dataset.py", "ood_pool.py", "ood_sampling.py", "pretrain.py", "distill.py")


def accuracies(proj) -> dict:
    out = {}
    for enc in ("pretrain", "distill"):
        m = json.loads(proj.path(f"metrics/probe/{enc}_details.json").read_text())  # the whole record
        out[enc] = {key: m[key] for key in ("full", "few_shot", "knn")}
    return out


# The second run: every stage of PIPELINE, then the probe of f and g, in one fresh process.
SECOND_RUN = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from conftest import Project

p = Project(Path.cwd())
for script in sys.argv[2:]:
    p.stage(script)
for enc in ("pretrain", "distill"):
    p.stage("linear_probe.py", enc)
"""


def test_same_params_same_metrics(kdup_project, tmp_path):
    a = kdup_project  # built (and probed) in this process by conftest, shared with test_kdup_stages
    b = make_project(tmp_path)
    b.write_params_text(a.path("params.yaml").read_text())
    b.run(sys.executable, "-c", SECOND_RUN, str(Path(__file__).parent), *PIPELINE)

    acc_a, acc_b = accuracies(a), accuracies(b)
    assert acc_a == acc_b
    assert set(acc_a["pretrain"]["full"]) >= {"many", "medium", "few", "std", "all"}
    assert set(acc_a["distill"]["knn"]) >= {"k1", "k10"}
    sel_a, sel_b = (np.load(p.path("data/ood/selection.npz")) for p in (a, b))
    np.testing.assert_array_equal(sel_a["pool_indices"], sel_b["pool_indices"])
    for name in ("pretrain.pt", "distill.pt"):
        wa, wb = (torch.load(p.path(f"data/models/{name}"), weights_only=True)["model"] for p in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name

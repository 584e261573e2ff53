"""Test accuracy (Many/Med/Few/STD/All) of a method's own classifier (GML's teacher and student,
paper 002), reported beside the linear probe of the same encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltcl.data.augment import to_float_normalised
from ltcl.data.splits import load_split
from ltcl.eval.groups import accuracy_report


def classifier_report(method, lt_dir: str | Path, spec: dict, manifest: dict, rule: str) -> dict:
    """``method.predict`` on the test split, summarised as the probe stage does."""
    x, y = load_split(lt_dir, "test")
    pred = np.concatenate([method.predict(to_float_normalised(x[s: s + 2048], spec["mean"], spec["std"]))
                           for s in range(0, len(x), 2048)])
    counts = manifest["lt_counts"]
    rep = accuracy_report(y, pred, counts, len(counts), rule)
    rep.pop("per_class")
    return {k: round(float(v), 4) for k, v in rep.items()}

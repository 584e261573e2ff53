"""Test accuracy (Many/Med/Few/STD/All) of a method's own classifier (GML's teacher and student,
paper 002), reported beside the linear probe of the same encoder."""

from __future__ import annotations

from pathlib import Path

from ltcl.data.groups import accuracy_report, label_facts
from ltcl.data.splits import load_split


def classifier_report(method, lt_dir: str | Path, manifest: dict, rule: str) -> dict:
    """``method.predict`` on the test split, summarised as the probe stage does (groups from the
    manifest's group counts)."""
    x, y = load_split(lt_dir, "test")
    pred = method.predict(x)
    rep = accuracy_report(y, pred, label_facts(manifest).group_counts, len(manifest["class_names"]), rule)
    rep.pop("per_class")
    return {k: round(float(v), 4) for k, v in rep.items()}

"""Many / Medium / Few class groups and group-wise accuracy summaries.

Protocol (SDCLR / COLT / KDUP reference code, KDUP Sec. 4.1 and Table 2): classes are
split into three groups by their number of images in the *long-tailed training split*,
group accuracy is the mean of the per-class test accuracies of the classes in the group,
and the balancedness "STD" is the population standard deviation (ddof = 0) of the three
group accuracies (82.40, 73.91, 70.19 -> 5.11).

Empty groups / missing classes: a group with no classes (possible with ``rule="thresholds"``
on small data) has accuracy NaN and is skipped when computing ``std``; a class absent from
the test set (per-class accuracy NaN) is skipped when averaging its group.

Where the counts come from is the split manifest's business (docs/data-manifest.md):
:func:`label_facts` reads which labels are real and the ``group_counts`` the groups are
computed from (the long-tailed split's, a labeled set's, a counts file's, or none: then there are
no groups, and :func:`accuracy_report` reports All and per-class accuracy only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np
import numpy.typing as npt

from ltcl.errors import UserError

GroupRule = Literal["thirds", "thresholds"]
GROUP_NAMES: tuple[str, str, str] = ("many", "medium", "few")
_RULES: tuple[str, ...] = ("thirds", "thresholds")
# ``rule="thresholds"`` (Kang et al. / OLTR convention): > 100 many, 20..100 medium, < 20 few.
MANY_THRESHOLD = 100
FEW_THRESHOLD = 20


def _as_counts(train_counts: npt.ArrayLike) -> np.ndarray:
    """Validate and return ``train_counts`` as a 1-D int64 array."""
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise UserError(f"train_counts must be a non-empty 1-D array, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0):
        raise UserError("train_counts must contain non-negative numbers (images per class)")
    if np.any(counts != np.round(counts)):
        raise UserError("train_counts must contain integer counts")
    return counts.astype(np.int64)


def _check_rule(rule: str) -> None:
    if rule not in _RULES:
        raise UserError(f"rule must be one of {_RULES}, got {rule!r}")


def class_groups(train_counts: npt.ArrayLike, rule: GroupRule = "thirds") -> np.ndarray:
    """Assign every class to ``"many"``, ``"medium"`` or ``"few"``.

    Args:
        train_counts: number of training images per class in the long-tailed split, shape (C,).
        rule: ``"thirds"`` - classes sorted by count (stable sort, ties broken by class
            index), the smallest ``C // 3`` are few, the next ``C // 3`` medium, the remaining
            ``C - 2 * (C // 3)`` many (3/3/4 on 10 classes, 33/33/34 on 100; with C < 3
            every class is many). ``"thresholds"`` - count > 100 many,
            20 <= count <= 100 medium, count < 20 few.

    Returns:
        np.ndarray of str, shape (C,), the group name of each class.
    """
    _check_rule(rule)
    counts = _as_counts(train_counts)
    num_classes = counts.size
    groups = np.full(num_classes, "many", dtype="<U6")
    if rule == "thirds":
        third = num_classes // 3
        order = np.argsort(counts, kind="stable")
        groups[order[:third]] = "few"
        groups[order[third : 2 * third]] = "medium"
    else:
        groups[counts <= MANY_THRESHOLD] = "medium"
        groups[counts < FEW_THRESHOLD] = "few"
    return groups


def group_summary(
    per_class_acc: npt.ArrayLike,
    train_counts: npt.ArrayLike,
    rule: GroupRule = "thirds",
) -> dict[str, float]:
    """Many / Medium / Few accuracies and their population STD.

    Args:
        per_class_acc: per-class test accuracy in percent, shape (C,); NaN entries
            (classes absent from the test set) are ignored.
        train_counts: images per class in the long-tailed training split, shape (C,).
        rule: grouping rule, see :func:`class_groups`.

    Returns:
        ``{"many", "medium", "few", "std"}`` in percent. A group without (non-NaN) classes
        is NaN and is left out of ``std`` (population std, ddof = 0, of the non-empty groups);
        ``std`` is NaN only when all groups are empty.
    """
    acc = np.asarray(per_class_acc, dtype=np.float64)
    groups = class_groups(train_counts, rule)
    if acc.shape != groups.shape:
        raise UserError(
            f"per_class_acc has shape {acc.shape} but train_counts has {groups.size} classes"
        )
    summary: dict[str, float] = {}
    for name in GROUP_NAMES:
        values = acc[(groups == name) & ~np.isnan(acc)]
        summary[name] = float(values.mean()) if values.size else float("nan")
    group_acc = np.array([summary[name] for name in GROUP_NAMES])
    group_acc = group_acc[~np.isnan(group_acc)]
    summary["std"] = float(group_acc.std(ddof=0)) if group_acc.size else float("nan")
    return summary


def per_class_accuracy(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int
) -> np.ndarray:
    """Per-class accuracy (recall) in percent, shape (num_classes,).

    Classes that do not occur in ``y_true`` get NaN.
    """
    true = np.asarray(y_true).astype(np.int64).ravel()
    pred = np.asarray(y_pred).astype(np.int64).ravel()
    if true.shape != pred.shape:
        raise UserError(f"y_true and y_pred must have the same length, got {true.size} and {pred.size}")
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    if true.size and (true.min() < 0 or true.max() >= num_classes):
        raise UserError(f"y_true labels must lie in [0, num_classes={num_classes})")
    support = np.bincount(true, minlength=num_classes).astype(np.float64)
    correct = np.bincount(true[true == pred], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, 100.0 * correct / support, np.nan)


def accuracy_report(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    train_counts: Optional[npt.ArrayLike],
    num_classes: int,
    rule: GroupRule = "thirds",
) -> dict[str, float | list[float]]:
    """Full accuracy report of a classifier on the test set.

    ``train_counts`` are the per-class counts the groups come from (the manifest's
    ``group_counts``); ``None`` when no counts define groups: the report then has no
    ``many`` / ``medium`` / ``few`` / ``std`` keys at all (absent, not NaN).

    Returns:
        ``{"many", "medium", "few", "std", "all", "per_class"}``: group accuracies and STD
        as in :func:`group_summary`, ``all`` = overall (sample-averaged) test accuracy, and
        ``per_class`` = list of per-class accuracies; all in percent.
    """
    true = np.asarray(y_true).ravel()
    pred = np.asarray(y_pred).ravel()
    if train_counts is not None and np.asarray(train_counts).size != num_classes:
        raise UserError(
            f"train_counts has {np.asarray(train_counts).size} entries but num_classes={num_classes}"
        )
    per_class = per_class_accuracy(true, pred, num_classes)
    report: dict[str, float | list[float]] = (
        {} if train_counts is None else dict(group_summary(per_class, train_counts, rule)))
    report["all"] = float(100.0 * np.mean(true == pred)) if true.size else float("nan")
    report["per_class"] = [float(v) for v in per_class]
    return report



# a manifest written before the labels keys existed took its groups from the long-tailed split
LT_GROUP_SOURCE = "long-tailed training split"


@dataclass(frozen=True)
class LabelFacts:
    """What a split manifest says about its labels (docs/data-manifest.md).

    Attributes:
        train: the ``train`` / ``lt`` split's labels are real classes (``labels.train``).
        eval: ``val`` / ``test`` / ``probe_full`` / ``few_shot`` / ``one_percent`` exist with real
            labels (``labels.eval``).
        note: one sentence on where the labels come from (``labels.note``; "" when not given).
        group_counts: the per-class counts the Many / Medium / Few groups are computed from, or
            ``None`` when no counts define groups.
        group_source: where those counts come from (``None`` with ``group_counts``).
    """

    train: bool
    eval: bool
    note: str
    group_counts: Optional[list[int]]
    group_source: Optional[str]

    @property
    def has_groups(self) -> bool:
        return self.group_counts is not None


def label_facts(manifest: dict[str, Any]) -> LabelFacts:
    """The :class:`LabelFacts` of a split manifest.

    A manifest written before this contract has no ``labels`` key (both are real) and no
    ``group_counts`` (the groups came from ``lt_counts``, the long-tailed training split).
    ``groups: null`` means no groups, whatever counts are present; without evaluation labels
    there are no groups either (nothing to group). A ``group_counts`` that does not have one
    count per class is refused (the manifest is inconsistent: rebuild it)."""
    labels = manifest.get("labels")
    train = True if labels is None else bool(labels["train"])
    eval_ = True if labels is None else bool(labels["eval"])
    note = "" if labels is None else str(labels.get("note") or "")
    if "group_counts" in manifest:
        counts, source = manifest["group_counts"], manifest.get("group_source")
    else:
        counts = manifest.get("lt_counts")
        source = LT_GROUP_SOURCE if counts is not None else None
    if manifest.get("groups") is None or not eval_:
        counts, source = None, None
    if counts is not None:
        counts = [int(c) for c in counts]
        n_classes = len(manifest.get("class_names") or [])
        if len(counts) != n_classes:
            raise UserError(f"the split manifest's group_counts has {len(counts)} entries for {n_classes} classes; "
                            "rebuild the split with `dvc repro -f make-lt-dataset`")
    return LabelFacts(train=train, eval=eval_, note=note, group_counts=counts, group_source=source)

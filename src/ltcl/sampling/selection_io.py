"""The OOD selection outside memory, in one place: its file (``data/ood/selection.npz``, written by
ood-sampling, read by pretrain), its checkpoint state (resume), and its metrics (budgets,
cluster sizes, and the tailness diagnostics that need real labels, computed only when the split
manifest says the training labels are real) apart from its seconds per step (for the run record),
with their headline (:func:`ood_headline`, the DVC metric metrics/ood.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ltcl.data.groups import GROUP_NAMES
from ltcl.io import save_npz
from ltcl.sampling.select import OODSelection, tailness_diagnostics


def save_selection(path, sel: OODSelection | None, extra_count: int = 0) -> None:
    """Write ``sel`` (None: no OOD sampling, ``ood.strategy: none``) to ``path`` (.npz)."""
    if sel is None:
        save_npz(path, strategy=np.asarray("none"), pool_indices=np.empty(0, np.int64), extra_count=np.asarray(0))
        return

    def arr(v, dtype):
        return np.asarray(v.cpu() if isinstance(v, torch.Tensor) else ([] if v is None else v), dtype=dtype)

    save_npz(path, strategy=np.asarray(sel.strategy), pool_indices=arr(sel.pool_indices, np.int64),
             cluster_of_each=arr(sel.cluster_of_each, np.int64), budgets=arr(sel.budgets, np.int64),
             id_clusters=arr(sel.id_labels, np.int64), id_indices=arr(sel.id_indices, np.int64),
             sample_tailness=arr(sel.sample_tailness, np.float32),
             cluster_tailness=arr(sel.cluster_tailness, np.float32), extra_count=np.asarray(extra_count))


def load_selection(path: str | Path) -> OODSelection:
    """The selection :func:`save_selection` wrote: what pretrain needs to rebuild its OOD images
    (strategy, pool indices, cluster of each, ID indices of the ``augment`` strategy)."""
    f = np.load(path)
    return OODSelection(strategy=str(f["strategy"]), pool_indices=f["pool_indices"],
                        cluster_of_each=f["cluster_of_each"], id_indices=f["id_indices"])


def selection_state(sel: OODSelection) -> dict:
    """An OOD selection as tensors (checkpoints load with weights_only=True: no numpy)."""
    as_t = lambda a: None if a is None else torch.as_tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
    return {"strategy": str(sel.strategy), "pool_indices": as_t(sel.pool_indices),
            "cluster_of_each": as_t(sel.cluster_of_each), "id_indices": as_t(sel.id_indices)}


def selection_from_state(st: dict) -> OODSelection:
    as_np = lambda t: None if t is None else t.numpy()  # noqa: E731
    return OODSelection(strategy=st["strategy"], pool_indices=as_np(st["pool_indices"]),
                        cluster_of_each=as_np(st["cluster_of_each"]), id_indices=as_np(st["id_indices"]))


def label_diagnostics_absent(manifest: dict) -> str | None:
    """Why the diagnostics that read the training labels (tailness vs class rarity, budget by
    Many / Medium / Few, cluster majority class and purity) cannot be computed, or None when they
    can: they need real training labels (``labels.train`` in the split manifest, docs/data-manifest.md;
    a manifest without ``labels`` predates unlabeled sources and has real labels) and groups."""
    if not (manifest.get("labels") or {"train": True})["train"]:
        return "the training images have no labels (labels.train is false in the split manifest)"
    if not manifest.get("groups"):
        return "the classes have no Many / Medium / Few groups (groups is null in the split manifest)"
    return None


def sample_groups(manifest: dict, y_id: np.ndarray) -> np.ndarray | None:
    """The Many / Medium / Few group of each training image's class, or None when the labels are
    not real or there are no groups (:func:`label_diagnostics_absent`)."""
    if label_diagnostics_absent(manifest) is not None:
        return None
    return np.asarray(manifest["groups"])[np.asarray(y_id, dtype=np.int64)]




def selection_timings(sel: OODSelection) -> dict[str, float]:
    """The seconds of each step of the update (embedding, clustering, tailness, budget, sampling,
    total: paper 003 Table 15), for the run record, never a metrics file."""
    return {k: float(v) for k, v in sel.timings.items()}


def selection_metrics(sel: OODSelection, manifest: dict, y_id: np.ndarray) -> dict:
    """Budgets, cluster sizes, cluster tailness (no timings: :func:`selection_timings`) and, when
    the long-tailed split's labels are real and define groups, how well tailness tracks true
    rarity (the diagnostics a user cannot get from the paper: Spearman correlation, share of the
    budget given to Few-class clusters).  Without real labels ``diagnostics`` is
    ``{"absent": <why>}`` and holds no number: ``y_id`` then holds placeholders, never read."""
    out: dict = {"strategy": sel.strategy, "selected": int(len(sel.cluster_of_each))}
    if sel.pool_scores:  # e.g. MAK's core set and the mean ECLE / distance of the pool and of the selection
        out["pool_scores"] = dict(sel.pool_scores)
    if sel.budgets is not None:
        out["budgets"] = [int(b) for b in sel.budgets]
        out["cluster_sizes"] = np.bincount(sel.id_labels, minlength=len(sel.budgets)).tolist()
        out["cluster_tailness"] = [round(float(t), 5) for t in sel.cluster_tailness]
        absent = label_diagnostics_absent(manifest)
        if absent is not None:
            out["diagnostics"] = {"absent": absent}
            return out
        counts = np.asarray(manifest["lt_counts"])
        few = [c for c, g in enumerate(manifest["groups"]) if g == "few"]
        groups = manifest["groups"]
        diag = tailness_diagnostics(sel.sample_tailness, y_id, counts, sel.id_labels, sel.budgets, few, groups)
        diag["cluster_majority_group"] = [groups[c] if c >= 0 else "empty" for c in diag["cluster_majority_class"]]
        out["diagnostics"] = diag
    return out


def ood_headline(metrics: dict) -> dict:
    """The headline of an OOD selection record (``metrics/ood.json``, a DVC metric; the record of
    :func:`selection_metrics` is its details file): the selected images and, when the training labels
    are real (the record's diagnostics are not ``absent``), the budget per image of each group
    (Many, Medium, Few: those present) and the share of the budget given to Few-majority clusters.
    Without real labels nothing computed from labels: ``selected`` alone."""
    out = {"selected": metrics["selected"]}
    diag = metrics.get("diagnostics") or {}
    if "absent" in diag:
        return out
    per_image = diag.get("budget_per_image") or {}
    if per_image:
        out["budget_per_image"] = {g: per_image[g] for g in GROUP_NAMES if g in per_image}
    if "few_budget_share" in diag:
        out["few_budget_share"] = diag["few_budget_share"]
    return out

"""Published numbers (``reference/*.csv``) matching a run's dataset, protocol and split, shown
beside ours and labelled as published, with the split each paper measured them on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# sources whose papers' tables we hold; source list: "list:<shipped bundle>" (data.lists)
DATASET_IDS = {"cifar10": "cifar10", "cifar100": "cifar100", "list:imagenet100-lt": "imagenet100",
               "list:places-lt": "places"}
# each paper's main comparison (the ablation tables are in reference/ too, shown with tables="all")
MAIN_TABLES = {("003", "2"), ("003", "3"), ("000", "1"), ("000", "2"), ("001", "3"), ("002", "3")}
# the split each paper's numbers were measured on (ltcl's data.split that reproduces it): 003 and
# 000 trained on SDCLR's published split files (ImageNet-100-LT: SDCLR's lists, Places-LT: COLT's);
# 001 and 002 built CIFAR-LT by Cui et al. (2019)'s rule, which ltcl generates (class_order: given)
PAPER_SPLITS = {"003": "community", "000": "community", "001": "generated", "002": "generated"}
SPLIT_LABELS = {"community": "on SDCLR/COLT split files", "generated": "on Cui et al. 2019 CIFAR-LT"}
HIDDEN_REASONS = {
    "generated": "published numbers hidden (papers {papers}): these runs use ltcl-generated splits, the papers "
                 "used SDCLR's split files; set data.split: community",
    "community": "published numbers hidden (papers {papers}): these runs use SDCLR's split files, the papers "
                 "built CIFAR-LT by Cui et al. 2019's rule (the head class keeps all images, label order); set "
                 "data.split: generated, data.class_order: given",
}


def dataset_id(params: dict[str, Any]) -> str | None:
    """The reference/ ``dataset`` of a run's (flat) params, or None when no paper reports it."""
    source, lists = str(params.get("data.source")), params.get("data.lists")
    return DATASET_IDS.get(f"list:{lists}" if source == "list" and isinstance(lists, str) else source)


def run_split(params: dict[str, Any]) -> str:
    """``data.split`` of a run (runs from before the key existed used generated splits)."""
    return str(params.get("data.split") or "generated")


def published_rows(params: dict[str, Any], protocol: str, folder: Path, tables: str = "main") -> list[dict]:
    """Rows of ``reference/*.csv`` for the run's dataset, imbalance ratio (none for the list
    data sets) and ``protocol``, whatever their split; each row gets ``split`` (its paper's, see
    PAPER_SPLITS). ``tables="main"`` keeps each paper's main comparison table only."""
    import pandas as pd

    ds = dataset_id(params)
    if ds is None or not folder.is_dir():
        return []
    ratio = float(params.get("data.imbalance_ratio", 0) or 0)
    rows = []
    for f in sorted(folder.glob("*.csv")):
        df = pd.read_csv(f, dtype={"paper": str, "table": str})
        need = {"dataset", "protocol", "method", "paper", "table", "imbalance_ratio"}
        if not need <= set(df.columns):
            continue
        csv_ratio = pd.to_numeric(df["imbalance_ratio"], errors="coerce")
        same_ratio = csv_ratio.isna() if params.get("data.source") == "list" else csv_ratio == ratio
        sel = df[(df["dataset"] == ds) & (df["protocol"] == protocol) & same_ratio]
        if tables == "main":
            sel = sel[[(p, t) in MAIN_TABLES for p, t in zip(sel["paper"], sel["table"])]]
        rows += [{**r, "split": PAPER_SPLITS.get(r["paper"], "community")} for r in sel.to_dict("records")]
    return rows


def published_for(runs: list[dict[str, Any]], protocol: str, folder: Path,
                  tables: str = "main") -> tuple[list[dict], list[str]]:
    """Published rows to show beside runs with these (flat) params: only those measured on the
    runs' split; and one line per hidden block saying why it is hidden."""
    rows: list[dict] = []
    notes: list[str] = []
    seen = set()
    for params in runs:
        split = run_split(params)
        key = (dataset_id(params), params.get("data.imbalance_ratio"), split)
        if key in seen:
            continue
        seen.add(key)
        candidates = published_rows(params, protocol, folder, tables)
        rows += [r for r in candidates if r["split"] == split]
        hidden = sorted({r["paper"] for r in candidates if r["split"] != split})
        note = HIDDEN_REASONS[split].format(papers=", ".join(hidden)) if hidden else None
        if note and note not in notes:
            notes.append(note)
    return rows, notes

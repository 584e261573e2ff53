"""Published numbers (``reference/*.csv``) matching a run's dataset and protocol, shown beside
ours and labelled as published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATASET_IDS = {"cifar10": "cifar10", "cifar100": "cifar100"}  # sources whose papers' tables we hold
# each paper's main comparison (the ablation tables are in reference/ too, shown with tables="all")
MAIN_TABLES = {("003", "2"), ("003", "3"), ("000", "1"), ("000", "2"), ("001", "3"), ("002", "3")}


def published_rows(params: dict[str, Any], protocol: str, folder: Path, tables: str = "main") -> list[dict]:
    """Rows of ``reference/*.csv`` for the run's dataset, imbalance ratio and ``protocol``;
    ``tables="main"`` keeps each paper's main comparison table only."""
    import pandas as pd

    ds = DATASET_IDS.get(str(params.get("data.source")))
    if ds is None or not folder.is_dir():
        return []
    ratio = float(params.get("data.imbalance_ratio", 0) or 0)
    rows = []
    for f in sorted(folder.glob("*.csv")):
        df = pd.read_csv(f, dtype={"paper": str, "table": str})
        need = {"dataset", "protocol", "method", "paper", "table", "imbalance_ratio"}
        if not need <= set(df.columns):
            continue
        sel = df[(df["dataset"] == ds) & (df["protocol"] == protocol)
                 & (pd.to_numeric(df["imbalance_ratio"], errors="coerce") == ratio)]
        if tables == "main":
            sel = sel[[(p, t) in MAIN_TABLES for p, t in zip(sel["paper"], sel["table"])]]
        rows += sel.to_dict("records")
    return rows

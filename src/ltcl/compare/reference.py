"""Published numbers (``reference/*.csv``) matching a run's dataset and protocol, shown beside
ours and labelled as published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATASET_IDS = {"cifar10": "cifar10", "cifar100": "cifar100"}  # sources whose papers' tables we hold


def published_rows(params: dict[str, Any], protocol: str, folder: Path) -> list[dict]:
    import pandas as pd

    ds = DATASET_IDS.get(str(params.get("data.source")))
    if ds is None or not folder.is_dir():
        return []
    ratio = float(params.get("data.imbalance_ratio", 0) or 0)
    rows = []
    for f in sorted(folder.glob("*.csv")):
        df = pd.read_csv(f)
        need = {"dataset", "protocol", "method", "paper", "table", "imbalance_ratio"}
        if not need <= set(df.columns):
            continue
        sel = df[(df["dataset"] == ds) & (df["protocol"] == protocol)
                 & (pd.to_numeric(df["imbalance_ratio"], errors="coerce") == ratio)]
        rows += sel.to_dict("records")
    return rows

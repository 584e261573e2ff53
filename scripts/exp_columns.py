"""How wide `dvc exp show` is for a repo: the number of param and metric columns of
`dvc exp show --json`, and the first metric columns in the order DVC prints them.

DVC 3.67 (dvc/repo/experiments/show.py ``_collect_names`` / ``_normalize_headers``) makes one column
per flattened key (nested dicts joined with ".", lists dropped from metrics) of every metrics file,
files in the order of ``repo.index.metrics`` (the stages in dvc.yaml order, then top-level
``metrics:``), keys in file order; a column is named ``<file>:<key>`` when the key occurs in more
than one file. The metric columns come before the param columns.

Usage: python scripts/exp_columns.py [REPO]   (default: the current directory; needs dvc on PATH
or in this interpreter)
       python scripts/exp_columns.py --files [REPO]   (no dvc: the workspace's metrics files that
dvc.yaml declares, read in DVC's order, as ``dvc exp show`` would show the workspace)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

# DVC flattens a metrics file as flatten_dict's "dot" reducer does (an empty dict gives no key): so does ltcl's
from ltcl.compare.experiments import flatten

FIRST = 10  # metric columns printed by name


def metric_values(v):
    """DVC's ``_extract_metrics``: numbers and strings stay, dicts recurse, everything else (lists,
    null) is dropped."""
    if isinstance(v, bool) or isinstance(v, (int, float, str)):
        return v
    if isinstance(v, dict):
        kept = {k: metric_values(x) for k, x in v.items()}
        return {k: x for k, x in kept.items() if x not in (None, {})}
    return None


def states(rows: list[dict]):
    """Every experiment state of ``dvc exp show --json`` (baselines and their experiments)."""
    for row in rows:
        yield row
        for exp in row.get("experiments") or []:
            yield from states(exp.get("revs") or [])


def names(rows: list[dict], kind: str) -> dict[str, dict[str, None]]:
    """file -> its flattened keys (ordered, first seen first) over every state, as DVC collects them."""
    out: dict[str, dict[str, None]] = {}
    for st in states(rows):
        for path, item in ((st.get("data") or {}).get(kind) or {}).items():
            data = (item or {}).get("data", {})
            if kind == "metrics":  # the JSON already holds DVC's extracted values; drop what it drops
                data = metric_values(data)
            if isinstance(data, dict):
                out.setdefault(path, {}).update(dict.fromkeys(flatten(data)))
    return out


def columns(rows: list[dict]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(metric columns, param columns), each a list of (file, column name as ``dvc exp show``
    heads it) in DVC's order."""
    metrics, params = names(rows, "metrics"), names(rows, "params")
    count = Counter(k for d in (metrics, params) for keys in d.values() for k in keys)

    def heads(d):
        return [(path, k if count[k] == 1 else f"{path}:{k}") for path, keys in d.items() for k in keys]

    return heads(metrics), heads(params)


def _interpolate(text: str, values: dict) -> str:
    for k, v in values.items():
        text = text.replace("${" + k + "}", str(v))
    return text


def _lookup(params: dict, dotted: str):
    node = params
    for k in dotted.split("."):
        node = node[k]
    return node


def declared_metrics(dvc: dict, params: dict) -> list[str]:
    """The metrics files of ``dvc`` (dvc.yaml, loaded) in DVC's order: its stages in file order, a
    ``foreach`` stage's items in order (a list's items as ``${item}``; a mapping, or ``${<params key>}``
    naming one in ``params``, as ``${key}`` / ``${item}``), then the top-level ``metrics:``."""
    out: list[str] = []

    def add(entries, values):
        for e in entries or []:
            out.append(_interpolate(next(iter(e)) if isinstance(e, dict) else e, values))

    for stage in (dvc.get("stages") or {}).values():
        if "foreach" not in stage:
            add(stage.get("metrics"), {})
            continue
        items = stage["foreach"]
        if isinstance(items, str) and items.startswith("${") and items.endswith("}"):
            items = _lookup(params, items[2:-1])
        pairs = items.items() if isinstance(items, dict) else ((None, v) for v in items)
        for key, item in pairs:
            add(stage["do"].get("metrics"), {"item": item, **({} if key is None else {"key": key})})
    add(dvc.get("metrics"), {})
    return out


def workspace_rows(repo: Path) -> list[dict]:
    """``dvc exp show --json``'s record of the workspace, made from the files: every declared
    metrics file present (:func:`declared_metrics`) and params.yaml."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    files = declared_metrics(yaml.safe_load((repo / "dvc.yaml").read_text()), params)
    metrics = {f: {"data": json.loads((repo / f).read_text())} for f in files if (repo / f).is_file()}
    return [{"rev": "workspace", "data": {"metrics": metrics, "params": {"params.yaml": {"data": params}}}}]


def exp_show(repo: Path) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"dvc exp show --json failed in {repo} ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repo", nargs="?", default=".", type=Path)
    ap.add_argument("--files", action="store_true", help="read the declared metrics files, without dvc")
    args = ap.parse_args(argv)
    metric_cols, param_cols = columns(workspace_rows(args.repo) if args.files else exp_show(args.repo))
    print(f"metric columns: {len(metric_cols)}")
    print(f"param columns: {len(param_cols)}")
    print(f"first {FIRST} metric columns: {', '.join(name for _, name in metric_cols[:FIRST])}")
    probe = next((i for i, (path, _) in enumerate(metric_cols) if path.startswith("metrics/probe/")), None)
    print(f"first probe metric column: {'none' if probe is None else f'#{probe + 1}'}")


if __name__ == "__main__":
    main()

"""Experiments as (name, params, metrics) records, read from ``dvc exp show --json`` or from
result directories (a ``metrics/`` tree with its ``params.yaml``, as the study scripts write).

Each record becomes one or two *rows* of the comparison: the pre-trained encoder f and, when a
distillation ran, the distilled g (paper 003 reports both).  Rows are named the way the papers
name them ("SimCLR", "SimCLR + COLT", "SimCLR + KDUP (f)", "SDCLR + KDUP (g)", ...).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ltcl.errors import UserError
from ltcl.headline import is_details
from ltcl.moved_keys import upgrade_flat
from ltcl.registry import DISTILL, PRETRAIN, STRATEGIES, SUPERVISED
from ltcl.runrecord import RUNS_DIR, read_run_record, run_record_path

# params that only choose a seed / split: runs differing only in these are repeats of one row
# (data.split_index: which of SDCLR's five published splits, the papers' repeats)
SEED_KEYS = ("data.split_seed", "data.split_index", "pretrain.seed", "distill.seed", "ood.seed", "ood.pool_seed",
             "probe.seed", "cluster.seed")
# the registry's names ("psd" is a SimCLR row; "none" names no OOD strategy); SUPERVISED is the registry's
METHOD_NAMES = {name: e.display for name, e in PRETRAIN.items()}
OOD_NAMES = {name: e.display for name, e in STRATEGIES.items() if e.display}


@dataclass
class Experiment:
    name: str
    params: dict[str, Any]  # flattened: "pretrain.method" -> "psd"; older runs' moved keys renamed (upgrade_flat)
    metrics: dict[str, dict]  # "probe/pretrain" -> {...}; keys are paths under metrics/ without .json
    source: str = ""
    rev: str = ""  # the experiment's git commit (DVC experiments): its per-class CSVs and run records are read from it
    repo: str = ""  # the git repository holding ``rev`` ("": the working directory's)
    runs: dict[str, dict] = field(default_factory=dict)  # stage -> its run record, read when first asked

    def metric(self, file: str, *keys: str, default=None):
        return _dig(self.metrics.get(file), keys, default)

    def timing(self, stage: str, *keys: str, default=None):
        """A value of the timings in this experiment's run record of ``stage`` (``runs/<stage>.json``,
        :mod:`ltcl.runrecord`: not a metric, so not in ``dvc exp show``), e.g.
        ``timing("pretrain", "seconds")``; ``default`` when the record or the key is absent."""
        if stage not in self.runs:
            self.runs[stage] = run_record(self, stage)
        return _dig(self.runs[stage].get("timings"), keys, default)


def _dig(node: Any, keys: tuple[str, ...], default):
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


@dataclass
class Row:
    """One encoder of one experiment."""

    label: str
    experiment: Experiment
    encoder: str  # "pretrain" | "distill" | "ext-<name>" (an imported external encoder)
    supervised: bool = False
    values: dict[str, float] = field(default_factory=dict)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _metrics_key(path: str) -> str:
    p = path[len("metrics/"):] if path.startswith("metrics/") else path
    return p[:-5] if p.endswith(".json") else p


def from_exp_show(records: list[dict], include_workspace: bool = False, include_baseline: bool = False,
                  repo: str | Path = "") -> list[Experiment]:
    """Experiments of ``dvc exp show --json`` output (DVC 3) of the git repository ``repo`` ("":
    the working directory): the queued/finished experiments of every commit; optionally the
    workspace and the commits themselves."""
    out: list[Experiment] = []

    def add(rec: dict, fallback: str) -> None:
        data = rec.get("data") or {}
        if rec.get("error") or not data.get("metrics"):
            return
        params = {}
        for file in (data.get("params") or {}).values():
            params.update(flatten(file.get("data") or {}))
        params = upgrade_flat(params)  # a run made before the per-method subsections
        metrics = {_metrics_key(path): (m.get("data") or {}) for path, m in data["metrics"].items()}
        rev = str(rec.get("rev", ""))
        out.append(Experiment(rec.get("name") or fallback, params, metrics, source=rev[:10],
                              rev=rev if rev != "workspace" else "", repo=str(repo)))

    for commit in records:
        if commit.get("rev") == "workspace":
            if include_workspace:
                add(commit, "workspace")
            continue
        if include_baseline:
            add(commit, str(commit.get("rev", ""))[:7])
        for exp in commit.get("experiments") or []:
            revs = exp.get("revs") or []
            if revs:
                add(revs[0], exp.get("name") or str(revs[0].get("rev", ""))[:7])
    return out


def run_exp_show(cwd: str | Path = ".") -> list[dict]:
    """``dvc exp show --json`` of the repository at ``cwd``."""
    proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc exp show failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout)


def from_directory(path: str | Path) -> Experiment:
    """A result directory: ``params.yaml`` beside the metrics files (``probe/pretrain.json``, ...),
    or a project root with ``params.yaml`` and ``metrics/``.  Its details files
    (``probe/pretrain_details.json``, :mod:`ltcl.headline`) are left out, as ``dvc exp show`` leaves
    them out: the headline files hold every number the table reads."""
    root = Path(path)
    mroot = root / "metrics" if (root / "metrics").is_dir() else root
    if not (root / "params.yaml").exists():
        raise UserError(f"{root}: no params.yaml")
    params = upgrade_flat(flatten(yaml.safe_load((root / "params.yaml").read_text()) or {}))
    metrics = {str(p.relative_to(mroot))[:-5]: json.loads(p.read_text()) for p in sorted(mroot.rglob("*.json"))
               if p.relative_to(mroot).parts[0] != RUNS_DIR and not is_details(p)}  # run records (runs/): no metrics
    return Experiment(root.name, params, metrics, source=str(root))


# paper 003 Table 3 / 12: the KDUP framework (PSD + distillation) with another source of extra images
KDUP_VARIANTS = {"random": "random sampling", "colt": "COLT sampling", "augment": "augmented ID"}


def method_label(p: dict[str, Any]) -> str:
    """A run's row name as the papers write it: "SimCLR + COLT", "SDCLR + KDUP", "BCL-D", "SimCLR + GH",
    "SimCLR + KDUP (random sampling)" (Table 3: PSD with another sampler), "SimCLR + KDUP sampling" (Table 5's
    strong baseline: KDUP's sampler without PSD), "SimCLR + PSD" (PSD without OOD data)."""
    method = p.get("pretrain.method", "simclr")
    pruned = p.get("pretrain.pruned_branch") and method != "gml"
    if method == "bcl":
        base = "BCL-D" if pruned else "BCL-I"  # BCL on SDCLR (Zhou et al. 2022)
    else:
        base = "SDCLR" if method == "sdclr" or pruned else METHOD_NAMES.get(method, method)
    if p.get("pretrain.gh.enabled") or p.get("pretrain.gh") is True:  # -S pretrain.gh=true writes the bool
        base += " + GH"
    strategy = p.get("ood.strategy", "none")
    if method == "psd" and strategy in KDUP_VARIANTS:
        base += f" + KDUP ({KDUP_VARIANTS[strategy]})"
    elif method != "psd" and strategy == "kdup":
        base += " + KDUP sampling"
    elif strategy in OOD_NAMES:
        base += f" + {OOD_NAMES[strategy]}"
    elif method == "psd":
        base += " + PSD"  # KDUP's loss without OOD data
    if p.get("data.subset") == "balanced-subset":
        base += " [balanced subset]"
    return base


def rows_of(exp: Experiment) -> list[Row]:
    """f (and g when a distillation ran) of one experiment, named as the papers do."""
    p = exp.params
    label = method_label(p)
    method = p.get("pretrain.method", "simclr")
    sup = method in SUPERVISED
    distilled = bool(p.get("distill.enabled", False)) and "probe/distill" in exp.metrics
    if "matched" in exp.name:
        label += " (compute-matched)"
    rows = []
    if "probe/pretrain" in exp.metrics:
        suffix = (" teacher" if method == "gml" else " (f)") if distilled else ""
        rows.append(Row(label + suffix, exp, "pretrain", sup))
    if distilled:
        # the distillation method: its param; an older run without the key, or with the former
        # "auto", distilled GML's student after pretrain.method gml, else KDUP's
        kind = p.get("distill.method")
        if kind in (None, "auto"):
            kind = "gml" if method == "gml" else "kdup"
        suffix = " student" if kind == "gml" else " (g)"
        rows.append(Row(label + suffix, exp, "distill", sup or (kind in DISTILL and DISTILL[kind].supervised)))
    for key in sorted(k for k in exp.metrics if k.startswith("probe/ext-") and not k.endswith("_per_class")):
        enc = key[len("probe/"):]
        ext = {k.split(".", 2)[2]: v for k, v in p.items() if k.startswith(f"external.{enc[4:]}.")}
        rows.append(Row(f"{enc[4:]} (external, {ext.get('format', '?')})", exp, enc))
    return rows


@lru_cache(maxsize=None)
def _files_at(repo: str, rev: str):
    from dvc.api import DVCFileSystem

    return DVCFileSystem(repo, rev=rev)


def read_at_rev(repo: str | Path | None, rev: str, path: str) -> str | None:
    """The text of ``path`` as the commit ``rev`` of the DVC project ``repo`` (an experiment's) left
    it, git-tracked or DVC-tracked (the run records, the per-class tables and the details files are
    DVC outputs, read from DVC's cache: ``dvc.api.DVCFileSystem``); None when absent."""
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    try:
        return _files_at(str(Path(repo or ".").resolve()), rev).read_text(path)
    except (FileNotFoundError, DvcException, SCMError):  # no such file, or no such commit in that repository
        return None


def per_class_table(exp: Experiment, encoder: str):
    """The probe's per-class table of ``encoder`` (``metrics/probe/<encoder>_per_class.csv``: class,
    train_count, per-protocol accuracy) for ``exp``: as its commit left it for a DVC experiment,
    from its folder for a result directory; None when absent."""
    import io

    import pandas as pd

    rel = f"probe/{encoder}_per_class.csv"
    if exp.rev:
        text = read_at_rev(exp.repo, exp.rev, f"metrics/{rel}")
        return pd.read_csv(io.StringIO(text)) if text else None
    root = Path(exp.source) if exp.source else None
    for path in ((root / "metrics" / rel, root / rel) if root else ()):
        if path.is_file():
            return pd.read_csv(path)
    return None


def run_record(exp: Experiment, stage: str) -> dict:
    """``exp``'s run record of ``stage`` (``runs/<stage>.json``, a DVC output): as its commit left it
    for a DVC experiment, from the project root for the workspace, from its folder for a result
    directory; {} when absent."""
    if exp.rev:
        text = read_at_rev(exp.repo, exp.rev, run_record_path(stage).as_posix())
        return json.loads(text) if text else {}
    return read_run_record((exp.repo or ".") if exp.source == "workspace" else exp.source or ".", stage)

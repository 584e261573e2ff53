"""Guard a refactor: run the embedded default and every row of `ltcl queue methods` with `dvc repro` in
a checkout, keep each run's metrics, and compare two such result folders metric by metric.

    git clone -q . /tmp/before && git -C /tmp/before checkout <old commit>
    python scripts/equivalence.py run /tmp/before /tmp/eq/before      # ~15 min idle on 2 cores
    git clone -q . /tmp/after
    python scripts/equivalence.py run /tmp/after /tmp/eq/after
    python scripts/equivalence.py compare /tmp/eq/before /tmp/eq/after

Results are bit-identical only on one machine with the same thread count, so run both on the same
machine.  Timings, the run card and per-update seconds are left out of the comparison (today they
are in the run records, runs/*.json, which are not copied; a checkout from before them kept them in
the metrics files, where TIMING_KEYS strips them); everything else (every metrics JSON value, every
per-class / t-SNE CSV) must be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

# what the metrics files of a checkout from before the run records held besides results: the run
# card, timings, each OOD update's seconds per step (in ood_update_history) and their means (ood_update_*_s)
TIMING_KEYS = {"run", "seconds", "seconds_per_epoch", "images_per_s", "setup_seconds", "wall_s"}
UPDATE_STEP_KEYS = {"embedding", "clustering", "tailness", "budget", "sampling", "total"}


def set_key(d: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for k in head:
        d = d[k]
    d[last] = value


def run(checkout: Path, out: Path, rows: list[str]) -> int:
    sys.path.insert(0, str(checkout / "src"))
    from ltcl.compare.queue import presets  # the checkout's own presets

    env = dict(os.environ, PYTHONPATH=str(checkout / "src"), DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    base = yaml.safe_load((checkout / "params.yaml").read_text())
    table = {"default": {}, **dict(presets(base)["methods"])}
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        for name in rows or list(table):
            params = json.loads(json.dumps(base))
            for k, v in table[name].items():
                set_key(params, k, v)
            (checkout / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            t0 = time.time()
            proc = subprocess.run(["dvc", "repro"], cwd=checkout, env=env, capture_output=True, text=True)
            print(f"{name}: exit {proc.returncode} in {time.time() - t0:.0f} s", flush=True)
            if proc.returncode:
                print(proc.stdout[-2000:], proc.stderr[-3000:], flush=True)
                failed += 1
                continue
            shutil.rmtree(out / name, ignore_errors=True)
            shutil.copytree(checkout / "metrics", out / name)
    finally:
        (checkout / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    return 1 if failed else 0


def _strip(x):
    if isinstance(x, dict):
        out = {k: _strip(v) for k, v in x.items()
               if k not in TIMING_KEYS and not (k.startswith("ood_update_") and k.endswith("_s"))}
        if isinstance(out.get("ood_update_history"), list):  # per update: epoch and diagnostics, no seconds
            out["ood_update_history"] = [{k: v for k, v in u.items() if k not in UPDATE_STEP_KEYS}
                                         for u in out["ood_update_history"]]
        return out
    return x


DETAILS = "_details.json"  # ltcl.headline: <name>_details.json holds the whole record of the headline <name>.json


def _record(f: Path):
    m = json.loads(f.read_text())
    if isinstance(m, dict) and isinstance(m.get("warmup"), dict):
        m["warmup"] = {k: v for k, v in m["warmup"].items() if k in ("epochs", "steps", "final_loss")}
    return _strip(m)


def load(d: Path) -> dict:
    """Every metrics JSON and CSV of a result folder.  A headline with a details file beside it is
    read as the details (its whole record), so that a checkout from before the headline / details
    split, whose <name>.json held the whole record, compares with a later one."""
    out = {}
    for f in sorted(d.rglob("*.json")):
        if f.name == "bench.json" or f.with_name(f.stem + DETAILS).is_file():
            continue  # a headline: its details are read under its name
        name = f.with_name(f.name[:-len(DETAILS)] + ".json") if f.name.endswith(DETAILS) else f
        out[name.relative_to(d).as_posix()] = _record(f)
    for f in sorted(d.rglob("*.csv")):
        out[f.relative_to(d).as_posix()] = f.read_text()
    return out


def compare(before: Path, after: Path) -> int:
    bad = 0
    for row in sorted(p.name for p in before.iterdir() if p.is_dir()):
        a, b = load(before / row), load(after / row) if (after / row).is_dir() else {}
        diffs = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        probe = (b.get("probe/pretrain.json") or {}).get("full", {}).get("all")
        print(f"{row}: {len(a)} files, {'identical' if not diffs else 'DIFFERENT: ' + ', '.join(diffs)}"
              f" (f full All {probe})")
        bad += bool(diffs)
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("checkout", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("rows", nargs="*", help="default and/or m-* rows (default: all)")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    a = ap.parse_args(argv)
    return run(a.checkout, a.out, a.rows) if a.cmd == "run" else compare(a.before, a.after)


if __name__ == "__main__":
    sys.exit(main())

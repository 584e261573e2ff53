"""Guard a refactor: run the embedded default and every row of `ltcl queue methods` with `dvc repro` in
a checkout, keep each run's metrics, and compare two such result folders metric by metric.

    git clone -q . /tmp/before && git -C /tmp/before checkout <old commit>
    python scripts/equivalence.py run /tmp/before /tmp/eq/before      # ~15 min idle on 2 cores
    git clone -q . /tmp/after
    python scripts/equivalence.py run /tmp/after /tmp/eq/after
    python scripts/equivalence.py compare /tmp/eq/before /tmp/eq/after

Results are bit-identical only on one machine with the same thread count, so run both on the same
machine.  Timings, the run card and per-update seconds are left out of the comparison; everything
else (every metrics JSON value, every per-class / t-SNE CSV) must be equal.
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

TIMING_KEYS = {"run", "seconds", "seconds_per_epoch", "images_per_s", "setup_seconds", "wall_s"}


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
        return {k: _strip(v) for k, v in x.items()
                if k not in TIMING_KEYS and not k.startswith("ood_update_") and k != "ood_update_history"}
    return x


def load(d: Path) -> dict:
    out = {}
    for f in sorted(d.rglob("*.json")):
        if f.name != "bench.json":
            m = json.loads(f.read_text())
            if isinstance(m, dict) and isinstance(m.get("warmup"), dict):
                m["warmup"] = {k: v for k, v in m["warmup"].items() if k in ("epochs", "steps", "final_loss")}
            out[f.relative_to(d).as_posix()] = _strip(m)
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

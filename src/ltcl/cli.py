"""``ltcl`` command line: compare experiments, queue a paper's table, print a preset's -S args,
keep dvc.yaml's code deps exact.

    ltcl queue table2 [--seeds 3] [--dry-run]     # dvc exp run --queue ... per row (and seed)
    dvc exp run --run-all                         # run the queue
    ltcl compare [--out report/compare]           # tables: terminal, Markdown, HTML
    ltcl compare --dirs runs/s0_simclr runs/...   # result directories instead of DVC experiments
    ltcl preset-args configs/kdup_cifar10_lt.yaml # -S key=value ... for dvc exp run
    ltcl deps [--write]                           # dvc.yaml code deps vs the code's imports
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ltcl.compare.experiments import from_directory, from_exp_show, run_exp_show
from ltcl.compare.queue import queue, set_param_args
from ltcl.compare.reference import published_rows
from ltcl.compare.render import PROTOCOL_TITLES, honest_text, html_page, markdown_table, text_table, write_outputs
from ltcl.compare.table import build_lines, honest_baselines
from ltcl.errors import UserError


def compare(args) -> int:
    if args.dirs:
        exps = [from_directory(d) for d in args.dirs]
    else:
        exps = from_exp_show(run_exp_show(), include_workspace=args.workspace, include_baseline=args.baseline)
        if args.exps:
            exps = [e for e in exps if any(e.name == n or e.name.startswith(n) for n in args.exps)]
    if not exps:
        print("no experiments with metrics found (run `ltcl queue <preset>` then `dvc exp run --run-all`)",
              file=sys.stderr)
        return 1
    texts, mds, sections = [], [], []
    for proto in args.protocols:
        lines, keys = build_lines(exps, proto)
        if not lines:
            continue
        title = PROTOCOL_TITLES.get(proto, proto)
        pub = published_rows(exps[0].params, proto, Path(args.reference))
        texts.append(text_table(lines, title, keys, pub))
        mds.append(markdown_table(lines, title, keys, pub))
        sections.append((title, lines, keys, pub))
    full, _ = build_lines(exps, "full")
    honest = honest_text(honest_baselines(full))
    text = "\n\n".join(texts + ([honest] if honest else []))
    md = "\n".join(mds + ([f"```\n{honest}\n```\n"] if honest else []))
    print(text)
    if args.out:
        paths = write_outputs(args.out, text, md, html_page(sections, honest))
        print("\nwritten: " + ", ".join(str(p) for p in paths))
    return 0


def deps(args) -> int:
    from ltcl import codedeps

    repo = Path(args.repo)
    diff = codedeps.write(repo) if args.write else codedeps.differences(repo)
    for line in diff:
        print(line)
    if args.write:
        print(f"ltcl deps: {len(diff)} difference(s) written" if diff else "ltcl deps: in sync")
        return 0
    return 1 if diff else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ltcl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="comparison tables of DVC experiments or result directories")
    c.add_argument("--exps", nargs="*", help="experiment names (or name prefixes) to include; default all")
    c.add_argument("--dirs", nargs="*", help="result directories (params.yaml + metrics) instead of DVC")
    c.add_argument("--protocols", nargs="*", default=["full", "few_shot"])
    c.add_argument("--workspace", action="store_true", help="include the workspace as a row")
    c.add_argument("--baseline", action="store_true", help="include the commits' own results")
    c.add_argument("--reference", default="reference", help="folder of published numbers (CSV)")
    c.add_argument("--out", default="report/compare", help="folder for compare.{txt,md,html}; '' = print only")
    q = sub.add_parser("queue", help="queue a paper table's rows as DVC experiments")
    q.add_argument("preset", help="table2 | table3 | table5 | table6 | table8 | table9 | table10 | table11 | "
                                  "methods | honest")
    q.add_argument("--seeds", type=int, default=1)
    q.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    p = sub.add_parser("preset-args", help="print a configs/ preset as -S arguments for dvc exp run")
    p.add_argument("file")
    d = sub.add_parser("deps", help="check dvc.yaml's code deps against the code's imports (exit 1 if they differ)")
    d.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps and deps/*.method/")
    d.add_argument("--repo", default=".", help="the checkout (default: here)")
    args = ap.parse_args(argv)
    if args.cmd == "deps":
        return deps(args)
    try:
        if args.cmd == "compare":
            return compare(args)
        if args.cmd == "queue":
            import shlex

            for cmd in queue(args.preset, args.seeds, args.dry_run):
                print(shlex.join(cmd))
            return 0
        import shlex

        from ltcl.presets import load_preset

        print(shlex.join(set_param_args(load_preset(args.file))))
        return 0
    except (UserError, RuntimeError) as exc:  # RuntimeError: `dvc exp show` failed
        print(f"ltcl {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

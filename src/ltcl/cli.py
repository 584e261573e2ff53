"""``ltcl`` command line: compare experiments, queue a paper's table, print a preset's -S args,
keep dvc.yaml's code deps exact.

    ltcl queue table2 [--seeds 3] [--dry-run]     # dvc exp run --queue ... per row (and seed)
    dvc exp run --run-all                         # run the queue
    ltcl compare [--out report/compare]           # tables: terminal, Markdown, HTML
    ltcl compare --dirs runs/s0_simclr runs/...   # result directories instead of DVC experiments
    ltcl preset-args configs/kdup_cifar10_lt.yaml # -S key=value ... for dvc exp run
    ltcl preset run configs/kdup_cifar10_lt.yaml --seeds 5 --queue   # the preset as DVC experiments
    ltcl deps [--write]                           # dvc.yaml code deps vs the code's imports
    ltcl embed --encoder data/models/distill.pt --split test --out embeddings/test   # per-image features
    ltcl init --images DIR [--labeled DIR] [--ood DIR]   # params.yaml for KDUP on your own folders
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from ltcl.compare.experiments import from_directory, from_exp_show, run_exp_show
from ltcl.compare.queue import queue, run_commands, set_param_args
from ltcl.compare.reference import published_for
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
    by_protocol = {}
    for proto in args.protocols:
        lines, keys = build_lines(exps, proto)
        by_protocol[proto] = lines
        if not lines:
            continue
        title = PROTOCOL_TITLES.get(proto, proto)
        pub, pub_notes = published_for([e.params for e in exps], proto, Path(args.reference))
        texts.append(text_table(lines, title, keys, pub, pub_notes))
        mds.append(markdown_table(lines, title, keys, pub, pub_notes))
        sections.append((title, lines, keys, pub, pub_notes))
    full, _ = build_lines(exps, "full")
    honest = honest_text(honest_baselines(full))
    rarity_texts, rarity_html = rarity_sections(by_protocol, args.rarity_baseline)
    text = "\n\n".join(texts + ([honest] if honest else []) + rarity_texts)
    md = "\n".join(mds + ([f"```\n{honest}\n```\n"] if honest else []) + [f"```\n{t}\n```\n" for t in rarity_texts])
    print(text)
    if args.out:
        paths = write_outputs(args.out, text, md, html_page(sections, honest, extra_html=rarity_html))
        print("\nwritten: " + ", ".join(str(p) for p in paths))
    return 0


def rarity_sections(by_protocol: dict, baseline: str | None) -> tuple[list[str], str]:
    """The rarity penalty per row of the full and few-shot probe tables (``by_protocol``: the
    table lines compare built): text blocks and HTML (with plots)."""
    import html as _html

    from ltcl.compare import rarity

    texts, parts = [], []
    for proto in ("full", "few_shot"):
        lines = by_protocol.get(proto)
        if not lines:
            continue
        pens = rarity.line_penalties(lines, proto)
        base = rarity.baseline_label(list(pens), baseline)
        title = PROTOCOL_TITLES.get(proto, proto)
        block = rarity.text_block(title, rarity.table_rows(pens, base), base)
        texts.append(block)
        parts.append(f"<h2>Rarity penalty: {_html.escape(title)}</h2><pre>{_html.escape(block)}</pre>")
        if any(not p.points.empty for p in pens.values()):
            parts.append(f"<img alt='rarity penalty {_html.escape(title)}' src='{rarity.plot_png(pens, title)}'>")
    return texts, "\n".join(parts)


def print_commands(cmds: list[list[str]]) -> None:
    for cmd in cmds:
        print(shlex.join(cmd))


def preset_parser(sub) -> None:
    p = sub.add_parser("preset", help="run or queue a configs/ preset as DVC experiments")
    run = p.add_subparsers(dest="action", required=True).add_parser(
        "run", help="dvc exp run (--queue) with the preset's -S args, one experiment per seed / split")
    run.add_argument("file", help="a configs/*.yaml preset")
    run.add_argument("--seeds", type=int, default=None,
                     help="N experiments NAME-s1..sN, seeds varied as `ltcl queue` does; on SDCLR's community "
                          "CIFAR splits experiment k takes data.split_index=k (N <= 5)")
    run.add_argument("--name", help="experiment name (default: the file name, e.g. kdup-cifar10-lt)")
    run.add_argument("--queue", action="store_true", help="dvc exp run --queue (run later: dvc queue start)")
    run.add_argument("-S", "--set-param", dest="set_params", action="append", default=[], metavar="KEY=VALUE",
                     help="extra override after the preset's (repeatable); passed to DVC as given, so quote "
                          "strings with ( ) [ ] , : for its Hydra parser")
    run.add_argument("--dry-run", action="store_true", help="print the dvc commands only")


def preset_run(args) -> int:
    """Print, for each experiment, what it runs (``# name: row; head; TS's period ...``,
    :func:`ltcl.presets.run_plan`) and its ``dvc exp run`` command, then run them (not with --dry-run)."""
    from ltcl.presets import run_plan

    plan = run_plan(args.file, args.seeds, args.name, args.queue, args.set_params)
    for what, cmd in plan:
        print(f"# {what}")
        print_commands([cmd])
    cmds = [cmd for _, cmd in plan]
    if not args.dry_run:
        run_commands(cmds)
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


def embed_parser(sub) -> None:
    e = sub.add_parser("embed", help="an encoder's per-image features (embeddings.npy, index.csv, embed.json)")
    e.add_argument("--encoder", required=True,
                   help="an encoder checkpoint (e.g. data/models/distill.pt) or an ltcl export "
                        "(export/distill/encoder.safetensors, read with the model_card.json beside it)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--split", help="a split of --lt-dir (test, val, train, probe_full, ...)")
    src.add_argument("--images", help="a folder of image files (<class>/<file> gives labels), resized to the "
                                      "encoder's size")
    src.add_argument("--npz", help="an .npz holding uint8 images N x H x W (x C) at the encoder's size")
    e.add_argument("--lt-dir", default="data/lt", help="the split folder for --split (default: data/lt)")
    e.add_argument("--key", help="the --npz array (default: the first of x_test, x_train, x, images)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--space", choices=("backbone", "projection"), default="backbone",
                   help="backbone: pooled features h, what the linear probe uses (default); projection: head(h) "
                        "(a .pt of pretrain / distill only: an export holds no projection head)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--skip-bad", action="store_true", help="--images: skip and log unreadable files")
    e.add_argument("--folder-labels", action="store_true", help="--images: the first sub-folder of each file is "
                   "its class (<class>/<file>), written to index.csv's label column (default: no labels)")


def embed(args) -> int:
    from ltcl.embed import embed as run_embed

    rec = run_embed(encoder=args.encoder, out=args.out, split=args.split, lt_dir=args.lt_dir, images=args.images,
                    npz=args.npz, key=args.key, space=args.space, batch_size=args.batch_size, device=args.device,
                    skip_bad=args.skip_bad, folder_labels=args.folder_labels)
    print(f"ltcl embed: {rec['n']} x {rec['d']} {rec['space']} embeddings written to {args.out}")
    return 0


def init_parser(sub) -> None:
    i = sub.add_parser("init", help="write params.yaml for a first KDUP run on your own image folders")
    i.add_argument("--images", required=True, help="the unlabeled collection: a folder of image files, any depth")
    i.add_argument("--labeled", help="a labeled evaluation set: class sub-folders (ltcl splits it into probe-train "
                                     "/ val / test), or train/<class>/ and test/<class>/")
    i.add_argument("--ood", help="a folder of unrelated photos for the OOD pool (default: the bundled photos)")
    i.add_argument("--params", default="params.yaml", help="the file to write (default: params.yaml)")


def init(args) -> int:
    from ltcl.init import init_params, write_params

    params, reasons = init_params(args.images, args.labeled, args.ood, args.params)
    existed = Path(args.params).is_file()
    write_params(params, reasons, args.params)
    print(f"ltcl init: wrote {args.params}" + (" (the previous one: `git diff` / `git checkout " + args.params
                                                  + "` shows or restores it)" if existed else ""))
    for r in reasons:
        print(f"  {r}")
    print("next: make repro   (or dvc repro; the report is report/index.html, the encoder export/distill/)")
    return 0


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
    c.add_argument("--rarity-baseline", default=None,
                   help="row the rarity penalties are compared with (default: SimCLR)")
    c.add_argument("--out", default="report/compare", help="folder for compare.{txt,md,html}; '' = print only")
    q = sub.add_parser("queue", help="queue a paper table's rows as DVC experiments")
    q.add_argument("preset", help="table2 | table3 | table5 | table6 | table8 | table9 | table10 | table11 | "
                                  "methods | honest")
    q.add_argument("--seeds", type=int, default=1)
    q.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    p = sub.add_parser("preset-args", help="print a configs/ preset as -S arguments for dvc exp run")
    p.add_argument("file")
    preset_parser(sub)
    d = sub.add_parser("deps", help="check dvc.yaml's code deps against the code's imports (exit 1 if they differ)")
    d.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps and deps/*.method/")
    d.add_argument("--repo", default=".", help="the checkout (default: here)")
    embed_parser(sub)
    init_parser(sub)
    args = ap.parse_args(argv)
    if args.cmd == "deps":
        return deps(args)
    try:
        if args.cmd == "compare":
            return compare(args)
        if args.cmd == "queue":
            print_commands(queue(args.preset, args.seeds, args.dry_run))
            return 0
        if args.cmd == "preset":
            return preset_run(args)
        if args.cmd == "embed":
            return embed(args)
        if args.cmd == "init":
            return init(args)
        from ltcl.presets import load_preset

        print(shlex.join(set_param_args(load_preset(args.file))))
        return 0
    except (UserError, RuntimeError) as exc:  # RuntimeError: `dvc exp show` failed
        print(f"ltcl {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:  # a dvc exp run of queue / preset run
        print(f"ltcl {args.cmd}: `{shlex.join(exc.cmd)}` failed (exit {exc.returncode})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

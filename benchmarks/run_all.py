"""Run the ltcl benchmarks (issue 6), print a table of results against their targets and write
``metrics/bench.json`` (atomically, ``ltcl.io.write_json``).

    python benchmarks/run_all.py            # benchmarks 1-4
    python benchmarks/run_all.py --scale    # + benchmark 5, the 1M-image pool

1. training throughput, ltcl vs a torchvision/PIL DataLoader loop  (bench_throughput)
2. hardware efficiency: achieved FLOP/s vs measured matmul peak      (bench_efficiency)
3. kdup OOD sampling update vs a COLT-style reference               (bench_sampling)
4. dvc repro overhead                                               (bench_pipeline)
5. 1M-image memory-mapped pool: time and peak memory                (bench_scale)
6. each self-supervised method's training step relative to SimCLR's (bench_methods)

Every comparison is measured in this run, on this machine, ours and the reference with the
same thread limit. Threads: ``--threads`` (default: every core this process may use, as a user
would run; ``--threads 1`` on a machine shared with other work). Ratios are measured
round-robin so a change in background load affects both sides alike; the absolute targets
(seconds) need an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCHES = ("throughput", "efficiency", "sampling", "pipeline", "methods", "scale")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", action="store_true", help="also run benchmark 5 (1M-image pool, ~3 GB in /tmp)")
    ap.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benchmarks")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch / faiss / BLAS threads (default: all cores available)")
    ap.add_argument("--out", default=str(REPO / "metrics" / "bench.json"))
    ap.add_argument("--no-profile", action="store_true", help="skip the profiles of missed targets")
    return ap.parse_args(argv)


def _fmt_rate(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def table_rows(res: dict) -> list[tuple[str, str, str, str, str]]:
    """(benchmark, measured, ratio / share, target, status) rows."""
    rows = []
    status = lambda ok: "PASS" if ok else "MISS"  # noqa: E731
    b = res.get("throughput")
    if b and "models" in b:
        for name, m in b["models"].items():
            ref = m["variants"]["reference"]
            for key, label in (("ltcl_bf16", "bf16+CL"), ("ltcl_fp32", "fp32+CL")):
                v = m["variants"][key]
                rows.append((f"1 throughput {name} ltcl {label} (b{v['batch']}) vs ref (b{ref['batch']})",
                             f"{_fmt_rate(v['images_per_s'])} vs {_fmt_rate(ref['images_per_s'])} img/s",
                             f"{v['ratio_vs_reference']:.2f}x", f">= {b['target_ratio']:g}x",
                             status(v["ratio_vs_reference"] >= b["target_ratio"])))
            au = m.get("auto")
            if au:
                rows.append((f"1 throughput {name} ltcl amp auto -> {au['precision']} ({au['reason'][:48]})",
                             f"{_fmt_rate(au['images_per_s'])} vs {_fmt_rate(au['other_images_per_s'])} img/s "
                             "(other precision)", f"{au['ratio_vs_reference']:.2f}x", "the faster precision",
                             status(au["pass"])))
            a = m.get("augment_only")
            if a:
                rows.append((f"1 (data path only) {name}: kornia batch vs PIL DataLoader, 2 views",
                             f"{_fmt_rate(a['ltcl']['images_per_s'])} vs {_fmt_rate(a['reference']['images_per_s'])}"
                             " img/s", f"{a['ratio']:.2f}x", "", "INFO"))
    b = res.get("efficiency")
    if b and "paths" in b:
        for key, label in (("ltcl_bf16", "bf16"), ("ltcl_fp32", "fp32")):
            p = b["paths"][key]
            rows.append((f"2 HW efficiency {b['model']} {label} (peak: {p['peak_matmul_n']}^2 matmul)",
                         f"{p['achieved_flops_per_s'] / 1e9:.2f} of {p['peak_flops_per_s'] / 1e9:.2f} GFLOP/s",
                         f"{100 * p['share']:.0f}%", f">= {100 * b['target_share']:.0f}%",
                         status(p["share"] >= b["target_share"])))
    b = res.get("sampling")
    if b and "ours_s" in b:
        rows.append((f"3 kdup update {b['n_id']:,} ID x {b['n_pool']:,} pool, d={b['dim']} (no encoder)",
                     f"{b['ours_s']:.2f} s", "", f"<= {b['target_seconds']:g} s", status(b["pass_seconds"])))
        rows.append(("3 kdup update vs COLT-style reference (sklearn, loops, argsort)",
                     f"{b['ours_s']:.2f} vs {b['reference_s']:.2f} s", f"{b['ratio']:.2f}x",
                     f">= {b['target_ratio']:g}x", status(b["pass_ratio"])))
        sn = b.get("select_nearest")
        if sn:
            rows.append((f"3 select_nearest alone, {sn['n_pool']:,} x {sn['dim']} pool, budget {sn['budget']:,}",
                         ", ".join(f"{s:.2f} s ({k} clusters)" for k, s in sn["seconds"].items()), "", "time recorded",
                         "INFO"))
        mk = b.get("mak")
        if mk:
            rows.append((f"3 mak update {mk['n_id']:,} ID x {mk['n_pool']:,} pool, R={mk['views']}, budget "
                         f"{mk['budget']:,} (no encoder; ECLE {mk['steps_s']['ecle']:.1f} s, K-center "
                         f"{mk['steps_s']['k_center']:.1f} s)", f"{mk['seconds']:.1f} s",
                         f"~{mk['extrapolated_s']:,.0f} s at {mk['extrapolated_to']:,}", "time recorded", "INFO"))
        for k, e in b.get("embedding", {}).items():
            rows.append((f"3 update incl. ResNet-18 {k} forward over {e['extrapolated_to']:,} images (extrapolated "
                         f"from {e['n_images']:,})", f"{b['with_embedding_s'][k]:,.0f} s", "",
                         f"paper: {b['paper_update_s']} s (2 GPUs)", "INFO"))
    b = res.get("pipeline")
    if b and "noop_s" in b:
        rows.append(("4 dvc repro, nothing to do (median of %d; incl. the runtime stage, %.2f s)"
                     % (len(b["noop_s_all"]), b.get("runtime_stage_s", 0.0)), f"{b['noop_s']:.2f} s",
                     f"DVC {b.get('noop_dvc_overhead_s', b['noop_s']):.2f} s", f"DVC < {b['target_noop_s']:g} s",
                     status(b["pass_noop"])))
        rows.append(("4 dvc repro after probe.lr change: reran " + ", ".join(b["probe_change_reran"]),
                     f"{b['probe_change_s']:.1f} s", "", "only the probes, exports, report (+ runtime)",
                     status(b["pass_probe"])))
    b = res.get("scale")
    if b and "total_s" in b:
        rows.append((f"5 {b['n_images']:,}-image pool: stream-embed (stand-in encoder) + kdup update",
                     f"{b['total_s']:.1f} s (+{b['write_s']:.0f} s write)", "", "time recorded", "INFO"))
        rows.append(("5 peak memory growth: anonymous (total RSS incl. mapped pool pages)",
                     f"{b['growth_anon_gb']:.2f} GB ({b['growth_rss_gb']:.2f} GB)", "",
                     f"< {b['limit_gb']:g} GB", status(b["pass"])))
    b = res.get("methods")
    if b and "step_s" in b:
        c = b["config"]
        for name, s in b["step_s"].items():
            rows.append((f"6 {name} training step ({c['backbone']}, b{c['batch']}, {c['size']}px) vs SimCLR's",
                         f"{s * 1000:.0f} ms", f"x{b['vs_simclr'][name]:.2f}", "measured", "INFO"))
    for name, r in res.items():
        if isinstance(r, dict) and "error" in r:
            rows.append((f"{name}: ERROR {r['error'].splitlines()[-1][:80]}", "", "", "", "ERROR"))
    return rows


def format_table(rows) -> str:
    head = ("benchmark", "measured", "ratio", "target", "status")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # quiet torch.profiler
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sys.path.insert(0, str(HERE))

    from _util import env_info, set_threads

    from ltcl.io import write_json

    set_threads(args.threads)
    env = env_info(args.threads)
    wanted = args.only or [b for b in BENCHES if b != "scale" or args.scale]
    profile = not args.no_profile
    results: dict = {}
    seconds: dict = {}
    t_all = time.perf_counter()
    cpu_seconds: dict = {}
    for name in wanted:
        t0 = time.perf_counter()
        c0 = _cpu_s()
        print(f"[bench] {name} ...", flush=True)
        try:
            if name == "throughput":
                import bench_throughput as m
                results[name] = m.run(profile=profile)
            elif name == "efficiency":
                import bench_efficiency as m
                results[name] = m.run(throughput=results.get("throughput") if "models" in results.get(
                    "throughput", {}) else None)
            elif name == "sampling":
                import bench_sampling as m
                results[name] = m.run(profile=profile)
            elif name == "pipeline":
                import bench_pipeline as m
                results[name] = m.run(threads=args.threads, profile=profile)
            elif name == "methods":
                import bench_methods as m
                results[name] = m.run()
            elif name == "scale":
                import bench_scale as m
                results[name] = m.run(threads=args.threads)
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others
            results[name] = {"error": traceback.format_exc()}
            print(results[name]["error"], file=sys.stderr)
        seconds[name] = time.perf_counter() - t0
        cpu_seconds[name] = _cpu_s() - c0
        print(f"[bench] {name} done in {seconds[name]:.0f} s (CPU {cpu_seconds[name]:.0f} s)", flush=True)
    total = time.perf_counter() - t_all
    try:
        rows = table_rows(results)
    except Exception:  # noqa: BLE001 - never lose the measurements to a formatting bug
        traceback.print_exc()
        rows = []
    doc = {"env": env, "benchmarks": results, "seconds": seconds, "cpu_seconds": cpu_seconds,
           "total_s": total, "loadavg_at_end": os.getloadavg(),
           "table": [dict(zip(("benchmark", "measured", "ratio", "target", "status"), r)) for r in rows]}
    write_json(args.out, doc)

    print()
    print(format_table(rows))
    notes = [n for r in results.values() if isinstance(r, dict) for n in r.get("notes", [])]
    for n in notes:
        print(f"note: {n}")
    if profile:
        for title, text in profiles_of_misses(results):
            print(f"\n--- profile: {title}\n{text}")
    print(f"\nthreads: {args.threads}; total wall time {total:.0f} s, CPU time {sum(cpu_seconds.values()):.0f} s "
          f"({', '.join(f'{k} {v:.0f}/{cpu_seconds[k]:.0f} s' for k, v in seconds.items())}); load average at "
          f"start/end {env.get('loadavg_at_start', (float('nan'),))[0]:.1f}/{os.getloadavg()[0]:.1f}; results: {args.out}")
    return 0


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (dvc, the scale child)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def profiles_of_misses(res: dict):
    t = res.get("throughput", {})
    for name, m in t.get("models", {}).items():
        if not m.get("pass") and m.get("profiles"):
            for variant in ("reference", "ltcl_bf16", "ltcl_fp32"):
                if variant in m["profiles"]:
                    yield f"throughput {name} {variant} (one step, top ops by self CPU time)", m["profiles"][variant]
    s = res.get("sampling", {})
    if s.get("profile"):
        yield "kdup sampling update (cProfile, cumulative)", s["profile"]
    p = res.get("pipeline", {})
    if p.get("profile"):
        yield "dvc repro no-op (cProfile, cumulative)", p["profile"]


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark 2: hardware efficiency of the ltcl pre-training step.

achieved FLOP/s = FLOPs of one ltcl pre-training step (forward + backward, counted with
``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls, 2 per multiply-add)
divided by its median step time; peak = best of several ``torch.matmul`` of square matrices in
the same dtype and thread count. share = achieved / peak, target >= 35% for ResNet-18 at 32x32.

Step times and FLOPs come from benchmark 1 of the same run when it is passed in (so both
benchmarks describe the same steps); otherwise a short throughput measurement is made here.
The matmul size grows from 256 until one product takes >= ``min_seconds`` (at most 2048), so
a dtype without fast kernels (bf16 on a CPU without native bf16) does not take minutes.
"""

from __future__ import annotations

import time

import torch

TARGET_SHARE = 0.35
MODEL = "resnet18@32x32x3"


def matmul_peak(dtype: torch.dtype, max_n: int = 2048, min_seconds: float = 0.25, reps: int = 5) -> dict:
    """Best-of-``reps`` FLOP/s of ``torch.matmul`` of two n x n matrices of ``dtype``."""
    n = 256
    while True:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        torch.matmul(a, b)
        t0 = time.perf_counter()
        torch.matmul(a, b)
        t = time.perf_counter() - t0
        if t >= min_seconds or n >= max_n:
            break
        n *= 2
    best = t
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "best_s": best, "flops_per_s": 2.0 * n**3 / best, "reps": reps}


def efficiency(variant: dict, peak: dict) -> dict:
    achieved = variant["flops_per_step"] / variant["step_s_median"]
    return {"flops_per_step": variant["flops_per_step"], "step_s_median": variant["step_s_median"],
            "batch": variant["batch"], "achieved_flops_per_s": achieved, "peak_flops_per_s": peak["flops_per_s"],
            "peak_matmul_n": peak["n"], "share": achieved / peak["flops_per_s"]}


def run(throughput: dict | None = None, max_n: int = 2048) -> dict:
    if throughput is None:
        try:
            import bench_throughput as bt
        except ImportError:
            from benchmarks import bench_throughput as bt
        cfg = dict(bt.CONFIGS[0], max_steps=3, max_seconds=20.0)
        throughput = {"models": {MODEL: bt.measure(cfg, bf16_batch=cfg["batch"] if bt.native_bf16()
                                                   else max(4, cfg["batch"] // 4))}}
    model = throughput["models"][MODEL]
    peaks = {"bf16": matmul_peak(torch.bfloat16, max_n), "fp32": matmul_peak(torch.float32, max_n)}
    out = {"target_share": TARGET_SHARE, "model": MODEL, "threads": torch.get_num_threads(), "peaks": peaks,
           "paths": {"ltcl_bf16": efficiency(model["variants"]["ltcl_bf16"], peaks["bf16"]),
                     "ltcl_fp32": efficiency(model["variants"]["ltcl_fp32"], peaks["fp32"])}}
    out["share"] = out["paths"]["ltcl_bf16"]["share"]
    out["share_fp32"] = out["paths"]["ltcl_fp32"]["share"]
    out["pass"] = out["share"] >= TARGET_SHARE
    out["bf16_peak_vs_fp32_peak"] = peaks["bf16"]["flops_per_s"] / peaks["fp32"]["flops_per_s"]
    return out

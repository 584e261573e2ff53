"""Benchmark 5 (issue 6, "Scale"): an OOD sampling update over a 1,000,000-image pool.

1. A 1M x 32 x 32 x 3 uint8 ``.npy`` (~3 GB) is written to /tmp with ``np.lib.format.open_memmap``
   (images: 8x8 colour blobs of a 50-component mixture upsampled 4x, so the embeddings cluster,
   drawn from a bank and shifted per chunk to keep generation cheap); it is deleted afterwards.
2. A fresh child process (so its peak-memory counters see only the update) opens it with
   ``ltcl.data.pool.open_pool`` (memory-mapped), embeds the 12,406 ID images and the pool with
   ``ltcl.models.features.embed_images`` (batches streamed from the memory map) and runs
   ``sample_ood(strategy="kdup")``.

The encoder is a cheap STAND-IN for ResNet-18, so the benchmark fits the time budget: a 4x4
average pool followed by a fixed random linear projection to d = 128 (the encoder's cost is
measured separately by benchmark 3). Memory is sampled every 20 ms in a thread: total resident
memory (VmRSS, which includes the pages of the memory-mapped pool the process has touched -
page cache the kernel may drop at any time) and anonymous memory (RssAnon: arrays, tensors,
faiss indexes). Growth above the state after the model and the ID images are loaded must stay
under 4 GB; the check uses anonymous memory, and total RSS is reported beside it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LIMIT_GB = 4.0
LT_COUNTS = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)  # 12,406 ID images


def _blobs(rng: np.random.Generator, means: np.ndarray, labels: np.ndarray, size: int, spread: float = 20.0):
    low = size // 4
    x = means[labels] + spread * rng.standard_normal((len(labels), low, low, 3), dtype=np.float32)
    x = np.clip(x, 0, 255).astype(np.uint8)
    return x.repeat(4, axis=1).repeat(4, axis=2)


def _means(seed: int, components: int = 50, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(30, 225, size=(components, size // 4, size // 4, 3)).astype(np.float32)


def write_pool(path: str | os.PathLike, n: int, size: int = 32, chunk: int = 16384, seed: int = 0,
               bank_size: int = 16384) -> float:
    """Write an (n, size, size, 3) uint8 pool with ``open_memmap``; returns seconds. Each chunk
    is drawn from a bank of blob images and cyclically shifted by a random number of columns
    (cheap to generate; 16,384 x 32 distinct images)."""
    t0 = time.perf_counter()
    means = _means(seed, size=size)
    rng = np.random.default_rng(seed + 1)
    bank = _blobs(rng, means, rng.integers(0, len(means), size=bank_size), size)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        block = bank[rng.integers(0, bank_size, size=m)]
        shift = int(rng.integers(0, size))
        mm[s:s + m, :, : size - shift] = block[:, :, shift:]
        mm[s:s + m, :, size - shift:] = block[:, :, :shift]
    del mm  # no flush: the pages are in the page cache, which the reader shares; the file is deleted after
    return time.perf_counter() - t0


def id_images(size: int = 32, counts=LT_COUNTS, seed: int = 0) -> np.ndarray:
    means = _means(seed, size=size)
    rng = np.random.default_rng(seed + 2)
    return _blobs(rng, means, np.repeat(np.arange(len(counts)), counts), size)


def standin_encoder(d: int = 128, size: int = 32, seed: int = 0):
    """4x4 average pool + fixed random projection, with the attributes ``embed_images`` reads."""
    import torch
    import torch.nn.functional as F

    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.feature_dim = 3 * (size // 4) ** 2
            self.proj_dim = d
            self.proj = torch.nn.Linear(self.feature_dim, d, bias=False)

        def forward(self, x):
            h = F.avg_pool2d(x, 4).flatten(1)
            return h, self.proj(h)

    return StandIn()


def child(pool_path: str, d: int, batch_size: int, threads: int, budget: int = 10_000,
          id_counts=LT_COUNTS) -> dict:
    """The measured part, run in a fresh process: open the pool, embed it streamed, sample."""
    sys.path.insert(0, str(HERE))
    import torch
    from _util import PeakMemory, proc_status_kb, set_threads

    from ltcl.data.pool import open_pool
    from ltcl.params import OODParams
    from ltcl.runtime import Runtime
    from ltcl.models.features import embed_images
    from ltcl.sampling.strategies import sample_ood

    set_threads(threads)
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=True)
    model = standin_encoder(d)
    ids = id_images(counts=id_counts)
    mean, std = [0.5] * 3, [0.25] * 3
    embed_images(model, ids[:64], mean, std, runtime, 64, "projection")  # warm-up
    config = OODParams(strategy="kdup", budget=budget, pool_size=budget, clusters=min(10, len(ids)), knn_k=10, seed=0)
    rss0, anon0 = proc_status_kb("VmRSS"), proc_status_kb("RssAnon")
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        pool = open_pool(pool_path)
        id_emb = embed_images(model, ids, mean, std, runtime, batch_size, "projection")
        pool_emb = embed_images(model, pool, mean, std, runtime, batch_size, "projection")
        t1 = time.perf_counter()
        sel, _ = sample_ood(id_emb, pool_emb, config, colt_batch_size=512)
        t2 = time.perf_counter()
    kb = 1024.0 ** 2  # kB -> GB
    return {
        "pool_shape": list(pool.shape), "dim": d, "embed_batch_size": batch_size,
        "embed_s": t1 - t0, "sample_ood_s": t2 - t1, "total_s": t2 - t0, "sample_ood_parts": sel.timings,
        "kl_iterations": sel.cluster_info.get("n_iter"), "selected": int(len(sel.pool_indices)),
        "baseline_rss_gb": rss0 / kb, "baseline_anon_gb": anon0 / kb,
        "peak_rss_gb": peak.peak_rss_kb / kb, "peak_anon_gb": peak.peak_anon_kb / kb,
        "growth_rss_gb": (peak.peak_rss_kb - rss0) / kb, "growth_anon_gb": (peak.peak_anon_kb - anon0) / kb,
        "ru_maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb,
        "pool_embeddings_gb": pool_emb.nbytes / 1024.0 ** 3,
    }


def run(n: int = 1_000_000, d: int = 128, batch_size: int = 4096, threads: int = 1, tmpdir: str | None = None,
        keep: bool = False, budget: int = 10_000, id_counts=LT_COUNTS) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ltcl-bench-pool-", dir=tmpdir))
    path = tmp / "pool.npy"
    t0 = time.perf_counter()
    try:
        write_s = write_pool(path, n)
        size_gb = path.stat().st_size / 1024.0 ** 3
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
        spec = json.dumps({"pool_path": str(path), "d": d, "batch_size": batch_size, "threads": threads,
                           "budget": budget, "id_counts": list(id_counts)})
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", spec], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"scale child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if not keep:
            path.unlink(missing_ok=True)
            tmp.rmdir()
    out.update(n_images=n, file_gb=size_gb, write_s=write_s, wall_s=time.perf_counter() - t0, limit_gb=LIMIT_GB,
               encoder="stand-in: 4x4 average pool + random linear projection (not ResNet-18)",
               pool_deleted=not keep)
    out["pass"] = out["growth_anon_gb"] < LIMIT_GB
    out["pass_total_rss"] = out["growth_rss_gb"] < LIMIT_GB
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        print(json.dumps(child(**json.loads(sys.argv[2]))))
    else:
        print(json.dumps(run(), indent=1))

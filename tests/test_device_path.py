"""The device path: every test here runs on ``LTCL_TEST_DEVICE`` (default ``cpu``; the GPU check,
``scripts/gpu_check.py``, sets ``cuda``), so the code that moves images, models and embeddings
between host and accelerator is exercised on this CPU in every test run and on a GPU when one is
lent.  On the CPU the comparisons "device vs CPU" compare the CPU with itself; the host/device
bookkeeping (what lives where, what is handed to faiss, what is moved per step) is checked on both.

``LTCL_DEVICE_WARNINGS`` (a file path, set by the GPU check): warnings raised under
``torch.use_deterministic_algorithms(True, warn_only=True)`` (what ``runtime.deterministic: true``
sets) are appended there, one JSON object per line, so non-deterministic CUDA kernels get reported.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from ltcl.data.augment import SimCLRAugment, two_views
from ltcl.models.features import extract_features
from ltcl.methods.base import TrainSet
from ltcl.params import OODParams, Params
from ltcl.registry import get_method
from ltcl.runtime import Runtime, amp_decision
from ltcl.train.loop import build_optimizer, make_scaler, optimizer_step, run_epoch
from ltcl.train.session import build_augment, new_encoder

DEVICE = torch.device(os.environ.get("LTCL_TEST_DEVICE", "cpu"))
CPU = torch.device("cpu")
SIZE, CHANNELS = 16, 3
MEAN, STD = [0.5] * CHANNELS, [0.25] * CHANNELS

pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                                reason="LTCL_TEST_DEVICE=cuda but CUDA is not available")


def runtime(amp="auto", device: torch.device = DEVICE) -> Runtime:
    """The runtime a stage builds on ``device`` (``runtime.amp`` auto: bf16 where native)."""
    return Runtime(device=device, amp_dtype=amp_decision(device, amp).dtype, channels_last=True)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, SIZE, SIZE, CHANNELS), dtype=np.uint8)


@pytest.fixture
def deterministic():
    """``runtime.deterministic: true`` (``ltcl.runtime.seed_everything``): deterministic
    algorithms with warn_only; the warnings they raise are recorded (``LTCL_DEVICE_WARNINGS``)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark = saved[2]
    path = os.environ.get("LTCL_DEVICE_WARNINGS")
    if path and caught:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        with open(path, "a") as fh:
            for w in caught:
                fh.write(json.dumps({"test": test, "category": w.category.__name__,
                                     "message": str(w.message)[:500]}) + "\n")


class ImageMoves(TorchFunctionMode):
    """Records every ``to`` / ``cuda`` / ``cpu`` / ``copy_`` / ``numpy`` / ``pin_memory`` of a
    4-D uint8 tensor (an image batch) while active."""

    NAMES = {"to", "cuda", "cpu", "copy_", "numpy", "pin_memory"}

    def __init__(self):
        super().__init__()
        self.moves: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES and any(isinstance(a, torch.Tensor) and a.dtype == torch.uint8 and a.ndim == 4
                                      for a in args):
            self.moves.append(name)
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------------------------ augmentation
def test_augment_output_stays_on_device():
    aug = SimCLRAugment(SIZE, CHANNELS, crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, gray_p=0.2,
                        flip=True, mean=MEAN, std=STD).to(DEVICE)
    x = torch.from_numpy(images(8)).to(DEVICE)
    out = aug(x)
    assert out.device.type == DEVICE.type and out.dtype == torch.float32
    assert out.shape == (8, CHANNELS, SIZE, SIZE) and out.is_contiguous(memory_format=torch.channels_last)
    v1, v2 = two_views(aug, x)
    assert v1.device.type == v2.device.type == DEVICE.type and torch.isfinite(v1).all()


def setup(method: str, with_ood: bool = False, n: int = 40, **pretrain):
    torch.manual_seed(0)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
        "ood": {"strategy": "none"},
        "pretrain": {"method": method, "epochs": 1, "batch_size": 16, "warmup_epochs": 0, "psd": {"k_pos": 2},
                     **pretrain},
        "distill": {"method": "gml" if method == "gml" else "kdup"},  # GML's teacher has GML's student
    })
    rt = runtime()
    x = images(n)
    y = np.repeat(np.arange(4), n // 4)
    model, spec = new_encoder(params.model, x, rt)
    aug = build_augment(params.augment, spec, rt.device)
    data = TrainSet.from_numpy(x, y, 4, rt.device)
    if with_ood:
        data = data.with_extra(torch.from_numpy(images(20, seed=1)))
    return get_method(method)(model, data, params.pretrain, rt, aug), params


def test_uint8_images_move_to_the_device_once_not_per_step():
    """TrainSet holds the uint8 images on the training device (one copy at set-up, also for the
    OOD images added later); an epoch's steps index them there and move no image batch."""
    m, params = setup("psd", with_ood=True)
    assert m.data.x.device.type == DEVICE.type and m.data.x.dtype == torch.uint8
    assert m.data.domain.device.type == m.data.labels.device.type == DEVICE.type
    m.on_epoch_start(0)  # neighbours (an embedding pass over every image, then faiss on the host)
    assert m.neighbours.device.type == DEVICE.type
    opt = build_optimizer(m.parameters(), params.pretrain)
    with ImageMoves() as rec:
        log = run_epoch(m, opt, params.pretrain, m.runtime, 0, torch.Generator().manual_seed(0),
                        make_scaler(m.runtime))
    assert log.steps == 3 and np.isfinite(log.loss)
    assert rec.moves == [], f"image batches moved during training steps: {rec.moves}"


# ------------------------------------------------------------------------------------ training steps
@pytest.mark.parametrize("method,with_ood,kw", [
    ("simclr", False, {}),
    ("psd", True, {}),  # KDUP's pre-training with sampled OOD images: PSD + L_DD
    ("sdclr", False, {}),
    ("gml", False, {}),  # supervised: GML's teacher
], ids=["simclr", "psd-kdup-ood", "sdclr", "gml"])
def test_training_step_on_device(method, with_ood, kw, deterministic):
    m, params = setup(method, with_ood, **kw)
    before = [p.detach().clone() for p in m.parameters()]
    opt = build_optimizer(m.parameters(), params.pretrain)
    scaler = make_scaler(m.runtime)
    m.on_epoch_start(0)
    idx = torch.randperm(len(m.data), generator=torch.Generator().manual_seed(0))[:16].to(DEVICE)
    out = m.step(idx)
    assert torch.isfinite(out.loss), out.parts
    assert out.loss.device.type == DEVICE.type
    optimizer_step(out.loss, opt, scaler)  # the loop's own backward + step
    params_now = list(m.parameters())
    assert all(p.device.type == DEVICE.type for p in params_now)
    assert all(p.grad is None or p.grad.device.type == DEVICE.type for p in params_now)
    assert any(not torch.equal(a, b) for a, b in zip(before, params_now))
    if with_ood:
        assert "dd" in out.parts  # two domains in the batch: L_DD is on
    if method == "gml":  # the teacher's classifier predicts through the probe's feature extractor
        pred = m.predict(images(6))
        assert pred.shape == (6,) and pred.dtype.kind == "i"


# ------------------------------------------------------------------------------------ embeddings
def small_model(device: torch.device):
    from ltcl.models.heads import build_encoder

    torch.manual_seed(0)
    model = build_encoder("resnet8", CHANNELS, SIZE, width=1.0, stem="auto", proj_hidden=512, proj_dim=128,
                          proj_layers=2)
    for mod in model.modules():  # non-trivial BatchNorm statistics (eval mode uses them)
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return model.to(device, memory_format=torch.channels_last)


@pytest.fixture
def pool(tmp_path):
    """A uint8 pool as ood-pool writes it: an .npy file, memory-mapped read-only."""
    path = tmp_path / "pool.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(100, SIZE, SIZE, CHANNELS))
    mm[:] = images(100, seed=2)
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


# fp32 on a GPU runs convolutions in TF32 by default (cudnn.allow_tf32): ~1e-3 relative per layer
FP32_ATOL = 1e-5 if DEVICE.type == "cpu" else 2e-2


@pytest.mark.parametrize("space", ["backbone", "projection"])
def test_embed_images_of_a_memmap_pool_match_cpu(pool, space):
    from ltcl.models.features import embed_images

    model_dev, model_cpu = small_model(DEVICE), small_model(CPU)
    emb_cpu = embed_images(model_cpu, pool, MEAN, STD, runtime(False, CPU), 32, space)
    emb_dev = embed_images(model_dev, pool, MEAN, STD, runtime(False), 32, space)
    # host float32, C-contiguous: what faiss-cpu takes without a further copy
    assert isinstance(emb_dev, np.ndarray) and emb_dev.dtype == np.float32 and emb_dev.flags.c_contiguous
    np.testing.assert_allclose(emb_dev, emb_cpu, atol=FP32_ATOL, rtol=0)
    assert model_dev.training  # restored
    emb_amp = embed_images(model_dev, pool, MEAN, STD, runtime("auto"), 32, space)  # bf16 where native
    cos = (emb_amp * emb_cpu).sum(1)
    assert cos.min() > 0.98, cos.min()


def test_extract_features_match_cpu(pool):
    model_dev, model_cpu = small_model(DEVICE), small_model(CPU)
    f_cpu = extract_features(model_cpu.features, pool, batch_size=32, device=CPU, mean=MEAN, std=STD)
    f_dev = extract_features(model_dev.features, pool, batch_size=32, device=DEVICE, mean=MEAN, std=STD)
    assert f_dev.device == CPU and f_dev.dtype == torch.float32 and f_dev.shape == f_cpu.shape
    scale = float(f_cpu.abs().max())
    torch.testing.assert_close(f_dev, f_cpu, atol=FP32_ATOL * scale, rtol=0)
    f_amp = extract_features(model_dev.features, pool, batch_size=32, device=DEVICE, mean=MEAN, std=STD,
                             amp=runtime("auto").amp_dtype is not None)
    assert torch.nn.functional.cosine_similarity(f_amp, f_cpu).min() > 0.98


# ------------------------------------------------------------------------------------ OOD update
@pytest.mark.parametrize("strategy", ["kdup", "augment"])
def test_ood_update_with_the_model_on_the_device(pool, strategy, monkeypatch):
    """One OOD sampling update: ID images on the device, the pool a host memmap; the embeddings
    reach faiss as host float32 arrays, the pool's exactly once (no second copy); the selection
    comes back as images on the training device."""
    import ltcl.sampling.refresh as refresh
    import ltcl.sampling.strategies.kdup as kdup

    seen: dict = {"embedded": []}
    real_embed, real_sample, real_nearest = refresh.embed_images, refresh.sample_ood, kdup.select_nearest

    def embed(*a, **k):
        out = real_embed(*a, **k)
        seen["embedded"].append(out)
        return out

    def sample(id_emb, pool_emb, *a, **k):
        seen["sample_ood"] = (id_emb, pool_emb)
        return real_sample(id_emb, pool_emb, *a, **k)

    def nearest(pool_emb, *a, **k):
        seen["nearest"] = pool_emb
        return real_nearest(pool_emb, *a, **k)

    monkeypatch.setattr(refresh, "embed_images", embed)
    monkeypatch.setattr(refresh, "sample_ood", sample)
    monkeypatch.setattr(kdup, "select_nearest", nearest)

    cfg = OODParams(strategy=strategy, budget=30, clusters=3, knn_k=3, pool_size=len(pool), embed_batch_size=32)
    data = TrainSet.from_numpy(images(40), np.repeat(np.arange(4), 10), 4, DEVICE)
    sampler = refresh.OODSampler(cfg=cfg, pool=pool if strategy == "kdup" else None,
                                 id_images=data.x[data.domain == 0], mean=MEAN, std=STD, batch_size=16)
    sel = sampler.update(small_model(DEVICE), runtime())

    id_emb, pool_emb = seen["sample_ood"]
    for arr in (id_emb,) + ((pool_emb,) if strategy == "kdup" else ()):
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.flags.c_contiguous
    if strategy == "kdup":
        assert len(seen["embedded"]) == 2 and pool_emb is seen["embedded"][1]
        assert np.shares_memory(seen["nearest"], pool_emb), "sample_ood copied the pool's embeddings"
        idx = sel.pool_indices
        assert len(idx) == cfg.budget and len(np.unique(idx)) == cfg.budget
        assert idx.min() >= 0 and idx.max() < len(pool)
    else:
        assert pool_emb is None and len(sel.id_indices) == cfg.budget
    assert {"embedding", "clustering", "tailness", "sampling", "total"} <= set(sel.timings)
    assert isinstance(sampler.tailness, torch.Tensor) and sampler.tailness.shape == (40,)

    extra = sampler.extra_images(sel, seed=0)
    assert extra.device.type == DEVICE.type and extra.dtype == torch.uint8 and len(extra) == cfg.budget
    if strategy == "kdup":
        assert torch.equal(extra.cpu(), torch.from_numpy(np.asarray(pool[np.sort(sel.pool_indices)])))
    grown = data.with_extra(extra)
    assert len(grown) == 40 + cfg.budget and grown.num_id == 40
    assert grown.x.device.type == grown.domain.device.type == grown.labels.device.type == DEVICE.type


def test_open_sampler_uses_the_id_images_in_place():
    """The sampler of a run reads the TrainSet's ID images where they are: no masked copy of the
    whole split (on a GPU, a second copy in device memory); with OOD rows, the ID rows only."""
    from ltcl.sampling.refresh import open_sampler

    cfg = OODParams(strategy="augment", budget=10, clusters=2, knn_k=3)
    data = TrainSet.from_numpy(images(40), np.repeat(np.arange(4), 10), 4, DEVICE)
    sampler = open_sampler(cfg, "no-pool.npy", data, {"mean": MEAN, "std": STD}, 16)
    assert sampler.id_images.data_ptr() == data.x.data_ptr() and len(sampler.id_images) == 40
    mixed = open_sampler(cfg, "no-pool.npy", data.with_extra(torch.from_numpy(images(8, seed=3))),
                         {"mean": MEAN, "std": STD}, 16)
    assert mixed.id_images.device.type == DEVICE.type and torch.equal(mixed.id_images, data.x)

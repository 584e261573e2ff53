"""Tests for ltcl.data.augment: batched SimCLR augmentation and eval normalisation."""

from __future__ import annotations

import kornia.augmentation as K
import numpy as np
import pytest
import torch

from ltcl.data.augment import (
    Normalize,
    SimCLRAugment,
    dataset_stats,
    to_float_normalised,
    to_nchw_float,
    two_views,
)

MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _aug(image_size, channels, **kw) -> SimCLRAugment:
    """SimCLRAugment with SimCLR's settings (the schema's augment defaults) unless ``kw`` changes them."""
    from ltcl.params import AugmentParams

    a = AugmentParams()
    base = {"crop_scale": a.crop_scale, "jitter": a.jitter, "jitter_p": a.jitter_p, "gray_p": a.gray_p, "flip": a.flip}
    return SimCLRAugment(image_size, channels, **{**base, **kw})


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin contention on a shared 2-core CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _images(n: int = 16, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, channels), dtype=torch.uint8, generator=g)


def test_output_shape_dtype_layout() -> None:
    x = _images(8)
    aug = _aug(32, 3, mean=MEAN3, std=STD3)
    for inp in (x, x.permute(0, 3, 1, 2), x.numpy()):  # NHWC, NCHW, numpy NHWC
        out = aug(inp)
        assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert _aug(24, 3)(x).shape == (8, 3, 24, 24)  # output size independent of the input size
    assert _aug(40, 3)(x).shape == (8, 3, 40, 40)


def test_colour_pipeline_uses_torchvision_semantics() -> None:
    aug = _aug(32, 3)
    kinds = [type(op) for op in aug.ops]
    assert kinds == [K.RandomResizedCrop, K.RandomHorizontalFlip, K.ColorJitter, K.RandomGrayscale]
    jitter = aug.ops[2]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (0.4, 0.4, 0.4, 0.1)
    assert jitter.p == pytest.approx(0.8) and aug.ops[3].p == pytest.approx(0.2)
    assert all(op.same_on_batch is False for op in aug.ops)


def test_normalisation() -> None:
    x = _images(8)
    raw = _aug(32, 3)
    norm = _aug(32, 3, mean=MEAN3, std=STD3)
    torch.manual_seed(3)
    a = raw(x)
    torch.manual_seed(3)
    b = norm(x)
    assert a.min() >= 0 and a.max() <= 1
    mean = torch.tensor(MEAN3).view(1, 3, 1, 1)
    std = torch.tensor(STD3).view(1, 3, 1, 1)
    torch.testing.assert_close(b, (a - mean) / std)


def test_per_sample_independence() -> None:
    one = _images(1)
    batch = one.expand(16, -1, -1, -1).contiguous()
    aug = _aug(32, 3)
    torch.manual_seed(0)
    out = aug(batch).flatten(1)
    dists = torch.cdist(out, out)
    off_diag = dists[~torch.eye(16, dtype=torch.bool)]
    assert (off_diag > 1e-3).all()  # 16 different views of the same image
    src = aug.ops[0]._params["src"]  # crop boxes drawn per sample
    assert src.shape[0] == 16 and torch.unique(src.flatten(1), dim=0).shape[0] == 16


def test_grayscale_path() -> None:
    aug = _aug(28, 1, mean=(0.13,), std=(0.31,))
    kinds = [type(op) for op in aug.ops]
    assert K.RandomGrayscale not in kinds
    jitter = aug.ops[-1]
    assert isinstance(jitter, K.ColorJitter) and jitter.saturation == 0.0 and jitter.hue == 0.0
    assert jitter.brightness == 0.4 and jitter.contrast == 0.4
    x = _images(8, 28, 1)
    for inp in (x, x[..., 0], x.permute(0, 3, 1, 2)):  # (N,H,W,1), (N,H,W), (N,1,H,W)
        out = aug(inp)
        assert out.shape == (8, 1, 28, 28) and torch.isfinite(out).all()
    digits = _aug(8, 1)(_images(4, 8, 1))  # 8x8 digits
    assert digits.shape == (4, 1, 8, 8) and digits.min() >= 0 and digits.max() <= 1


def test_random_grayscale_applies_per_sample() -> None:
    x = _images(32)
    always = _aug(32, 3, jitter_p=0.0, gray_p=1.0)
    out = always(x)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 1], out[:, 2])
    never = _aug(32, 3, jitter_p=0.0, gray_p=0.0)
    assert K.RandomGrayscale not in [type(op) for op in never.ops]
    assert not torch.allclose(never(x)[:, 0], never(x)[:, 1])


def test_deterministic_under_manual_seed() -> None:
    x = _images(8)
    aug = _aug(32, 3, mean=MEAN3, std=STD3)
    torch.manual_seed(123)
    a = aug(x)
    torch.manual_seed(123)
    b = aug(x)
    torch.manual_seed(124)
    c = aug(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_two_views() -> None:
    x = _images(8)
    aug = _aug(32, 3, mean=MEAN3, std=STD3)
    v1, v2 = two_views(aug, x)
    assert v1.shape == v2.shape == (8, 3, 32, 32)
    assert v1.is_contiguous(memory_format=torch.channels_last)
    assert (v1 - v2).flatten(1).abs().amax(1).min() > 1e-3


def _reference_normalise(x: np.ndarray, mean, std) -> np.ndarray:
    n, h, w, c = x.shape
    out = np.zeros((n, c, h, w), dtype=np.float64)
    for i in range(n):
        for ch in range(c):
            out[i, ch] = (x[i, :, :, ch] / 255.0 - mean[ch]) / std[ch]
    return out


def test_to_float_normalised_and_module() -> None:
    x = _images(4)
    ref = torch.from_numpy(_reference_normalise(x.numpy(), MEAN3, STD3)).float()
    out = to_float_normalised(x, MEAN3, STD3)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(Normalize(MEAN3, STD3)(x), ref)
    torch.testing.assert_close(to_float_normalised(x.permute(0, 3, 1, 2), MEAN3, STD3), ref)
    unit = torch.from_numpy(_reference_normalise(x.numpy(), (0,) * 3, (1,) * 3)).float()
    torch.testing.assert_close(to_nchw_float(x, 3), unit)
    g = _images(4, 28, 1)
    torch.testing.assert_close(
        to_float_normalised(g[..., 0], (0.1,), (0.3,)),
        torch.from_numpy(_reference_normalise(g.numpy(), (0.1,), (0.3,))).float(),
    )


def test_dataset_stats(tmp_path) -> None:
    x = _images(50, 16, 3).numpy()
    x[..., 0] //= 2  # channels with different statistics
    mean, std = dataset_stats(x, chunk_bytes=7 * 16 * 16 * 3)
    ref = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(std, ref.std(axis=(0, 1, 2)), rtol=1e-10)
    # a split file's memory map is read by rows, in chunks: the same statistics
    np.save(tmp_path / "x.npy", x)
    assert dataset_stats(np.load(tmp_path / "x.npy", mmap_mode="r"), chunk_bytes=7 * 16 * 16 * 3) == (mean, std)
    g_mean, g_std = dataset_stats(torch.from_numpy(x[..., 0]))
    assert len(g_mean) == 1
    np.testing.assert_allclose(g_std[0], ref[..., 0].std(), rtol=1e-10)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="image_size"):
        _aug(4, 3)
    with pytest.raises(ValueError, match="crop_scale"):
        _aug(32, 3, crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="mean"):
        _aug(32, 3, mean=(0.5,), std=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="std"):
        to_float_normalised(_images(2), MEAN3, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="channels"):
        _aug(32, 3)(_images(2, 32, 1))
    with pytest.raises(ValueError, match="jitter"):
        _aug(32, 3, jitter=(0.4, 0.4, 0.4, 0.7))
    with pytest.raises(ValueError, match="uint8"):
        dataset_stats(np.zeros((2, 8, 8, 3), dtype=np.float32))

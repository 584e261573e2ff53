"""ltcl.data.randaugment against PIL, image by image, as BCL's released randaug.py calls it.

Reference calls are those of MediaBrain-SJTU/BCL a2342f8 ``data/randaug.py`` with the random sign
flip taken out (the batched ops receive the signed value). Random uint8 images, 'L' and 'RGB',
square and non-square, with per-sample values drawn from the released ranges.
"""

from __future__ import annotations

import zlib

import numpy as np
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps
import pytest
import torch
from PIL import Image

from ltcl.data import randaugment as ra

SHAPES = [(16, 16), (12, 20), (32, 32)]  # (H, W)
CHANNELS = [1, 3]
N = 6


def _images(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """N images: 3 uniform, 1 low-contrast, 1 constant, 1 two-valued (exercise LUT special cases)."""
    x = rng.integers(0, 256, size=(N, h, w, c), dtype=np.uint8)
    x[3] = rng.integers(50, 91, size=(h, w, c), dtype=np.uint8)
    x[4] = rng.integers(0, 256)
    x[5] = np.where(rng.random((h, w, c)) < 0.3, 17, 200).astype(np.uint8)
    return x


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0], "L") if img.shape[-1] == 1 else Image.fromarray(img, "RGB")


def _np(im: Image.Image, c: int) -> np.ndarray:
    a = np.array(im)
    return a[..., None] if c == 1 else a


def _reference(fn, x: np.ndarray, values) -> np.ndarray:
    c = x.shape[-1]
    return np.stack([_np(fn(_pil(img), v), c) for img, v in zip(x, values)])


# released op bodies (data/randaug.py), the sign flip removed
def ref_shear_x(img, v):
    return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0))


def ref_shear_y(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0))


def ref_translate_x(img, v):
    v = v * img.size[0]
    return img.transform(img.size, Image.AFFINE, (1, 0, v, 0, 1, 0))


def ref_translate_y(img, v):
    v = v * img.size[1]
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v))


def ref_translate_x_abs(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, v, 0, 1, 0))


def ref_translate_y_abs(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v))


def ref_rotate(img, v):
    return img.rotate(v)


def ref_solarize_add(img, addition, threshold=128):
    img_np = np.array(img).astype(int)  # the released np.int
    img_np = img_np + addition
    img_np = np.clip(img_np, 0, 255)
    img_np = img_np.astype(np.uint8)
    img = Image.fromarray(img_np)
    return PIL.ImageOps.solarize(img, threshold)


def ref_posterize(img, v):
    v = int(v)
    v = max(1, v)
    return PIL.ImageOps.posterize(img, v)


def ref_cutout_abs(img, v, x0, y0):
    if v < 0:
        return img
    w, h = img.size
    x0 = int(max(0, x0 - v / 2.0))
    y0 = int(max(0, y0 - v / 2.0))
    x1 = min(w, x0 + v)
    y1 = min(h, y0 + v)
    xy = (x0, y0, x1, y1)
    color = (125, 123, 114) if img.mode == "RGB" else 125  # PIL rejects the 3-tuple on 'L'
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle(xy, color)
    return img


def ref_cutout(img, v, x0, y0):
    if v <= 0.0:
        return img
    return ref_cutout_abs(img, v * img.size[0], x0, y0)


def _signed(rng, hi, n=N):
    return rng.uniform(-hi, hi, size=n)


# name -> (batched op, reference, value sampler)
CASES = {
    "ShearX": (ra.shear_x, ref_shear_x, lambda r: _signed(r, 0.6)),
    "ShearY": (ra.shear_y, ref_shear_y, lambda r: _signed(r, 0.6)),
    "TranslateX": (ra.translate_x, ref_translate_x, lambda r: _signed(r, 0.66)),
    "TranslateY": (ra.translate_y, ref_translate_y, lambda r: _signed(r, 0.66)),
    "TranslateXabs": (ra.translate_x_abs, ref_translate_x_abs, lambda r: _signed(r, 10.0)),
    "TranslateYabs": (ra.translate_y_abs, ref_translate_y_abs, lambda r: _signed(r, 10.0)),
    "Rotate": (ra.rotate, ref_rotate, lambda r: _signed(r, 60.0)),
    "AutoContrast": (ra.auto_contrast, lambda im, v: PIL.ImageOps.autocontrast(im), lambda r: r.uniform(0, 1, N)),
    "Invert": (ra.invert, lambda im, v: PIL.ImageOps.invert(im), lambda r: r.uniform(0, 1, N)),
    "Equalize": (ra.equalize, lambda im, v: PIL.ImageOps.equalize(im), lambda r: r.uniform(0, 1, N)),
    "Flip": (ra.flip, lambda im, v: PIL.ImageOps.mirror(im), lambda r: r.uniform(0, 1, N)),
    "Solarize": (ra.solarize, lambda im, v: PIL.ImageOps.solarize(im, v), lambda r: r.uniform(0, 110, N)),
    "SolarizeAdd": (ra.solarize_add, ref_solarize_add, lambda r: r.uniform(0, 110, N)),
    "Posterize": (ra.posterize, ref_posterize, lambda r: r.uniform(4, 8, N)),
    "Contrast": (ra.contrast, lambda im, v: PIL.ImageEnhance.Contrast(im).enhance(v), lambda r: r.uniform(0.1, 1.9, N)),
    "Color": (ra.color, lambda im, v: PIL.ImageEnhance.Color(im).enhance(v), lambda r: r.uniform(0.1, 1.9, N)),
    "Brightness": (ra.brightness, lambda im, v: PIL.ImageEnhance.Brightness(im).enhance(v),
                   lambda r: r.uniform(0.1, 1.9, N)),
    "Sharpness": (ra.sharpness, lambda im, v: PIL.ImageEnhance.Sharpness(im).enhance(v),
                  lambda r: r.uniform(0.1, 1.9, N)),
    "Identity": (ra.identity, lambda im, v: im, lambda r: r.uniform(0, 1, N)),
}

# special values per op (boundaries, exact shifts, integer thresholds, PIL's rotate shortcuts)
SPECIAL = {
    "ShearX": [0.0, 0.6, -0.6, 0.5, -0.25, 0.3],
    "ShearY": [0.0, 0.6, -0.6, 0.5, -0.25, 0.3],
    "TranslateX": [0.0, 0.25, -0.25, 0.66, -0.66, 0.5],
    "TranslateY": [0.0, 0.25, -0.25, 0.66, -0.66, 0.5],
    "TranslateXabs": [0.0, 0.5, -0.5, 3.0, -3.0, 2.5],
    "TranslateYabs": [0.0, 0.5, -0.5, 3.0, -3.0, 2.5],
    "Rotate": [0.0, 90.0, 180.0, -90.0, 270.0, 45.0],
    "Solarize": [0.0, 110.0, 100.0, 100.5, 1.0, 128.0],
    "SolarizeAdd": [0.0, 110.0, 100.0, 27.5, 255.0, 0.999],
    "Posterize": [4.0, 8.0, 4.999, 5.0, 7.5, 6.0],
    "Contrast": [0.1, 1.9, 1.0, 0.5, 1.5, 0.3],
    "Color": [0.1, 1.9, 1.0, 0.5, 1.5, 0.3],
    "Brightness": [0.1, 1.9, 1.0, 0.5, 1.5, 0.3],
    "Sharpness": [0.1, 1.9, 1.0, 0.5, 1.5, 0.3],
}


def _case_id(name, shape, c):
    return f"{name}-{shape[0]}x{shape[1]}-{'L' if c == 1 else 'RGB'}"


PARAMS = [(name, shape, c) for name in CASES for shape in SHAPES for c in CHANNELS]


@pytest.mark.parametrize(("name", "shape", "c"), PARAMS, ids=[_case_id(*p) for p in PARAMS])
def test_op_matches_pil(name, shape, c):
    op, ref, sample = CASES[name]
    seed = zlib.crc32(_case_id(name, shape, c).encode())
    rng = np.random.default_rng(seed)
    draws = [sample(rng) for _ in range(4)]
    if name in SPECIAL:
        draws.append(np.array(SPECIAL[name], dtype=np.float64))
    for k, values in enumerate(draws):
        x = _images(rng, *shape, c)
        want = _reference(ref, x, values.tolist())
        got = op(torch.from_numpy(x), torch.from_numpy(values)).numpy()
        assert got.dtype == np.uint8 and got.shape == x.shape
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{name} draw {k}: {len(bad)} pixels differ, first {bad[:5].tolist()}, v={values}"


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("which", ["Cutout", "CutoutAbs"])
def test_cutout_matches_pil(which, shape, c):
    h, w = shape
    rng = np.random.default_rng(7 + h + w + c)
    for k in range(5):
        x = _images(rng, h, w, c)
        if which == "Cutout":
            v = rng.uniform(0, 0.4, N)
            if k == 0:
                v[:3] = [0.0, 0.4, 0.05]
            op, ref = ra.cutout, ref_cutout
        else:
            v = rng.uniform(-1, 12, N)
            if k == 0:
                v[:3] = [0.0, -0.5, 11.0]
            op, ref = ra.cutout_abs, ref_cutout_abs
        cx = w + (1 - w) * rng.random(N)  # np.random.uniform(w)
        cy = h + (1 - h) * rng.random(N)
        want = np.stack([_np(ref(_pil(img), vi, xi, yi), c) for img, vi, xi, yi in zip(x, v, cx, cy)])
        got = op(torch.from_numpy(x), torch.from_numpy(v), torch.from_numpy(cx), torch.from_numpy(cy)).numpy()
        assert np.array_equal(got, want), f"{which} draw {k}: {(got != want).sum()} pixels differ"


def test_scalar_value_broadcasts():
    x = torch.from_numpy(_images(np.random.default_rng(0), 16, 16, 3))
    assert torch.equal(ra.rotate(x, 30.0), ra.rotate(x, torch.full((N,), 30.0)))
    assert torch.equal(ra.posterize(x, 5), ra.posterize(x, torch.full((N,), 5.0)))


def test_released_list_and_helpers():
    assert [n for n, _, _ in ra.AUGMENT_LIST] == [
        "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast", "Invert", "Equalize",
        "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness", "Cutout",
    ]
    assert all(n in ra.OPS for n, _, _ in ra.AUGMENT_LIST)
    assert ra.SIGN_FLIP <= set(ra.OPS)
    for name, lo, hi in ra.AUGMENT_LIST:
        for m in (0, 10, 17.5, 30):
            assert float(ra.op_value(m, lo, hi)) == (float(m) / 30) * float(hi - lo) + lo, name
    g = torch.Generator().manual_seed(3)
    s = ra.random_sign(torch.ones(4000, dtype=torch.float64), g)
    assert set(s.tolist()) == {-1.0, 1.0} and abs(float(s.mean())) < 0.1
    cx, cy = ra.cutout_centres(1000, 12, 20, torch.Generator().manual_seed(1))
    assert float(cx.min()) > 1.0 and float(cx.max()) <= 20.0 and float(cy.max()) <= 12.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu():
    rng = np.random.default_rng(11)
    for name, (op, _, sample) in CASES.items():
        for c in CHANNELS:
            x = torch.from_numpy(_images(rng, 32, 32, c))
            v = torch.from_numpy(sample(rng))
            assert torch.equal(op(x.cuda(), v.cuda()).cpu(), op(x, v)), name


def test_auto_contrast_every_span():
    """Images holding every level in [lo, hi] (so every LUT entry is used): catches one-ulp
    differences in ``scale = 255.0 / (hi - lo)`` (e.g. lo=0, hi=249: 166 -> 170, not 169)."""
    imgs = []
    for lo in (0, 1, 7, 50, 128, 200):
        for hi in range(lo + 1, 256):
            levels = np.arange(lo, hi + 1, dtype=np.uint8)
            imgs.append(np.resize(levels, 256).reshape(16, 16, 1))
    x = np.stack(imgs)
    want = np.stack([_np(PIL.ImageOps.autocontrast(_pil(img)), 1) for img in x])
    got = ra.auto_contrast(torch.from_numpy(x)).numpy()
    assert np.array_equal(got, want), f"{(got != want).sum()} pixels differ"

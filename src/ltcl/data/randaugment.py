"""Batched RandAugment ops of BCL's released code, on uint8 NHWC image batches on any device.

BCL (MediaBrain-SJTU/BCL, commit a2342f8, ``data/randaug.py``) applies its ``RandAugment_prob``
per image with PIL, after the SimCLR crop/flip/jitter/grayscale (``data/memoboosted_cifar100.py:40-56``).
This module reimplements every op defined there as a torch function ``op(x, v)`` on a whole batch:
``x`` is uint8 ``(N, H, W, C)`` with ``C`` 1 (PIL mode 'L') or 3 ('RGB'), on any device, and ``v``
is a per-sample value (a tensor of shape ``(N,)`` or a number), *already the op's value*: the value
the released op function receives, after its own random sign flip where it has one (the released
ops that flip draw the sign themselves; here the caller does, see ``SIGN_FLIP``/``random_sign``).
Each op returns a new uint8 ``(N, H, W, C)`` tensor equal to the PIL op the released code calls,
image by image.

The released op list (``augment_list``, ``data/randaug.py:159-182``), value
``val = m / 30 * (max - min) + min`` (``data/randaug.py:194`` and ``:210``):

====================  ==========  ===========  ======================================================
op (randaug.py line)  range       sign flip    PIL call
====================  ==========  ===========  ======================================================
ShearX (9)            [0, 0.6]    yes (11-12)  ``transform(AFFINE, (1, v, 0, 0, 1, 0))``
ShearY (16)           [0, 0.6]    yes (18-19)  ``transform(AFFINE, (1, 0, 0, v, 1, 0))``
TranslateX (23)       [0, 0.66]   yes (25-26)  ``transform(AFFINE, (1, 0, v * W, 0, 1, 0))``
TranslateY (38)       [0, 0.66]   yes (40-41)  ``transform(AFFINE, (1, 0, 0, 0, 1, v * H))``
Rotate (53)           [0, 60]     yes (55-56)  ``rotate(v)`` (degrees, counter-clockwise)
AutoContrast (60)     (unused)    no           ``ImageOps.autocontrast``
Invert (64)           (unused)    no           ``ImageOps.invert``
Equalize (68)         (unused)    no           ``ImageOps.equalize``
Solarize (76)         [0, 110]    no           ``ImageOps.solarize(img, v)`` (threshold v)
Posterize (90)        [4, 8]      no           ``ImageOps.posterize(img, max(1, int(v)))``
Contrast (96)         [0.1, 1.9]  no           ``ImageEnhance.Contrast(img).enhance(v)``
Color (101)           [0.1, 1.9]  no           ``ImageEnhance.Color(img).enhance(v)``
Brightness (106)      [0.1, 1.9]  no           ``ImageEnhance.Brightness(img).enhance(v)``
Sharpness (111)       [0.1, 1.9]  no           ``ImageEnhance.Sharpness(img).enhance(v)``
Cutout (116)          [0, 0.4]    no           ``ImageDraw.rectangle`` of side ``v * W``
====================  ==========  ===========  ======================================================

Defined in the file but not in ``augment_list``: TranslateXabs / TranslateYabs (31, 46; pixels, sign
flip), Flip (72, ``ImageOps.mirror``), SolarizeAdd (81, add then solarize at 128; it calls
``np.int``, which numpy >= 1.24 no longer has), CutoutAbs (125), Identity (155), SamplePairing (146,
commented out of the list). All but SamplePairing are here too.

Directions worth knowing: Posterize's value is the number of *kept bits*, so a larger magnitude
``m`` (bits 4 -> 8) posterizes *less* (8 bits is the identity); Solarize's value is the threshold
(pixels >= v are inverted), so a larger ``m`` also solarizes less (v = 0 inverts everything).
The ranges are those of ``augment_list``; the comments beside the op functions (e.g. "[-0.3, 0.3]",
"[0, 256]") are stale.

Exactness (against Pillow's C code, checked by ``tests/test_randaugment.py`` on random images):

* Bit-exact: Invert, Flip, Identity, Posterize, Solarize, SolarizeAdd, AutoContrast, Equalize
  (integer LUTs / the same float64 arithmetic as the Python LUT code), Brightness, Color,
  Contrast, Sharpness (``Image.blend``'s float32 arithmetic and truncation, Pillow's RGB->L
  weights, ``ImageStat`` mean rounding, the SMOOTH 3x3 kernel in float32 in Pillow's summation
  order with unfiltered border pixels), Cutout (the rectangle's truncated, inclusive corners),
  ShearX/Y and Rotate (Pillow's 16.16 fixed-point nearest-neighbour affine, ``affine_fixed`` in
  ``libImaging/Geometry.c``, reproduced in integer arithmetic), TranslateX/Y (Pillow's
  ``ImagingScaleAffine``: float64 coordinates accumulated pixel by pixel, as here).
* Rotate's matrix (``cos``/``sin``/``round(., 15)``) is computed with torch float64 instead of
  CPython's libm and ``round``; these may differ by one ulp (1e-16), which changes the fixed-point
  coefficients only when one lies within ~1e-11 of a rounding boundary (never seen in the tests).

Deviations:

* Batched with per-sample values; the randomness (which op, sign flips, the Cutout centre) is not
  drawn from Python's ``random`` / numpy's global RNG inside each op but passed in (``v`` with its
  sign, ``cx``/``cy``); ``random_sign`` and ``cutout_centres`` draw them from a torch generator.
* Cutout on 1-channel images fills with 125 (the first component of the released colour
  (125, 123, 114)); PIL raises ``TypeError`` for a 3-tuple colour on an 'L' image.
* Posterize clamps the bit count to [1, 8] (PIL raises for bits > 8; the released range never
  exceeds 8). Solarize accepts any threshold (the released op asserts 0 <= v <= 256).
* Images larger than 32768 pixels on a side would take Pillow's float affine path instead of
  the fixed-point one; not reproduced. PIL's ``Image.blend`` and the SMOOTH filter are compiled
  without FMA contraction on x86-64; here each product and sum is its own torch op (do not
  ``torch.compile`` these functions if bit-exactness matters: fusion may contract to FMA).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ltcl.errors import UserError

__all__ = [
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "translate_x_abs",
    "translate_y_abs",
    "rotate",
    "auto_contrast",
    "invert",
    "equalize",
    "flip",
    "solarize",
    "solarize_add",
    "posterize",
    "contrast",
    "color",
    "brightness",
    "sharpness",
    "cutout",
    "cutout_abs",
    "identity",
    "AUGMENT_LIST",
    "SIGN_FLIP",
    "OPS",
    "op_value",
    "random_sign",
    "cutout_centres",
    "CUTOUT_COLOR",
]

CUTOUT_COLOR = (125, 123, 114)  # data/randaug.py:139


# --------------------------------------------------------------------------------------------
# helpers


def _check(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise UserError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"x must be uint8 (N, H, W, C) with C in (1, 3), got {x.dtype} {tuple(x.shape)}")
    return x


def _values(v: torch.Tensor | float | None, x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Per-sample values as a ``(N,)`` tensor of ``dtype`` on ``x``'s device."""
    if v is None:
        raise UserError("this op needs a value v")
    t = torch.as_tensor(v, device=x.device).to(dtype).reshape(-1)
    if t.numel() == 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise UserError(f"v must have one value per sample ({x.shape[0]}), got {t.numel()}")
    return t


def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``out[n, h, w, c] = lut[n, c, x[n, h, w, c]]``; ``lut`` is ``(N, C, 256)`` integer."""
    n, _, _, c = x.shape
    base = (torch.arange(n * c, device=x.device).reshape(n, 1, 1, c)) * 256
    idx = base + x.long()
    return lut.clamp(0, 255).to(torch.uint8).reshape(-1)[idx]


def _histogram(x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel 256-bin histograms ``(N, C, 256)`` int64 (PIL's ``histogram()``)."""
    n, _, _, c = x.shape
    base = (torch.arange(n * c, device=x.device).reshape(n, 1, 1, c)) * 256
    idx = (base + x.long()).reshape(-1)
    return torch.bincount(idx, minlength=n * c * 256).reshape(n, c, 256)


def _gather(x: torch.Tensor, xin: torch.Tensor, yin: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour sampling: ``out[n, y, x] = x[n, yin, xin]`` where inside, else 0 (PIL's fill)."""
    n, h, w, c = x.shape
    xin, yin = torch.broadcast_tensors(xin, yin)
    valid = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    idx = (yin.clamp(0, h - 1) * w + xin.clamp(0, w - 1)).reshape(n, h * w, 1).expand(n, h * w, c)
    out = torch.gather(x.reshape(n, h * w, c), 1, idx).reshape(n, h, w, c)
    return out * valid.unsqueeze(-1).to(torch.uint8)


def _fix(t: torch.Tensor) -> torch.Tensor:
    """Pillow's ``FIX(v) = FLOOR(v * 65536.0 + 0.5)`` (16.16 fixed point, Geometry.c ``affine_fixed``)."""
    return torch.floor(t * 65536.0 + 0.5).long()


def _affine_fixed(x: torch.Tensor, a: list[torch.Tensor]) -> torch.Tensor:
    """Pillow's nearest-neighbour ``ImagingTransformAffine`` fixed-point path (``affine_fixed``).

    ``a`` = the six AFFINE coefficients, each ``(N,)`` float64: output pixel (x, y) samples input
    ``(a0 (x + .5) + a1 (y + .5) + a2, a3 (x + .5) + a4 (y + .5) + a5)``, in Pillow's 16.16
    integer form: ``xin = (A2 + x A0 + y A1) >> 16`` with ``A2 = FIX(a2 + a0 / 2 + a1 / 2)``.
    """
    n, h, w, _ = x.shape
    a0, a1, a3, a4 = (_fix(a[i]) for i in (0, 1, 3, 4))
    a2 = _fix(a[2] + a[0] * 0.5 + a[1] * 0.5)
    a5 = _fix(a[5] + a[3] * 0.5 + a[4] * 0.5)
    xs = torch.arange(w, device=x.device).reshape(1, 1, w)
    ys = torch.arange(h, device=x.device).reshape(1, h, 1)

    def col(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(n, 1, 1)

    xx = col(a2) + xs * col(a0) + ys * col(a1)
    yy = col(a5) + xs * col(a3) + ys * col(a4)
    return _gather(x, torch.div(xx, 65536, rounding_mode="floor"), torch.div(yy, 65536, rounding_mode="floor"))


def _coord_run(start: torch.Tensor, count: int) -> torch.Tensor:
    """Pillow's ``ImagingScaleAffine`` positions: ``COORD(start + k)`` accumulated as in C.

    ``start`` ``(N,)`` float64; returns ``(N, count)`` int64, ``COORD(v) = -1 if v < 0 else int(v)``.
    """
    vals = []
    t = start
    for _ in range(count):
        vals.append(t)
        t = t + 1.0  # xo += a[0] (a[0] == 1.0), one rounding per step as in C
    s = torch.stack(vals, dim=1)
    return torch.where(s < 0, torch.full_like(s, -1.0), torch.floor(s)).long()


def _to_l(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L conversion (``L24``: ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``), ``(N, H, W, 1)`` int64."""
    if x.shape[-1] == 1:
        return x.long()
    xi = x.long()
    s = xi[..., 0] * 19595 + xi[..., 1] * 38470 + xi[..., 2] * 7471 + 0x8000
    return (s >> 16).unsqueeze(-1)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)`` (libImaging/Blend.c), float32 as in C.

    ``out = (UINT8) clip(in1 + alpha * (in2 - in1))``: the product and the sum are each rounded
    to float32, then truncated (clipped to [0, 255] when extrapolating).
    """
    d = degenerate.float()
    diff = image.float() - d  # exact: small integers
    alpha = factor.to(torch.float32).reshape(-1, 1, 1, 1)
    prod = diff * alpha
    s = d + prod
    return s.clamp_(0.0, 255.0).to(torch.uint8)  # float -> uint8 truncates toward zero


# --------------------------------------------------------------------------------------------
# geometric ops


def shear_x(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """ShearX (data/randaug.py:9-13): ``img.transform(img.size, AFFINE, (1, v, 0, 0, 1, 0))``.

    Nearest neighbour, fill 0. Output pixel (x, y) takes input ``(x + v * y, y)`` (pixel centres).
    Bit-exact (Pillow's fixed-point affine). ``v`` signed, released range [-0.6, 0.6].
    """
    x = _check(x)
    t = _values(v, x)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    return _affine_fixed(x, [one, t, zero, zero, one, zero])


def shear_y(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """ShearY (data/randaug.py:16-20): ``img.transform(img.size, AFFINE, (1, 0, 0, v, 1, 0))``. Bit-exact."""
    x = _check(x)
    t = _values(v, x)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    return _affine_fixed(x, [one, zero, zero, t, one, zero])


def translate_x_abs(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """TranslateXabs (data/randaug.py:31-35): ``transform(AFFINE, (1, 0, v, 0, 1, 0))``, v in pixels.

    With ``a[1] == a[3] == 0`` Pillow takes ``ImagingScaleAffine``: column x samples
    ``COORD(v + 0.5 + x)`` accumulated in float64, which is reproduced exactly. Output shifts left by v.
    """
    x = _check(x)
    n, h, w, _ = x.shape
    t = _values(v, x)
    xin = _coord_run(t + 0.5, w).reshape(n, 1, w)
    yin = torch.arange(h, device=x.device).reshape(1, h, 1).expand(n, h, 1)
    return _gather(x, xin, yin)


def translate_y_abs(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """TranslateYabs (data/randaug.py:46-50): ``transform(AFFINE, (1, 0, 0, 0, 1, v))``, v in pixels. Bit-exact."""
    x = _check(x)
    n, h, w, _ = x.shape
    t = _values(v, x)
    yin = _coord_run(t + 0.5, h).reshape(n, h, 1)
    xin = torch.arange(w, device=x.device).reshape(1, 1, w).expand(n, 1, w)
    return _gather(x, xin, yin)


def translate_x(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """TranslateX (data/randaug.py:23-28): ``v = v * img.size[0]`` (width) then TranslateXabs. Bit-exact.

    ``v`` signed fraction of the width, released range [-0.66, 0.66].
    """
    x = _check(x)
    return translate_x_abs(x, _values(v, x) * float(x.shape[2]))


def translate_y(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """TranslateY (data/randaug.py:38-43): ``v = v * img.size[1]`` (height) then TranslateYabs. Bit-exact."""
    x = _check(x)
    return translate_y_abs(x, _values(v, x) * float(x.shape[1]))


def rotate(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """Rotate (data/randaug.py:53-57): ``img.rotate(v)``, degrees counter-clockwise, nearest, fill 0.

    Follows ``Image.rotate``: ``angle = v % 360``; 0 -> copy, 180 -> ``ROTATE_180``, 90 / 270 on a
    square image -> ``ROTATE_90`` / ``ROTATE_270``; otherwise the matrix
    ``round(cos(-rad), 15), round(sin(-rad), 15), ...`` about the centre ``(W / 2, H / 2)`` and
    Pillow's fixed-point affine. Exact up to the matrix's float64 libm/round differences (module
    docstring). ``v`` signed, released range [-60, 60].
    """
    x = _check(x)
    n, h, w, _ = x.shape
    angle = torch.remainder(_values(v, x), 360.0)
    rad = -(angle * (math.pi / 180.0))  # -math.radians(angle)

    def round15(t: torch.Tensor) -> torch.Tensor:
        # n / 1e15 correctly rounded (a same-device divisor: CUDA divides by a CPU scalar via its reciprocal)
        return torch.div(torch.round(t * 1e15), torch.full_like(t, 1e15))

    cos, sin = torch.cos(rad), torch.sin(rad)
    m0, m1, m3, m4 = round15(cos), round15(sin), round15(-sin), round15(cos)
    cx, cy = w / 2, h / 2
    m2 = m0 * (-cx) + m1 * (-cy) + 0.0 + cx
    m5 = m3 * (-cx) + m4 * (-cy) + 0.0 + cy
    out = _affine_fixed(x, [m0, m1, m2, m3, m4, m5])

    def pick(mask: torch.Tensor, img: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.reshape(n, 1, 1, 1), img, res)

    out = pick(angle == 0, x, out)
    out = pick(angle == 180, x.flip(1, 2), out)
    if h == w:
        out = pick(angle == 90, torch.rot90(x, 1, dims=(1, 2)), out)
        out = pick(angle == 270, torch.rot90(x, -1, dims=(1, 2)), out)
    return out


def flip(x: torch.Tensor, v: torch.Tensor | float | None = None) -> torch.Tensor:
    """Flip (data/randaug.py:72-73, not in augment_list): ``ImageOps.mirror`` (left-right). ``v`` unused."""
    return _check(x).flip(2)


def identity(x: torch.Tensor, v: torch.Tensor | float | None = None) -> torch.Tensor:
    """Identity (data/randaug.py:155-156, commented out of augment_list). ``v`` unused."""
    return _check(x).clone()


# --------------------------------------------------------------------------------------------
# LUT ops


def invert(x: torch.Tensor, v: torch.Tensor | float | None = None) -> torch.Tensor:
    """Invert (data/randaug.py:64-65): ``ImageOps.invert`` (``255 - x``). ``v`` unused. Bit-exact."""
    return 255 - _check(x)


def auto_contrast(x: torch.Tensor, v: torch.Tensor | float | None = None) -> torch.Tensor:
    """AutoContrast (data/randaug.py:60-61): ``ImageOps.autocontrast(img)`` (cutoff 0), per channel.

    ``lo``/``hi`` = lowest/highest occupied bin; ``hi <= lo`` -> identity, else
    ``lut[i] = clip(int(i * scale + offset), 0, 255)`` with ``scale = 255.0 / (hi - lo)``,
    ``offset = -lo * scale`` in float64 as Python computes it. ``v`` unused. Bit-exact.
    """
    x = _check(x)
    hist = _histogram(x)
    occ = hist > 0
    bins = torch.arange(256, device=x.device)
    lo = torch.where(occ, bins, 256).amin(-1)
    hi = torch.where(occ, bins, -1).amax(-1)
    span = (hi - lo).clamp(min=1).double()
    # a true division: ``255.0 / tensor`` is reciprocal-then-multiply in torch, off by an ulp
    scale = torch.div(torch.full_like(span, 255.0), span)
    offset = (-lo.double()) * scale
    lut = torch.trunc(bins.double() * scale.unsqueeze(-1) + offset.unsqueeze(-1)).long()
    lut = torch.where((hi <= lo).unsqueeze(-1), bins, lut)
    return _apply_lut(x, lut)


def equalize(x: torch.Tensor, v: torch.Tensor | float | None = None) -> torch.Tensor:
    """Equalize (data/randaug.py:68-69): ``ImageOps.equalize(img)``, per channel.

    ``step = (sum(h) - h[last occupied]) // 255``; fewer than two occupied bins or ``step == 0``
    -> identity; else ``lut[i] = (step // 2 + sum(h[:i])) // step`` (clipped to 255 by
    ``Image.point``). Integer arithmetic; ``v`` unused. Bit-exact.
    """
    x = _check(x)
    hist = _histogram(x)
    occ = hist > 0
    bins = torch.arange(256, device=x.device)
    last = torch.where(occ, bins, -1).amax(-1, keepdim=True).clamp(min=0)
    h_last = torch.gather(hist, -1, last).squeeze(-1)
    total = hist.sum(-1)
    step = (total - h_last) // 255
    ident = (occ.sum(-1) <= 1) | (step == 0)
    safe = step.clamp(min=1).unsqueeze(-1)
    excl = torch.cumsum(hist, -1) - hist
    lut = torch.div(safe // 2 + excl, safe, rounding_mode="floor")
    lut = torch.where(ident.unsqueeze(-1), bins, lut)
    return _apply_lut(x, lut)


def solarize(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """Solarize (data/randaug.py:76-78): ``ImageOps.solarize(img, v)``: ``i if i < v else 255 - i``.

    ``v`` the threshold (released range [0, 110]); compared as Python compares int and float. Bit-exact.
    """
    x = _check(x)
    t = _values(v, x)
    # for integer i, i < t  <=>  i < ceil(t); clamp keeps it in int16
    thr = torch.ceil(t).clamp(-1.0, 256.0).to(torch.int16).reshape(-1, 1, 1, 1)
    return torch.where(x.to(torch.int16) < thr, x, 255 - x)


def solarize_add(x: torch.Tensor, v: torch.Tensor | float, threshold: float = 128) -> torch.Tensor:
    """SolarizeAdd (data/randaug.py:81-87, not in augment_list): ``uint8(clip(img + v, 0, 255))`` then
    ``ImageOps.solarize(., threshold)``. The addition is numpy's (float64 for a float ``v``, then
    truncation). Bit-exact. (The released function uses ``np.int``, gone from numpy >= 1.24.)
    """
    x = _check(x)
    t = _values(v, x).reshape(-1, 1, 1, 1)
    added = (x.double() + t).clamp_(0.0, 255.0).to(torch.uint8)
    return solarize(added, threshold)


def posterize(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """Posterize (data/randaug.py:90-93): ``bits = max(1, int(v))``; ``ImageOps.posterize(img, bits)``
    keeps the top ``bits`` bits (``i & ~(2 ** (8 - bits) - 1)``).

    Released range [4, 8]: larger magnitude = more bits = weaker (8 = identity). Bits clamped to
    [1, 8] (PIL raises above 8). Bit-exact.
    """
    x = _check(x)
    bits = torch.trunc(_values(v, x)).clamp(1.0, 8.0).long()
    shift = (8 - bits).reshape(-1, 1, 1, 1)
    mask = ((255 >> shift) << shift).to(torch.uint8)
    return x & mask


# --------------------------------------------------------------------------------------------
# ImageEnhance ops


def brightness(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """Brightness (data/randaug.py:106-108): ``ImageEnhance.Brightness(img).enhance(v)`` =
    ``Image.blend(black, img, v)``. Released range [0.1, 1.9]. Bit-exact."""
    x = _check(x)
    return _blend(torch.zeros_like(x), x, _values(v, x))


def color(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """Color (data/randaug.py:101-103): ``ImageEnhance.Color(img).enhance(v)`` =
    ``Image.blend(img.convert('L').convert(img.mode), img, v)``; the identity on 1-channel images
    (the degenerate is the image). Released range [0.1, 1.9]. Bit-exact."""
    x = _check(x)
    gray = _to_l(x).to(torch.uint8).expand(x.shape)
    return _blend(gray, x, _values(v, x))


def contrast(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """Contrast (data/randaug.py:96-98): ``ImageEnhance.Contrast(img).enhance(v)`` =
    ``Image.blend(constant mean, img, v)``, mean = ``int(ImageStat.Stat(img.convert('L')).mean[0] + 0.5)``
    (computed exactly in integers: ``(2 * sum + count) // (2 * count)``). Released range [0.1, 1.9]. Bit-exact."""
    x = _check(x)
    n, h, w, _ = x.shape
    s = _to_l(x).reshape(n, -1).sum(-1)
    cnt = h * w
    mean = torch.div(2 * s + cnt, 2 * cnt, rounding_mode="floor").to(torch.uint8)
    return _blend(mean.reshape(n, 1, 1, 1).expand(x.shape), x, _values(v, x))


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``img.filter(ImageFilter.SMOOTH)``: kernel ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13``.

    libImaging/Filter.c ``ImagingFilter3x3``: kernel entries are float32 ``k / 13``; per interior
    pixel ``ss = 0.5``, then ``ss += (p[x-1] k0 + p[x] k1) + p[x+1] k2`` for rows y+1, y, y-1 in
    that order (float32, one rounding per op); ``clip8`` truncates. Border rows/columns are copied.
    """
    if x.shape[1] < 3 or x.shape[2] < 3:
        return x.clone()
    # float32 k / 13 (Pillow divides the float32 kernel by the divisor); exact as Python floats
    k1, k5 = (torch.tensor([1.0, 5.0], dtype=torch.float32) / torch.tensor([13.0, 13.0], dtype=torch.float32)).tolist()
    f = x.float()

    def row(r: torch.Tensor, mid: float) -> torch.Tensor:
        return (r[:, :, :-2] * k1 + r[:, :, 1:-1] * mid) + r[:, :, 2:] * k1

    ss = row(f[:, 2:], k1) + 0.5  # 0.5 + t == t + 0.5 (addition commutes exactly)
    ss = ss + row(f[:, 1:-1], k5)
    ss = ss + row(f[:, :-2], k1)
    out = x.clone()
    out[:, 1:-1, 1:-1] = ss.clamp_(0.0, 255.0).to(torch.uint8)
    return out


def sharpness(x: torch.Tensor, v: torch.Tensor | float) -> torch.Tensor:
    """Sharpness (data/randaug.py:111-113): ``ImageEnhance.Sharpness(img).enhance(v)`` =
    ``Image.blend(img.filter(SMOOTH), img, v)``. Released range [0.1, 1.9]. Bit-exact."""
    x = _check(x)
    return _blend(_smooth(x), x, _values(v, x))


# --------------------------------------------------------------------------------------------
# Cutout


def cutout_abs(x: torch.Tensor, v: torch.Tensor | float, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """CutoutAbs (data/randaug.py:125-143): a filled rectangle of side ``v`` pixels at centre (cx, cy).

    ``v < 0`` -> unchanged; ``x0 = int(max(0, cx - v / 2))``, ``y0`` likewise, ``x1 = min(W, x0 + v)``,
    ``y1 = min(H, y0 + v)``; ``ImageDraw.rectangle((x0, y0, x1, y1), fill)`` fills columns
    ``x0 .. int(x1)`` and rows ``y0 .. int(y1)`` inclusive (clipped), colour (125, 123, 114)
    (125 on 1-channel images: see the module's Deviations). ``cx``/``cy`` per-sample, released
    ``np.random.uniform(w)`` / ``uniform(h)`` (see ``cutout_centres``). Bit-exact.
    """
    x = _check(x)
    n, h, w, c = x.shape
    t = _values(v, x)
    cxs, cys = _values(cx, x), _values(cy, x)
    x0 = torch.floor(torch.clamp(cxs - t / 2.0, min=0.0))
    y0 = torch.floor(torch.clamp(cys - t / 2.0, min=0.0))
    x1 = torch.floor(torch.clamp(x0 + t, max=float(w)))
    y1 = torch.floor(torch.clamp(y0 + t, max=float(h)))
    xs = torch.arange(w, device=x.device, dtype=torch.float64).reshape(1, 1, w)
    ys = torch.arange(h, device=x.device, dtype=torch.float64).reshape(1, h, 1)

    def col(u: torch.Tensor) -> torch.Tensor:
        return u.reshape(n, 1, 1)

    inside = (xs >= col(x0)) & (xs <= col(x1)) & (ys >= col(y0)) & (ys <= col(y1)) & col(t >= 0)
    fill = torch.tensor(CUTOUT_COLOR[:c], dtype=torch.uint8, device=x.device).reshape(1, 1, 1, c)
    return torch.where(inside.unsqueeze(-1), fill, x)


def cutout(x: torch.Tensor, v: torch.Tensor | float, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Cutout (data/randaug.py:116-122): ``v <= 0`` -> unchanged, else CutoutAbs with side
    ``v * img.size[0]`` (the width, for both sides). Released range [0, 0.4]. Bit-exact."""
    x = _check(x)
    t = _values(v, x)
    side = torch.where(t <= 0, torch.full_like(t, -1.0), t * float(x.shape[2]))
    return cutout_abs(x, side, cx, cy)


def cutout_centres(n: int, h: int, w: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Cutout centres distributed as the released ``np.random.uniform(w)``.

    ``np.random.uniform(w)`` is ``uniform(low=w, high=1.0)`` = ``w + (1 - w) * U``, i.e. in
    ``(1, w]`` (not ``[0, w)``); the same for ``h``. Drawn from ``generator`` (torch's global one if None).
    """
    u = torch.rand(2, n, generator=generator, dtype=torch.float64, device=device)
    return w + (1.0 - w) * u[0], h + (1.0 - h) * u[1]


# --------------------------------------------------------------------------------------------
# the released list

Op = Callable[..., torch.Tensor]

OPS: dict[str, Op] = {
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "TranslateXabs": translate_x_abs,
    "TranslateYabs": translate_y_abs,
    "Rotate": rotate,
    "AutoContrast": auto_contrast,
    "Invert": invert,
    "Equalize": equalize,
    "Flip": flip,
    "Solarize": solarize,
    "SolarizeAdd": solarize_add,
    "Posterize": posterize,
    "Contrast": contrast,
    "Color": color,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "Cutout": cutout,
    "CutoutAbs": cutout_abs,
    "Identity": identity,
}

# data/randaug.py:159-182, in order: (name, minval, maxval)
AUGMENT_LIST: tuple[tuple[str, float, float], ...] = (
    ("ShearX", 0.0, 0.6),
    ("ShearY", 0.0, 0.6),
    ("TranslateX", 0.0, 0.66),
    ("TranslateY", 0.0, 0.66),
    ("Rotate", 0.0, 60.0),
    ("AutoContrast", 0.0, 1.0),
    ("Invert", 0.0, 1.0),
    ("Equalize", 0.0, 1.0),
    ("Solarize", 0.0, 110.0),
    ("Posterize", 4.0, 8.0),
    ("Contrast", 0.1, 1.9),
    ("Color", 0.1, 1.9),
    ("Brightness", 0.1, 1.9),
    ("Sharpness", 0.1, 1.9),
    ("Cutout", 0.0, 0.4),
)

# ops whose released function negates v with probability 1/2 (`if random.random() > 0.5: v = -v`)
SIGN_FLIP = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXabs", "TranslateYabs", "Rotate"})


def op_value(m: torch.Tensor | float, minval: float, maxval: float) -> torch.Tensor:
    """``val = (float(m) / 30) * float(maxval - minval) + minval`` (data/randaug.py:194, :210), float64."""
    mt = torch.as_tensor(m, dtype=torch.float64)
    return torch.div(mt, torch.full_like(mt, 30.0)) * float(maxval - minval) + minval


def random_sign(v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Negate each value with probability 1/2 (the released ``if random.random() > 0.5: v = -v``)."""
    u = torch.rand(v.shape, generator=generator, dtype=torch.float64, device=v.device)
    return torch.where(u > 0.5, -v, v)

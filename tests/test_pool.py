"""Tests for ltcl.data.pool: the OOD pool builders and .npy persistence."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ltcl.data import pool as pool_mod
from ltcl.data.pool import CROP_SCALE, LUMA, build_pool, bundled_photos, open_pool, save_pool, to_channels


@pytest.fixture(scope="module")
def rgb_pool():
    return build_pool("bundled", size=300, image_size=32, channels=3, seed=7)


def test_bundled_photos_offline():
    photos = bundled_photos()
    names = [n for n, _ in photos]
    assert len(photos) >= 15
    assert "skimage.astronaut" in names and "sklearn.china" in names and "sklearn.flower" in names
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for _, p in photos)


def test_bundled_shape_dtype_determinism(rgb_pool):
    assert rgb_pool.shape == (300, 32, 32, 3) and rgb_pool.dtype == np.uint8
    again = build_pool("bundled", size=300, image_size=32, channels=3, seed=7)
    np.testing.assert_array_equal(rgb_pool, again)
    other = build_pool("bundled", size=300, image_size=32, channels=3, seed=8)
    assert not np.array_equal(rgb_pool, other)
    assert rgb_pool.std() > 20  # real image content, not blank


def test_bundled_grayscale_is_luma_of_colour(rgb_pool):
    gray = build_pool("bundled", size=300, image_size=32, channels=1, seed=7)
    assert gray.shape == (300, 32, 32, 1)
    # same boxes; luma is linear so it commutes with the resampling (up to uint8 rounding)
    luma = rgb_pool.astype(np.float64) @ LUMA.astype(np.float64)
    assert np.abs(gray[..., 0] - luma).max() <= 1.5


def reference_crops(size: int, image_size: int, seed: int, first: int) -> np.ndarray:
    """One PIL crop + antialiased resize for each of the first samples, replaying build_pool's draws."""
    photos = bundled_photos()
    rng = np.random.default_rng(seed)
    photo_id = rng.integers(0, len(photos), size=size)
    frac = rng.uniform(CROP_SCALE[0], CROP_SCALE[1], size=size)
    u, v = rng.random(size), rng.random(size)
    flip = rng.random(size) < 0.5
    out = []
    for i in range(first):
        photo = photos[photo_id[i]][1]
        h, w = photo.shape[:2]
        side = frac[i] * min(h, w)
        x0, y0 = u[i] * (w - side), v[i] * (h - side)
        im = Image.fromarray(photo).resize((image_size, image_size), Image.BILINEAR,
                                           box=(x0, y0, x0 + side, y0 + side))
        if flip[i]:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(np.asarray(im))
    return np.stack(out)


def test_bundled_matches_pil_reference(rgb_pool):
    ref = reference_crops(300, 32, 7, first=60).astype(np.float64)
    ours = rgb_pool[:60].astype(np.float64)
    err = np.abs(ours - ref).mean()
    assert err < 4.0, err
    # sensitivity: a half-box shift of the reference is much further away
    shifted = np.abs(ours - np.roll(ref, 16, axis=2)).mean()
    assert shifted > 3 * err


def test_to_channels():
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    g = to_channels(x, 1)
    ref = np.rint(0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])
    assert np.abs(g[..., 0] - ref).max() <= 1
    assert to_channels(g, 3).shape == (5, 4, 4, 3)
    assert to_channels(x, 3) is x
    with pytest.raises(ValueError, match="channels"):
        to_channels(x, 2)


def test_save_open_pool_memmap(tmp_path, rgb_pool):
    path = tmp_path / "pool.npy"
    save_pool(path, rgb_pool, chunk=64)
    back = open_pool(path)
    assert isinstance(back, np.memmap)
    np.testing.assert_array_equal(back, rgb_pool)
    via_build = build_pool("npy", size=100, image_size=32, channels=3, root=path)
    assert isinstance(via_build, np.memmap) and via_build.shape == (100, 32, 32, 3)
    with pytest.raises(ValueError, match="expected"):
        build_pool("npy", image_size=28, channels=3, root=path)
    with pytest.raises(ValueError, match="larger"):
        build_pool("npy", size=301, image_size=32, channels=3, root=path)
    assert [p.name for p in tmp_path.iterdir()] == ["pool.npy"]


def test_open_pool_validates(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        open_pool(tmp_path / "bad.npy")
    np.save(tmp_path / "f.npy", np.zeros((3, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        open_pool(tmp_path / "f.npy")
    with pytest.raises(ValueError, match="uint8"):
        save_pool(tmp_path / "g.npy", np.zeros((3, 4, 4, 3), np.float32))


def test_folder_pool_recursive_and_safe(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for i, sub in enumerate(["a", "a/b", "c"]):
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(d / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(d / f"g{i}.jpg")
    (root / "c" / "broken.png").write_bytes(b"not an image")
    x = build_pool("folder", image_size=16, channels=3, root=root)
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.uint8
    assert build_pool("folder", image_size=8, channels=1, root=root).shape == (6, 8, 8, 1)
    sub = build_pool("folder", size=3, image_size=8, channels=3, root=root, seed=1)
    assert sub.shape == (3, 8, 8, 3)
    full = build_pool("folder", size=6, image_size=8, channels=3, root=root, seed=2)  # broken file replaced
    np.testing.assert_array_equal(full, build_pool("folder", image_size=8, channels=3, root=root))
    with pytest.raises(ValueError, match="only 6 readable"):
        build_pool("folder", size=7, image_size=8, channels=3, root=root)
    (root / "escape").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match="escape"):
        build_pool("folder", image_size=8, channels=3, root=root)


def test_source_pool_drops_labels():
    """source:<name>: ``size`` of the source's train images without their labels: one uint8 image
    array (no (x, y) pair, no label channel), every pool image one of the train images (gray
    replicated to 3 channels), drawn without replacement."""
    from collections import Counter

    from ltcl.data.sources import load_source

    x = build_pool("source:digits", size=50, image_size=16, channels=3, seed=0)
    assert type(x) is np.ndarray and x.shape == (50, 16, 16, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, np.repeat(x[..., :1], 3, axis=-1))
    train = load_source("digits", image_size=16).x_train
    assert train.shape[1:] == (16, 16, 1)
    available = Counter(im.tobytes() for im in train)
    taken = Counter(im[..., :1].tobytes() for im in x)
    assert all(n <= available[key] for key, n in taken.items())  # train images, none taken twice


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown pool source"):
        build_pool("imagenet", size=3)
    with pytest.raises(ValueError, match="size is required"):
        build_pool("bundled")
    with pytest.raises(ValueError, match="channels"):
        build_pool("bundled", size=3, channels=4)
    with pytest.raises(ValueError, match="image_size"):
        build_pool("bundled", size=3, image_size=0)


def test_missing_photo_is_skipped(monkeypatch):
    monkeypatch.setattr(pool_mod, "SKIMAGE_PHOTOS", ("camera", "no_such_photo"))
    bundled_photos.cache_clear()
    try:
        names = [n for n, _ in bundled_photos()]
        assert names[0] == "skimage.camera" and "skimage.no_such_photo" not in names
    finally:
        bundled_photos.cache_clear()

"""Tests for ltcl.data.pool: the OOD pool builders and .npy persistence."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from ltcl.data import pool as pool_mod
from ltcl.data.folderpool import folder_pool
from ltcl.data.pool import LUMA, build_pool, bundled_photos, open_pool, save_pool, to_channels
from ltcl.params import OODParams

CROP_SCALE = OODParams().crop_scale  # the schema default (ood.crop_scale)


@pytest.fixture(scope="module")
def rgb_pool():
    return build_pool("bundled", size=300, image_size=32, channels=3, seed=7, crop_scale=CROP_SCALE)


def test_bundled_photos_offline():
    photos = bundled_photos()
    names = [n for n, _ in photos]
    assert len(photos) >= 15
    assert "skimage.astronaut" in names and "sklearn.china" in names and "sklearn.flower" in names
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for _, p in photos)


def test_bundled_shape_dtype_determinism(rgb_pool):
    assert rgb_pool.shape == (300, 32, 32, 3) and rgb_pool.dtype == np.uint8
    again = build_pool("bundled", size=300, image_size=32, channels=3, seed=7, crop_scale=CROP_SCALE)
    np.testing.assert_array_equal(rgb_pool, again)
    other = build_pool("bundled", size=300, image_size=32, channels=3, seed=8, crop_scale=CROP_SCALE)
    assert not np.array_equal(rgb_pool, other)
    assert rgb_pool.std() > 20  # real image content, not blank


def test_bundled_grayscale_is_luma_of_colour(rgb_pool):
    gray = build_pool("bundled", size=300, image_size=32, channels=1, seed=7, crop_scale=CROP_SCALE)
    assert gray.shape == (300, 32, 32, 1)
    # same boxes; luma is linear so it commutes with the resampling (up to uint8 rounding)
    luma = rgb_pool.astype(np.float64) @ LUMA.astype(np.float64)
    assert np.abs(gray[..., 0] - luma).max() <= 1.5


def reference_crops(size: int, image_size: int, seed: int, first: int, crop_scale=CROP_SCALE) -> np.ndarray:
    """One PIL crop + antialiased resize for each of the first samples, replaying build_pool's draws."""
    photos = bundled_photos()
    rng = np.random.default_rng(seed)
    photo_id = rng.integers(0, len(photos), size=size)
    frac = rng.uniform(crop_scale[0], crop_scale[1], size=size)
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


# sha256 of build_pool("bundled", ...).tobytes() computed with the implementation before
# ood.crop_scale existed (the constant CROP_SCALE = (0.1, 0.6) in ltcl.data.pool)
BUNDLED_SHA256 = {
    (300, 32, 3, 7): "7a4b5b1882a157356a4c792de784bf1ba78eb87c22a8fb867deaddb1fc919eeb",
    (200, 28, 1, 0): "55e3cdf41ec8c00e7e8c3761e001bd0445f58f892a24605e6c69c026057db52a",
}


def test_bundled_pool_bytes_unchanged_at_default_crop_scale(rgb_pool):
    """At the schema default of ood.crop_scale the bundled pool is byte for byte the pool built
    before the param existed (colour and luma), so existing runs keep their pool."""
    assert hashlib.sha256(rgb_pool.tobytes()).hexdigest() == BUNDLED_SHA256[(300, 32, 3, 7)]
    gray = build_pool("bundled", size=200, image_size=28, channels=1, seed=0, crop_scale=CROP_SCALE)
    assert hashlib.sha256(gray.tobytes()).hexdigest() == BUNDLED_SHA256[(200, 28, 1, 0)]


def test_bundled_pool_reads_crop_scale():
    """Another ood.crop_scale gives other crops, each the PIL crop of the box drawn in that range."""
    scale = (0.7, 0.9)
    ours = build_pool("bundled", size=40, image_size=32, channels=3, seed=7, crop_scale=scale).astype(np.float64)
    ref = reference_crops(40, 32, 7, first=40, crop_scale=scale).astype(np.float64)
    default_ref = reference_crops(40, 32, 7, first=40).astype(np.float64)
    err = np.abs(ours - ref).mean()
    assert err < 4.0, err
    assert np.abs(ours - default_ref).mean() > 3 * err


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
    via_build = build_pool("npy", size=100, image_size=32, channels=3, root=path, seed=0)
    assert isinstance(via_build, np.memmap) and via_build.shape == (100, 32, 32, 3)
    with pytest.raises(ValueError, match=r"ood.path=.*expected \(28, 28, 3\).*data.image_size"):
        build_pool("npy", image_size=28, channels=3, root=path, seed=0)
    with pytest.raises(ValueError, match=r"ood.pool_size=301 is larger than the 300 images in ood.path"):
        build_pool("npy", size=301, image_size=32, channels=3, root=path, seed=0)
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


# --------------------------------------------------------------------------- folder pools
# (file name, HxW, format, colour): large photos of mixed aspect ratios, written as real files
PHOTOS = [
    ("wide.jpg", (900, 1600), "JPEG", "RGB"),
    ("sub/tall.png", (1400, 700), "PNG", "RGB"),
    ("sub/deeper/pano.jpg", (400, 2400), "JPEG", "RGB"),
    ("gray.png", (1000, 1200), "PNG", "L"),
]


def write_photos(root, photos=PHOTOS):
    """Bundled photos resized (so they carry real image content) to each size, saved as files."""
    sources = [p for _, p in bundled_photos()[:len(photos)]]
    for (name, (h, w), fmt, mode), src in zip(photos, sources):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(src).convert(mode).resize((w, h), Image.BICUBIC).save(path, fmt, quality=92)
    return root


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"))


def folder_crops(root, size, image_size=24, channels=3, seed=0, crop_scale=CROP_SCALE):
    from ltcl.data.folderpool import folder_crops as cut

    out = np.empty((size, image_size, image_size, channels), np.uint8)
    made = cut(root, size, image_size, channels, seed, crop_scale, out)
    return out, made


def pil_crop(photo: Image.Image, box, flip: bool, image_size: int) -> np.ndarray:
    """PIL's antialiased bilinear resize of the box (x0, y0, x0 + w, y0 + h)."""
    im = photo.resize((image_size, image_size), Image.BILINEAR, box=tuple(float(b) for b in box))
    return np.asarray(im.transpose(Image.FLIP_LEFT_RIGHT) if flip else im, dtype=np.float64)


def test_folder_pool_square_crops_of_each_photo(photo_dir):
    """Every row is the square box the code drew, cut from the right photo (read back with PIL,
    gray replicated to RGB) and resized with antialiasing: PIL's crop + bilinear resize of that
    box within 4 grey levels on average, and much further from the same box stretched along the
    photo's long side (what a squash of the photo to a square gives)."""
    size, s = 48, 24
    x, made = folder_crops(photo_dir, size, s, seed=3)
    assert x.shape == (size, s, s, 3) and x.dtype == np.uint8
    assert [made.name(i) for i in range(len(made.paths))] == sorted(n for n, *_ in PHOTOS)
    errs, stretched = [], []
    for row in range(size):
        path = made.paths[made.file_of[row]]
        with Image.open(path) as im:
            photo = im.convert("RGB")
        w, h = photo.size
        x0, y0, side = made.boxes[row]
        short = min(w, h)
        assert CROP_SCALE[0] * short - 1e-9 <= side <= CROP_SCALE[1] * short + 1e-9
        assert 0 <= x0 and x0 + side <= w and 0 <= y0 and y0 + side <= h  # inside the photo
        ref = pil_crop(photo, (x0, y0, x0 + side, y0 + side), made.flip[row], s)
        errs.append(np.abs(x[row] - ref).mean())
        a = max(w, h) / short  # the squash: the box's long-side extent scaled by the aspect ratio
        if w >= h:
            sw = min(side * a, w)
            box = (min(x0, w - sw), y0, min(x0, w - sw) + sw, y0 + side)
        else:
            sh = min(side * a, h)
            box = (x0, min(y0, h - sh), x0 + side, min(y0, h - sh) + sh)
        stretched.append(np.abs(x[row] - pil_crop(photo, box, made.flip[row], s)).mean())
    errs, stretched = np.array(errs), np.array(stretched)
    assert errs.mean() < 4.0 and errs.max() < 8.0, (errs.mean(), errs.max())
    assert stretched.mean() > 3 * errs.mean(), (stretched.mean(), errs.mean())
    assert made.flip.any() and not made.flip.all()


def test_folder_pool_size_balance_and_seed(photo_dir, tmp_path):
    """Exactly ood.pool_size crops, shared evenly (4 photos, 42 crops: 11, 11, 10, 10, the two
    extra crops going to a seeded pair); with more files than crops a seeded subset gives one
    each.  Same seed: identical bytes, also when written straight into the pool file; another
    seed: other crops."""
    from ltcl.data.folderpool import write_folder_pool

    x, made = folder_crops(photo_dir, 42, 16, seed=5)
    counts = np.bincount(made.file_of, minlength=4)
    assert sorted(counts.tolist()) == [10, 10, 11, 11]
    assert made.crops == {i: int(counts[i]) for i in range(4)}
    assert np.array_equal(folder_pool(photo_dir, 42, 16, 3, 5, CROP_SCALE), x)
    mm, again = write_folder_pool(photo_dir, 42, 16, 3, 5, CROP_SCALE, tmp_path / "pool.npy")
    assert isinstance(mm, np.memmap) and np.array_equal(mm, x)
    other, made_other = folder_crops(photo_dir, 42, 16, seed=6)
    assert not np.array_equal(other, x)
    extra_files = {frozenset(np.flatnonzero(np.bincount(m.file_of, minlength=4) == 11))
                   for m in (made, made_other, folder_crops(photo_dir, 42, 16, seed=7)[1])}
    assert len(extra_files) > 1  # the extra crops' files follow the seed
    subsets = {frozenset(folder_crops(photo_dir, 3, 8, seed=seed)[1].crops) for seed in range(6)}
    assert all(len(sub) == 3 for sub in subsets) and len(subsets) > 1  # one crop each of 3 of the 4 files
    x1, made1 = folder_crops(photo_dir, 3, 8, seed=1)
    assert set(made1.crops.values()) == {1}


def test_folder_pool_grayscale_id_set(photo_dir):
    """A grayscale ID set gets the luma of the colour crops (the bundled pool's rule)."""
    rgb, _ = folder_crops(photo_dir, 12, 16, channels=3, seed=2)
    gray, _ = folder_crops(photo_dir, 12, 16, channels=1, seed=2)
    assert gray.shape == (12, 16, 16, 1)
    assert np.abs(gray[..., 0] - rgb.astype(np.float64) @ LUMA.astype(np.float64)).max() <= 1.5


def test_folder_pool_skips_unreadable_files(tmp_path, caplog):
    """Undecodable files (garbage, a truncated JPEG) are skipped with a warning and counted; the
    readable photos take their share, so the pool still holds ood.pool_size crops; with none
    readable the error names ood.path."""
    import logging

    root = write_photos(tmp_path / "p", PHOTOS[:2])
    (root / "broken.png").write_bytes(b"not an image")
    full = (root / "wide.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(full[:len(full) // 3])
    with caplog.at_level(logging.WARNING):
        x, made = folder_crops(root, 30, 8, seed=0)
    assert {made.name(i) for i in made.skipped} == {"broken.png", "cut.jpg"}
    assert {made.name(i) for i in made.crops} == {"wide.jpg", "sub/tall.png"}
    assert sum(made.crops.values()) == 30 and len(x) == 30
    assert {made.name(i) for i in np.unique(made.file_of)} == {"wide.jpg", "sub/tall.png"}
    assert "broken.png" in caplog.text and "cut.jpg" in caplog.text
    rec = made.record()
    assert rec["skipped"] == 2 and rec["skipped_files"] == ["broken.png", "cut.jpg"]
    assert rec["files_used"] == 2 and sum(n for _, n in rec["files"]) == 30
    # the last file of the order unreadable: the readable ones are cut again, still exactly 30
    for seed in range(8):
        assert sum(folder_crops(root, 30, 8, seed=seed)[1].crops.values()) == 30
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"ood.path=.*none of its 1 image files could be decoded"):
        folder_crops(bad, 5, 8)


def test_folder_pool_messages_name_params(tmp_path, photo_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"ood.path=.* is not a folder"):
        folder_pool(tmp_path / "nope", 5, 8, 3, 0, CROP_SCALE)
    with pytest.raises(ValueError, match=r"ood.path=.* holds no image files"):
        folder_pool(tmp_path / "empty", 5, 8, 3, 0, CROP_SCALE)
    with pytest.raises(ValueError, match=r"ood.pool_size must be a positive int"):
        folder_pool(photo_dir, None, 8, 3, 0, CROP_SCALE)
    with pytest.raises(ValueError, match=r"ood.pool_size is required"):
        build_pool("bundled", crop_scale=CROP_SCALE, image_size=32, seed=0)
    with pytest.raises(ValueError, match=r"ood.crop_scale must be \[lo, hi\] with 0 < lo <= hi <= 1"):
        folder_pool(photo_dir, 5, 8, 3, 0, (0.6, 0.1))
    with pytest.raises(ValueError, match=r"ood.crop_scale is required"):
        build_pool("bundled", size=5, image_size=32, seed=0)
    with pytest.raises(ValueError, match=r"ood.path=.*no such .npy file"):
        build_pool("npy", root=tmp_path / "none.npy", image_size=32, seed=0)
    with pytest.raises(ValueError, match=r"ood.pool_size=5000 is larger than the \d+ images of source digits "
                                         r"\(ood.pool_source\); lower ood.pool_size"):
        build_pool("source:digits", size=5000, image_size=8, seed=0)
    with pytest.raises(ValueError, match=r"unknown pool source 'imagenet' \(ood.source\)"):
        build_pool("imagenet", size=3, image_size=32, seed=0)
    link_root = tmp_path / "links"
    link_root.mkdir()
    (link_root / "escape").symlink_to(photo_dir, target_is_directory=True)
    with pytest.raises(ValueError, match=r"ood.path=.*escape"):
        folder_pool(link_root, 5, 8, 3, 0, CROP_SCALE)


@pytest.mark.parametrize("scale", [[0.7, 0.2], [0.0, 0.5], [0.5, 1.2]])
def test_crop_scale_param_validated(scale):
    from ltcl.params import ParamsError, validate

    with pytest.raises(ParamsError, match=r"ood.crop_scale: must be \[lo, hi\] with 0 < lo <= hi <= 1"):
        validate({"ood": {"crop_scale": scale}})
    assert validate({"ood": {"crop_scale": [0.2, 0.2]}}).ood.crop_scale == (0.2, 0.2)


def stage_cfg(**ood):
    return OODParams(strategy="random", budget=10, **ood)


def write_image_json(lt_dir, shape):
    from ltcl.io import write_json

    lt_dir.mkdir(parents=True, exist_ok=True)
    write_json(lt_dir / "image.json", {"image_shape": list(shape)})
    return lt_dir


def test_ood_pool_stage_folder(tmp_path, photo_dir):
    """The stage cuts ood.pool_size crops of the folder into pool.npy (the same bytes as the
    in-memory folder_pool) and pool.json names the files used, their crops and the crop scale."""
    from ltcl.io import read_json
    from ltcl.pipeline import ood_pool

    lt = write_image_json(tmp_path / "lt", (12, 12, 1))
    cfg = stage_cfg(source="folder", path=str(photo_dir), pool_size=50, pool_seed=4, crop_scale=(0.2, 0.5))
    pool = ood_pool.run(cfg, lt, tmp_path / "ood" / "pool.npy")
    ref = folder_pool(photo_dir, 50, 12, 1, 4, (0.2, 0.5))
    assert np.array_equal(np.load(tmp_path / "ood" / "pool.npy"), ref) and np.array_equal(pool, ref)
    man = read_json(tmp_path / "ood" / "pool.json")
    assert man["shape"] == [50, 12, 12, 1] and man["params"]["crop_scale"] == [0.2, 0.5]
    assert man["folder"]["files_used"] == 4 and man["folder"]["skipped"] == 0
    assert sorted(n for _, n in man["folder"]["files"]) == [12, 12, 13, 13]
    assert [p for p, _ in man["folder"]["files"]] == sorted(n for n, *_ in PHOTOS)
    assert open_pool(tmp_path / "ood" / "pool.npy").shape == (50, 12, 12, 1)  # manifest verifies


def test_ood_pool_stage_list_message_names_params(tmp_path):
    from ltcl.pipeline import ood_pool

    lt = write_image_json(tmp_path / "lt", (8, 8, 3))
    (tmp_path / "pool.txt").write_text("a/missing.png\n")
    (tmp_path / "imgs").mkdir()
    cfg = stage_cfg(source="list", path=str(tmp_path / "pool.txt"), root=str(tmp_path / "imgs"), pool_size=20)
    with pytest.raises(FileNotFoundError, match=r"ood.source: list \(ood.path=.*pool.txt', ood.root=.*imgs'\)"):
        ood_pool.run(cfg, lt, tmp_path / "ood" / "pool.npy")


def test_source_pool_drops_labels():
    """source:<name>: ``size`` of the source's train images without their labels: one uint8 image
    array (no (x, y) pair, no label channel), every pool image one of the train images (gray
    replicated to 3 channels), drawn without replacement."""
    from collections import Counter

    from ltcl.data.sources import load_source

    x = build_pool("source:digits", size=50, image_size=16, channels=3, seed=0)
    assert type(x) is np.ndarray and x.shape == (50, 16, 16, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, np.repeat(x[..., :1], 3, axis=-1))
    train = load_source("digits", image_size=16, download=False, on_bad_image="error").x_train
    assert train.shape[1:] == (16, 16, 1)
    available = Counter(im.tobytes() for im in train)
    taken = Counter(im[..., :1].tobytes() for im in x)
    assert all(n <= available[key] for key, n in taken.items())  # train images, none taken twice


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown pool source"):
        build_pool("imagenet", size=3, image_size=32, seed=0)
    with pytest.raises(ValueError, match="size is required"):
        build_pool("bundled", image_size=32, seed=0)
    with pytest.raises(ValueError, match="channels"):
        build_pool("bundled", size=3, channels=4, image_size=32, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        build_pool("bundled", size=3, image_size=0, seed=0)


def test_missing_photo_is_skipped(monkeypatch):
    monkeypatch.setattr(pool_mod, "SKIMAGE_PHOTOS", ("camera", "no_such_photo"))
    bundled_photos.cache_clear()
    try:
        names = [n for n, _ in bundled_photos()]
        assert names[0] == "skimage.camera" and "skimage.no_such_photo" not in names
    finally:
        bundled_photos.cache_clear()

"""The out-of-distribution (OOD) image pool that KDUP / COLT sample from.

KDUP (paper 003, Sec. 3.1.1) and COLT draw extra unlabeled images from a large
OOD pool (COLT: 300K random images fetched by hand). The default pool here
needs no download: random crops of the natural photographs that ship inside
the scikit-image and scikit-learn wheels. Other pool sources: random crops of
the photos under a folder (:mod:`ltcl.data.folderpool`), an existing ``.npy``
(memory-mapped), or the train images of another
:func:`~ltcl.data.sources.load_source` data set.

Pools are uint8 NHWC arrays; :func:`save_pool` writes ``.npy`` atomically and
:func:`open_pool` memory-maps it.  The ood-pool stage also writes a sidecar manifest
(``pool.json``: sha256, shape, dtype, the pool parameters) and :func:`open_pool` checks the
file against it before use, so a pool changed after the stage wrote it is refused.  Hashing
reads the whole file in 16 MB chunks: 0.5-2 s per GB on one core (0.5 GB/s measured on the
busy 2-core test machine) plus the disk read, so a 300K x 32x32x3 pool (0.9 GB) costs about
2 s and a 3 GB pool up to 6 s in each stage that opens it (ood-pool, ood-sampling, pretrain).

Every message about a pool's content names the ``ood.*`` parameter to change.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from ltcl.data.crops import LUMA, as_rgb_uint8, check_crop_scale, crop_boxes, crop_photo
from ltcl.data.sources import load_source
from ltcl.errors import MissingInputError, UserError
from ltcl.io import atomic_path, read_json, sha256_file, write_json

logger = logging.getLogger(__name__)

# Photographs that ship inside the scikit-image wheel (no pooch download needed).
# Synthetic images (colorwheel, logo, checkerboard, horse, binary_blobs), tiny
# ones (lfw_subset, microaneurysms) and ``cat`` (a mirrored ``chelsea``) are left out.
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry",
    "hubble_deep_field", "coins", "moon", "page", "text", "brick", "grass", "gravel",
    "clock", "retina", "cell", "stereo_motorcycle",
)
POOL_SOURCES = ("bundled", "npy", "source:<name>")  # and folder: ltcl.data.folderpool
POOL_MANIFEST_KIND = "ltcl-ood-pool"
HASH_CHUNK = 16 << 20  # 16 MB reads when hashing a pool


@functools.lru_cache(maxsize=1)
def bundled_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, HxWx3 uint8) for every bundled photo that loads offline.

    Each skimage loader is tried on its own; one that fails (e.g. a version
    that moved it out of the wheel) is skipped with a warning.
    """
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos: list[tuple[str, np.ndarray]] = []
    for name in SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
            if name == "stereo_motorcycle":
                img = img[0]
            photos.append((f"skimage.{name}", as_rgb_uint8(img)))
        except Exception as exc:  # noqa: BLE001 - any failure just drops that photo
            logger.warning("bundled pool: skimage.data.%s unavailable offline (%s); skipped", name, exc)
    try:
        bunch = load_sample_images()
        for fname, img in zip(bunch.filenames, bunch.images):
            photos.append((f"sklearn.{Path(fname).stem}", as_rgb_uint8(img)))
    except Exception as exc:  # noqa: BLE001
        logger.warning("bundled pool: sklearn sample images unavailable (%s); skipped", exc)
    if not photos:
        raise RuntimeError("no bundled photos could be loaded from scikit-image / scikit-learn")
    return tuple(photos)


def to_channels(x: np.ndarray, channels: int, chunk: int = 65536) -> np.ndarray:
    """Convert uint8 NHWC images to ``channels`` (1: ITU-R 601 luma, 3: replicate gray)."""
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels!r}")
    c = x.shape[-1]
    if c == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-1)
    out = np.empty(x.shape[:-1] + (1,), dtype=np.uint8)
    for s in range(0, len(x), chunk):
        out[s:s + chunk, ..., 0] = np.rint(x[s:s + chunk].astype(np.float32) @ LUMA).clip(0, 255)
    return out


def bundled_pool(size: int, image_size: int, channels: int, seed: int, crop_scale: tuple[float, float]) -> np.ndarray:
    """``size`` random crops of the bundled photos (see :func:`build_pool`)."""
    lo, hi = check_crop_scale(crop_scale)
    photos = bundled_photos()
    rng = np.random.default_rng(seed)
    photo_id = rng.integers(0, len(photos), size=size)
    frac = rng.uniform(lo, hi, size=size)
    u, v = rng.random(size), rng.random(size)
    flip = rng.random(size) < 0.5
    out = np.empty((size, image_size, image_size, channels), dtype=np.uint8)
    for p, (_, photo) in enumerate(photos):
        sel = np.flatnonzero(photo_id == p)
        if sel.size:
            crop_photo(photo, crop_boxes(photo.shape[:2], frac[sel], u[sel], v[sel]), flip[sel], image_size,
                       channels, out, sel)
    return out


def _subsample(x: np.ndarray, size: int | None, seed: int, what: str) -> np.ndarray:
    if size is None or size == len(x):
        return x
    if size > len(x):
        raise UserError(f"ood.pool_size={size} is larger than the {len(x)} images of {what}; "
                         f"lower ood.pool_size to at most {len(x)}")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
    return x[idx]


def _npy_pool(root, size: int | None, image_size: int, channels: int) -> np.ndarray:
    if root is None:
        raise UserError("ood.source: npy needs ood.path, the (N, H, W, C) uint8 .npy file")
    if not Path(root).is_file():
        raise MissingInputError(f"ood.path={str(root)!r}: no such .npy file (ood.source: npy)")
    try:
        arr = open_pool(root)
    except UserError as exc:
        raise UserError(f"ood.path={str(root)!r}: {exc}") from None
    if arr.shape[1:] != (image_size, image_size, channels):
        raise UserError(f"ood.path={str(root)!r} holds images of shape {arr.shape[1:]}, expected "
                         f"{(image_size, image_size, channels)}: the ID images' size and channels "
                         "(data.image_size); point ood.path at a matching .npy or use ood.source: folder")
    if size is not None:
        if size > len(arr):
            raise UserError(f"ood.pool_size={size} is larger than the {len(arr)} images in ood.path={str(root)!r}; "
                             f"lower ood.pool_size to at most {len(arr)}")
        arr = arr[:size]
    return arr


def build_pool(
    source: str,
    size: int | None = None,
    *,
    image_size: int,
    seed: int,
    channels: int = 3,
    root: str | os.PathLike | None = None,
    crop_scale: tuple[float, float] | None = None,
) -> np.ndarray:
    """Build an OOD pool as a uint8 array (N, image_size, image_size, channels).

    Sources:
        ``"bundled"``: ``size`` (required) random square crops of the photos
            shipped in scikit-image / scikit-learn (:data:`SKIMAGE_PHOTOS`,
            china, flower): photo uniform at random, side uniform in
            ``crop_scale`` (``ood.crop_scale``, required) x the short side,
            uniform position, horizontal flip with p = 0.5, antialiased resize,
            ITU-R 601 luma when channels == 1.  Deterministic given ``seed``.
        ``"npy"``: ``root`` is an (N, H, W, C) uint8 ``.npy``; returned
            memory-mapped (first ``size`` rows if given), never loaded whole.
            H, W must equal image_size and C channels.
        ``"source:<name>"``: train images of ``load_source(name, root)``
            (labels dropped), resized; a random subset of ``size`` if given.

    The folder pool (``ood.source: folder``) is :mod:`ltcl.data.folderpool`'s, kept out of this
    module so that the stages that only open a pool do not depend on it.
    """
    if image_size < 1 or int(image_size) != image_size:
        raise UserError(f"image_size must be a positive int, got {image_size!r}")
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels!r}")
    if size is not None and (int(size) != size or size < 1):
        raise UserError(f"ood.pool_size must be a positive int, got {size!r}")
    image_size = int(image_size)
    if source == "bundled":
        if size is None:
            raise UserError("ood.pool_size is required for the bundled pool (the number of crops)")
        if crop_scale is None:
            raise UserError("ood.crop_scale is required for the bundled pool")
        return bundled_pool(int(size), image_size, channels, seed, crop_scale)
    if source == "npy":
        return _npy_pool(root, size, image_size, channels)
    if source == "folder":
        raise UserError("build_pool: the folder pool is ltcl.data.folderpool.folder_pool (or write_folder_pool)")
    if source.startswith("source:"):
        name = source.split(":", 1)[1]
        # an OOD pool never downloads and has no skip option: every image of the source must decode
        raw = load_source(name, root=root, image_size=image_size, download=False, on_bad_image="error")
        return to_channels(_subsample(raw.x_train, size, seed, f"source {name} (ood.pool_source)"), channels)
    raise UserError(f"unknown pool source {source!r} (ood.source); known: {', '.join(POOL_SOURCES)}")


def save_pool(path: str | os.PathLike, arr: np.ndarray, chunk: int = 16384) -> None:
    """Write a pool as ``.npy`` atomically, streaming through ``open_memmap`` in chunks."""
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise UserError(f"pool must be uint8 (N, H, W, C), got {arr.dtype} {arr.shape}")
    with atomic_path(path) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=arr.shape)
        for s in range(0, len(arr), chunk):
            mm[s:s + chunk] = arr[s:s + chunk]
        mm.flush()
        del mm


def pool_manifest_path(path: str | os.PathLike) -> Path:
    """The sidecar manifest of a pool file: ``pool.npy`` -> ``pool.json``."""
    return Path(path).with_suffix(".json")


def write_pool_manifest(path: str | os.PathLike, arr: np.ndarray, params: dict | None = None,
                        extra: dict | None = None) -> dict:
    """Write ``pool.json`` beside the pool file ``path``: its sha256 (16 MB chunks), shape,
    dtype, size in bytes, the parameters that built it and ``extra`` (a folder pool: the files
    used, crops per file, files skipped).  Returns the manifest.  Its content depends on the
    pool alone (no timings), so rebuilding an identical pool leaves DVC's downstream stages up
    to date."""
    path = Path(path)
    manifest = {
        "kind": POOL_MANIFEST_KIND, "file": path.name, "sha256": sha256_file(path, chunk_size=HASH_CHUNK),
        "shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": path.stat().st_size,
        "params": dict(params or {}), **dict(extra or {}),
    }
    write_json(pool_manifest_path(path), manifest)
    return manifest


def verify_pool(path: str | os.PathLike, arr: np.ndarray | None = None) -> bool:
    """Check a pool file against its sidecar manifest (when there is one): shape and dtype,
    then the sha256 of the whole file.  Raises ValueError naming the file on a mismatch;
    returns False when there is no ltcl pool manifest beside it (e.g. a user's own .npy)."""
    path = Path(path)
    mpath = pool_manifest_path(path)
    if not mpath.is_file():
        return False
    try:
        manifest = read_json(mpath)
    except ValueError as exc:
        raise UserError(f"pool manifest {mpath} is not valid JSON ({exc}); rerun the ood-pool stage") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != POOL_MANIFEST_KIND:
        return False  # some other JSON that happens to sit beside a user's .npy
    how = "restore it with `dvc checkout` or rebuild it with `dvc repro -f ood-pool`"
    if arr is not None and (list(arr.shape) != list(manifest.get("shape", [])) or str(arr.dtype) != manifest.get("dtype")):
        raise UserError(f"pool file {path} holds {arr.dtype} {list(arr.shape)} but its manifest {mpath} says "
                         f"{manifest.get('dtype')} {manifest.get('shape')}: the file changed since ood-pool wrote it; {how}")
    actual = sha256_file(path, chunk_size=HASH_CHUNK)
    if actual != manifest.get("sha256"):
        raise UserError(f"hash mismatch for pool file {path}: its manifest {mpath} has sha256 {manifest.get('sha256')}, "
                         f"the file has {actual} (changed or corrupt since ood-pool wrote it); {how}")
    return True


def open_pool(path: str | os.PathLike, verify: bool = True) -> np.ndarray:
    """Memory-map a pool ``.npy`` read-only, validating it is uint8 (N, H, W, C in {1, 3}) and,
    with ``verify`` and a sidecar ``pool.json`` beside it, that its content hash matches
    (:func:`verify_pool`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"pool file {path} not found")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UserError(f"pool file {path} is not a readable .npy array: {exc}") from exc
    if arr.ndim != 4 or arr.dtype != np.uint8 or arr.shape[-1] not in (1, 3):
        raise UserError(f"pool file {path} must hold uint8 (N, H, W, C) with C in (1, 3), got {arr.dtype} {arr.shape}")
    if verify:
        verify_pool(path, arr)
    return arr

"""``ltcl embed``: a trained encoder's per-image features, written to disk for use elsewhere.

The encoder is an ltcl checkpoint (``.pt``, :func:`ltcl.models.checkpoint.load_encoder`) or an
ltcl export (``export/<encoder>/encoder.safetensors``, :func:`ltcl.models.export.load_export`):
the export is rebuilt from its own header and model card, with no access to the pipeline, and
gives the same backbone features as the ``.pt`` it was exported from.  It holds no projection
head, so ``space="projection"`` needs the ``.pt`` (an imported external encoder has none either).

Images come from one of three sources: a split of ``data/lt`` (checked against its manifest), a
folder of image files (decoded and resized in chunks), or an array in an ``.npz`` file.  They
are preprocessed exactly as the linear-probe stage preprocesses a split
(:func:`ltcl.models.features.extract_features` with the encoder's mean / std), so the
``backbone`` embeddings of a split are the features the probe is trained on; ``projection``
applies the projection head to them, as ``Encoder.forward`` does.

Written into ``out``: ``embeddings.npy`` (N x d float32, streamed batch by batch),
``index.csv`` (``index`` = row of the split / npz array, or ``path`` relative to the folder;
``label`` where known) and ``embed.json`` (encoder, its sha256, format and model card, space,
source, N, d, image size, normalisation).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ltcl.data.pool import to_channels
from ltcl.data.rows import NpyWriter
from ltcl.data.sources.folder import IMAGE_EXTENSIONS, list_image_files, read_image_files
from ltcl.data.splits import load_manifest, load_split
from ltcl.errors import MissingInputError, UserError
from ltcl.models.features import extract_features
from ltcl.io import atomic_write, sha256_file, sha256_sidecar, write_json
from ltcl.models.checkpoint import is_safetensors, load_encoder
from ltcl.runtime import resolve_device

logger = logging.getLogger(__name__)

SPACES = ("backbone", "projection")
DEVICES = ("auto", "cpu", "cuda")
NPZ_KEYS = ("x_test", "x_train", "x", "images")
OUTPUTS = ("embed.json", "index.csv", "embeddings.npy")  # embed.json first: it says the others are complete
SHOW_BAD = 5  # unreadable files named in a message

# a batch of uint8 NHWC images and its index.csv rows
Batch = tuple[np.ndarray, list[tuple]]


def embed(*, encoder: str | os.PathLike, out: str | os.PathLike, split: str | None = None,
          lt_dir: str | os.PathLike = "data/lt", images: str | os.PathLike | None = None,
          npz: str | os.PathLike | None = None, key: str | None = None, space: str = "backbone",
          batch_size: int = 256, device: str = "auto", skip_bad: bool = False, amp: bool = False,
          folder_labels: bool = False) -> dict:
    """Embed the images of exactly one of ``split`` / ``images`` / ``npz`` with ``encoder`` and
    write ``embeddings.npy``, ``index.csv`` and ``embed.json`` into ``out``; returns the
    ``embed.json`` record.  Bad input raises :class:`~ltcl.errors.UserError`."""
    sources = [name for name, v in (("split", split), ("images", images), ("npz", npz)) if v is not None]
    if len(sources) != 1:
        raise UserError("give exactly one image source: --split, --images or --npz"
                        + (f" (got {', '.join('--' + s for s in sources)})" if sources else ""))
    if key is not None and npz is None:
        raise UserError("--key selects an array of --npz; it has no meaning for --split / --images")
    if space not in SPACES:
        raise UserError(f"--space must be one of {', '.join(SPACES)}, got {space!r}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise UserError(str(exc).replace("runtime.device", "--device")) from None

    manifest = load_manifest(lt_dir) if split is not None else None
    image_shape = manifest.get("image_shape") if manifest is not None else None
    model, spec, loaded = _load(Path(encoder), dev, image_shape, space)
    size, channels = int(spec["image_size"]), int(spec["channels"])

    if split is not None:
        n, header, batches, source = _split_source(lt_dir, split, manifest, batch_size)
    elif npz is not None:
        n, header, batches, source = _npz_source(Path(npz), key, size, channels, batch_size)
    else:
        n, header, batches, source = _folder_source(Path(images), size, channels, batch_size, skip_bad,
                                                    folder_labels)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # never leave a previous run's files beside this run's
        (out / name).unlink(missing_ok=True)
    fn = model.features if space == "backbone" else _projection(model)
    with atomic_write(out / "index.csv", "w") as fh:
        rows = csv.writer(fh, lineterminator="\n")
        rows.writerow(header)
        n_written, d = _write_embeddings(out / "embeddings.npy", n, batches, rows, fn, spec, dev, amp)

    record = {
        "encoder": str(encoder),
        "encoder_sha256": _encoder_sha256(Path(encoder)),
        "encoder_format": loaded["format"],
        "model_card": loaded["model_card"],
        "space": space,
        "source": source,
        "n": n_written,
        "d": d,
        "image_size": size,
        "channels": channels,
        "mean": spec["mean"],
        "std": spec["std"],
        "amp": bool(amp),
        "dtype": "float32",
        "files": {"embeddings": "embeddings.npy", "index": "index.csv"},
    }
    write_json(out / "embed.json", record)
    return record


def _load(path: Path, dev: torch.device, image_shape, space: str) -> tuple[torch.nn.Module, dict, dict]:
    """(model, spec, {"format", "model_card"}) of a ``.pt`` checkpoint or a safetensors export;
    ``space="projection"`` on an encoder without a projection head is refused here, before any
    image is read."""
    if path.is_file() and is_safetensors(path):
        from ltcl.models.export import load_export

        model, spec, loaded = load_export(path, dev, image_shape=image_shape)
    else:
        model, spec, _ = load_encoder(path, dev, image_shape=image_shape)
        loaded = {"format": "ltcl-checkpoint", "model_card": None}
    if space == "projection" and spec.get("head") == "none":
        if loaded["format"] == "ltcl-export":
            raise UserError(f"{path} is an ltcl export: it holds the backbone only (no projection head), so "
                            "--space projection cannot be computed from it; pass the .pt checkpoint it was "
                            "exported from (data/models/<encoder>.pt) or use --space backbone")
        raise UserError(f"{path} is an encoder imported from outside ltcl (import-encoder): it has no projection "
                        "head; use --space backbone")
    return model, spec, loaded


def _projection(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z = head(h)``: the second output of ``Encoder.forward``."""
    def project(imgs: torch.Tensor) -> torch.Tensor:
        return model.head(model.features(imgs))
    return project


def _encoder_sha256(path: Path) -> str:
    """The sidecar's digest (``load_encoder`` has checked the file against it), else computed."""
    side = sha256_sidecar(path)
    if side.is_file():
        fields = side.read_text(encoding="utf-8", errors="replace").split()
        if fields:
            return fields[0].lower()
    return sha256_file(path, chunk_size=16 << 20)


def _write_embeddings(path: Path, n: int | None, batches: Iterator[Batch], rows, fn, spec: dict,
                      dev: torch.device, amp: bool) -> tuple[int, int]:
    """Run ``fn`` over each batch and stream the features into ``path`` with :class:`NpyWriter`
    (memory: one batch).  ``n`` None (a folder read with --skip-bad: the count is known only at
    the end): the rows go to a raw ``.part`` file first, then into the ``.npy`` batch by batch."""
    writer: NpyWriter | None = None
    spill = path.with_name(path.name + ".part")
    written, d, step = 0, 0, 1
    try:
        with open(spill, "wb") if n is None else _nothing() as spill_fh:
            for imgs, index_rows in batches:
                feats = extract_features(fn, imgs, batch_size=len(imgs), device=dev, mean=spec["mean"],
                                         std=spec["std"], amp=amp).numpy()
                d, step = feats.shape[1], max(step, len(imgs))
                if spill_fh is not None:
                    spill_fh.write(np.ascontiguousarray(feats, dtype=np.float32).tobytes())
                else:
                    if writer is None:
                        writer = NpyWriter(path, (n, d), dtype=np.float32)
                    writer.write(feats)
                rows.writerows(index_rows)
                written += len(feats)
        if n is None:
            if written == 0:
                raise UserError("no readable images to embed (every file was skipped)")
            writer = NpyWriter(path, (written, d), dtype=np.float32)
            feats_per_row = np.dtype(np.float32).itemsize * d
            with open(spill, "rb") as fh:
                while chunk := fh.read(step * feats_per_row):
                    writer.write(np.frombuffer(chunk, dtype=np.float32).reshape(-1, d))
        if writer is None:
            raise UserError("no images to embed")
        writer.close()
    except BaseException:
        if writer is not None and not writer.fh.closed:
            writer.fh.close()
        path.unlink(missing_ok=True)
        raise
    finally:
        spill.unlink(missing_ok=True)
    return written, d


@contextmanager
def _nothing():
    yield None


# -- sources: (N or None, index.csv header, batches, the source's embed.json record) ------------------

def _split_source(lt_dir, split: str, manifest: dict, batch_size: int):
    x, y = load_split(lt_dir, split)  # unknown split: UserError listing the known ones
    files = manifest["arrays"][split]

    real = split not in ("train", "lt") or (manifest.get("labels") or {}).get("train", True)

    def batches() -> Iterator[Batch]:
        for s in range(0, len(x), batch_size):
            e = min(s + batch_size, len(x))
            yield x[s:e], [(i, int(y[i]) if real else "") for i in range(s, e)]  # no label where none is real

    source = {"kind": "split", "split": split, "lt_dir": str(lt_dir), "dataset": manifest.get("dataset"),
              "class_names": manifest.get("class_names"),
              "files": {f: manifest["files"][f] for f in (files["x"], files["y"])}}
    return len(x), ("index", "label"), batches(), source


def _npz_source(path: Path, key: str | None, size: int, channels: int, batch_size: int):
    if not path.is_file():
        raise MissingInputError(f"npz file {path} not found")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    if not hasattr(data, "files"):
        raise UserError(f"{path}: a single .npy array, not an .npz archive of named arrays")
    with data:
        names = list(data.files)
        if key is None:
            key = next((k for k in NPZ_KEYS if k in names), None)
            if key is None:
                raise UserError(f"{path} has none of the default image keys {', '.join(NPZ_KEYS)}; "
                                f"choose one with --key (arrays: {', '.join(names) or 'none'})")
        elif key not in names:
            raise UserError(f"{path} has no array {key!r}; arrays: {', '.join(names) or 'none'}")
        try:
            x = data[key]
        except ValueError as exc:  # an object array needs pickle
            raise UserError(f"{path}[{key}]: not a plain array ({exc})") from None
        label_key = "y" + key[1:] if key.startswith("x") else ("labels" if key == "images" else None)
        y = data[label_key] if label_key in names else None
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:3] != (size, size) or x.shape[3] not in (1, 3):
        raise UserError(f"{path}[{key}] holds {x.dtype} images of shape {x.shape}; the encoder needs uint8 "
                        f"N x {size} x {size} x C (C = 1 or 3; N x H x W for grayscale): resize the images "
                        f"to {size}x{size} (or pass the folder of image files with --images, which resizes)")
    if len(x) == 0:
        raise UserError(f"{path}[{key}] holds no images")
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{path}[{label_key}] should hold one integer label per image of {key} ({len(x)}), "
                            f"got {y.dtype} of shape {y.shape}")

    def batches() -> Iterator[Batch]:
        for s in range(0, len(x), batch_size):
            e = min(s + batch_size, len(x))
            labels = [""] * (e - s) if y is None else [int(v) for v in y[s:e]]
            yield to_channels(x[s:e], channels), list(zip(range(s, e), labels))

    source = {"kind": "npz", "file": str(path), "sha256": sha256_file(path), "key": key,
              "label_key": label_key if y is not None else None, "shape": list(x.shape)}
    return len(x), ("index", "label"), batches(), source


def _folder_source(root: Path, size: int, channels: int, batch_size: int, skip_bad: bool, folder_labels: bool):
    if not root.is_dir():
        raise MissingInputError(f"image folder {root} not found")
    paths = list_image_files(root)
    if not paths:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    rel = [p.relative_to(root) for p in paths]
    # labels only when asked: a user's folders are often named by date or camera, not by class
    if folder_labels and not all(len(r.parts) >= 2 for r in rel):
        flat = next(r for r in rel if len(r.parts) < 2)
        raise UserError(f"--folder-labels takes the first sub-folder as each file's class, but {root / flat} lies in "
                        "no sub-folder")
    by_class = folder_labels
    labels = [r.parts[0] if by_class else "" for r in rel]
    skipped: list[str] = []

    def batches() -> Iterator[Batch]:
        bad: list[str] = []
        for s in range(0, len(paths), batch_size):
            with _quiet(not skip_bad):  # read_image_files logs "skipping"; without --skip-bad we stop
                imgs, failed = read_image_files(paths[s:s + batch_size], size, "skip")
            bad += failed
            if bad and not skip_bad:
                continue  # decode the rest only to name every unreadable file
            keep = [i for i, im in enumerate(imgs) if im is not None]
            if keep:
                x = np.stack([to_channels(imgs[i][None], channels)[0] for i in keep])
                yield x, [(rel[s + i].as_posix(), labels[s + i]) for i in keep]
        if bad and not skip_bad:
            raise UserError(f"{len(bad)} unreadable image file(s) under {root}: {', '.join(bad[:SHOW_BAD])}"
                            f"{' ...' if len(bad) > SHOW_BAD else ''}; remove them or pass --skip-bad")
        skipped.extend(Path(b).relative_to(root).as_posix() for b in bad)

    source = {"kind": "images", "folder": str(root), "files": len(paths), "labels": "class sub-folder"
              if by_class else None, "skipped": skipped}
    return (len(paths) if not skip_bad else None), ("path", "label"), batches(), source


@contextmanager
def _quiet(on: bool):
    """Mute the folder reader's per-file "skipping" warnings (when the files stop the run instead)."""
    log = logging.getLogger("ltcl.data.sources.folder")
    old = log.disabled
    log.disabled = on or old
    try:
        yield
    finally:
        log.disabled = old

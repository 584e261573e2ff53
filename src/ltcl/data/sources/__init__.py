"""Dataset sources: read image classification data sets from their on-disk formats.

Every loader returns a :class:`RawDataset` whose images are ``uint8`` NHWC
arrays (C = 1 grayscale, C = 3 colour) and labels ``int64``. Loaders read the
official file formats directly (IDX for MNIST / Fashion-MNIST, the python
pickle batches for CIFAR, image files for ImageFolder trees, ``.npz``), so no
torchvision ``Dataset`` object (and no unrestricted ``pickle.load``) is
involved; torchvision is only used for downloading when ``download=True``.

One module per format: :mod:`~ltcl.data.sources.digits`,
:mod:`~ltcl.data.sources.idx`, :mod:`~ltcl.data.sources.cifar`,
:mod:`~ltcl.data.sources.folder` and :mod:`~ltcl.data.sources.npz`;
:mod:`~ltcl.data.sources.raw` holds :class:`RawDataset`, validation and resizing,
and :mod:`ltcl.data.unpickle` the restricted unpickler the CIFAR loader uses.

Registry: :data:`SOURCES` maps a name to its loader; :func:`load_source` is the
entry point (dispatch, optional resize, validation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ltcl.data.sources.cifar import (
    CIFAR10_CLASSES,
    load_cifar10_source,
    load_cifar100_source,
)
from ltcl.data.sources.digits import load_digits_source
from ltcl.data.sources.folder import (
    IMAGE_EXTENSIONS,
    ON_BAD_IMAGE,
    list_image_files,
    load_folder_source,
    read_image_files,
    stack_images,
)
from ltcl.data.sources.idx import load_fashion_mnist_source, load_mnist_source, read_idx
from ltcl.data.sources.npz import load_npz_source
from ltcl.data.sources.raw import RawDataset, resize_images, validate_raw
from ltcl.errors import UserError

__all__ = [
    "CIFAR10_CLASSES", "IMAGE_EXTENSIONS", "ON_BAD_IMAGE", "SOURCES", "Loader", "RawDataset",
    "list_image_files", "load_source", "read_idx", "read_image_files", "resize_images",
    "stack_images", "validate_raw",
]

Loader = Callable[..., RawDataset]

SOURCES: dict[str, Loader] = {
    "digits": load_digits_source,
    "mnist": load_mnist_source,
    "fashion-mnist": load_fashion_mnist_source,
    "cifar10": load_cifar10_source,
    "cifar100": load_cifar100_source,
    "folder": load_folder_source,
    "npz": load_npz_source,
}


def load_source(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool,
    image_size: int | None = None,
    on_bad_image: str,
) -> RawDataset:
    """Load data set ``name`` (a key of :data:`SOURCES`), resize to ``image_size``, validate.

    ``download`` and ``on_bad_image`` are ``data.download`` / ``data.on_bad_image`` for the data set
    (their defaults live in the schema); an OOD pool drawn from a source passes its own policy.

    Raises ValueError for unknown names (listing the known ones), bad
    arguments and invalid data; FileNotFoundError (naming every path looked in
    and how to obtain the data) when files are missing.
    """
    if name not in SOURCES:
        raise UserError(f"unknown data source {name!r}; known sources: {', '.join(sorted(SOURCES))}")
    if on_bad_image not in ON_BAD_IMAGE:
        raise UserError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise UserError(f"image_size must be a positive int or None, got {image_size!r}")
    root_path = Path(root).expanduser() if root is not None else None
    raw = SOURCES[name](root=root_path, download=download, image_size=image_size, on_bad_image=on_bad_image)
    where = None
    if root_path is not None and name != "digits":  # name the file or folder the data came from
        where = root_path / "data.npz" if name == "npz" and root_path.is_dir() else root_path
    raw = validate_raw(raw, where)
    if image_size is not None:
        raw.x_train = resize_images(raw.x_train, int(image_size))
        raw.x_test = resize_images(raw.x_test, int(image_size))
    return raw

"""Tests for ltcl.data.sources on small files written in the real on-disk formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltcl.data import sources
from ltcl.data.sources import RawDataset, load_source, read_idx, resize_images, validate_raw
from ltcl.data.sources import idx as idx_source
from ltcl.data.unpickle import restricted_loads

# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array in LeCun's IDX format (magic 0x0000 08 <ndim>, big-endian dims)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(directory: Path, rng: np.random.Generator, n_train=30, n_test=20, gz=True, classes=10):
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % classes).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % classes).astype(np.uint8),
    }
    for name, arr in data.items():
        blob = idx_bytes(arr)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (directory / name).write_bytes(blob)
    return data


def cifar_batch(rng, n, label_key=b"labels", classes=10, extra=None, start=0):
    """A batch like the official ones: (N, 3072) uint8 rows of R, G, B 32x32 planes."""
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    data = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
    d = {b"batch_label": b"training batch", label_key: [int(i % classes) for i in range(start, start + n)], b"data": data,
         b"filenames": [b"x.png"] * n}
    if extra:
        d.update(extra)
    return d, imgs


def write_cifar10(folder: Path, rng, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    all_imgs = []
    for i in range(1, 6):
        d, imgs = cifar_batch(rng, per_batch, start=(i - 1) * per_batch)
        all_imgs.append(imgs)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(d, protocol=2))
    d, test_imgs = cifar_batch(rng, 10)
    (folder / "test_batch").write_bytes(pickle.dumps(d, protocol=2))
    meta = {b"label_names": [n.encode() for n in sources.CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return np.concatenate(all_imgs), test_imgs


def make_targz(src_dir: Path, archive: Path):
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src_dir, arcname=src_dir.name)


def write_png(path: Path, arr: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# --------------------------------------------------------------------------- registry / digits


def test_unknown_source_lists_known():
    with pytest.raises(ValueError) as err:
        load_source("imagenet-22k", download=False, on_bad_image="error")
    for name in ("cifar10", "cifar100", "digits", "fashion-mnist", "folder", "mnist", "npz"):
        assert name in str(err.value)


def test_digits():
    raw = load_source("digits", download=False, on_bad_image="error")
    assert raw.x_train.dtype == np.uint8 and raw.x_train.shape[1:] == (8, 8, 1)
    assert len(raw.x_train) + len(raw.x_test) == 1797
    assert len(raw.x_test) == 599  # ceil(1797 / 3)
    assert raw.x_train.max() == 255 and raw.y_train.dtype == np.int64
    assert raw.class_names == [str(i) for i in range(10)]
    # stratified: every class has ~2/3 of its images in train
    frac = np.bincount(raw.y_train) / (np.bincount(raw.y_train) + np.bincount(raw.y_test))
    assert np.all(np.abs(frac - 2 / 3) < 0.02)
    again = load_source("digits", download=False, on_bad_image="error")
    np.testing.assert_array_equal(raw.x_train, again.x_train)


def test_digits_resized():
    raw = load_source("digits", image_size=16, download=False, on_bad_image="error")
    assert raw.x_train.shape[1:] == (16, 16, 1) and raw.x_test.shape[1:] == (16, 16, 1)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("sub", ["", "mnist", "mnist/raw", "MNIST/raw"])
def test_mnist_idx_layouts(tmp_path, gz, sub):
    data = write_idx_set(tmp_path / sub, np.random.default_rng(0), gz=gz)
    raw = load_source("mnist", root=tmp_path, download=False, on_bad_image="error")
    np.testing.assert_array_equal(raw.x_train[..., 0], data["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.y_test, data["t10k-labels-idx1-ubyte"])
    assert raw.x_train.shape == (30, 28, 28, 1) and raw.y_train.dtype == np.int64


def test_fashion_mnist_names(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_source, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")
    write_idx_set(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(1))
    raw = load_source("fashion-mnist", root=tmp_path, download=False, on_bad_image="error")
    assert raw.class_names[0] == "T-shirt/top" and raw.class_names[-1] == "Ankle boot"


def test_read_idx_other_dtype(tmp_path):
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    header = struct.pack(">BBBB", 0, 0, 0x0C, 2) + struct.pack(">II", 2, 3)
    (tmp_path / "f").write_bytes(header + arr.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), np.arange(6).reshape(2, 3))


def test_truncated_idx_names_file(tmp_path):
    write_idx_set(tmp_path, np.random.default_rng(0), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        load_source("mnist", root=tmp_path, download=False, on_bad_image="error")


def test_truncated_gzip_names_file(tmp_path):
    write_idx_set(tmp_path, np.random.default_rng(0), gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_source("mnist", root=tmp_path, download=False, on_bad_image="error")


def test_bad_idx_magic_and_dtype(tmp_path):
    (tmp_path / "a").write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "a")
    (tmp_path / "b").write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="dtype code"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x00")
    with pytest.raises(ValueError, match="longer than declared"):
        read_idx(tmp_path / "c")


def test_idx_label_count_mismatch(tmp_path):
    write_idx_set(tmp_path, np.random.default_rng(0), gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        load_source("mnist", root=tmp_path, download=False, on_bad_image="error")


def test_missing_idx_lists_paths_and_howto(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_source, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    with pytest.raises(FileNotFoundError) as err:
        load_source("fashion-mnist", root=tmp_path / "data", download=False, on_bad_image="error")
    msg = str(err.value)
    for d in ("data", "data/fashion-mnist/raw", "data/FashionMNIST/raw", "debian"):
        assert str(tmp_path / d / "train-images-idx3-ubyte") in msg
    assert "download" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_mnist_download_uses_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_idx_set(Path(root) / "MNIST" / "raw", np.random.default_rng(3))

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(FileNotFoundError):
        load_source("mnist", root=tmp_path, download=False, on_bad_image="error")  # download off: no network touched
    raw = load_source("mnist", root=tmp_path, download=True, on_bad_image="error")
    assert calls and all(c[2] for c in calls) and len(raw.x_train) == 30


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_debian():
    raw = load_source("fashion-mnist", download=False, on_bad_image="error")
    assert raw.x_train.shape == (60000, 28, 28, 1) and raw.x_test.shape == (10000, 28, 28, 1)
    assert np.all(np.bincount(raw.y_train) == 6000)


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_extracted_layout_and_pixels(tmp_path):
    x_tr, x_te = write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(0))
    raw = load_source("cifar10", root=tmp_path, download=False, on_bad_image="error")
    assert raw.x_train.shape == (20, 32, 32, 3) and raw.x_test.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(raw.x_train, x_tr)  # planes -> HWC correctly
    np.testing.assert_array_equal(raw.x_test, x_te)
    assert raw.class_names == sources.CIFAR10_CLASSES
    np.testing.assert_array_equal(raw.y_train, np.arange(20) % 10)


def test_cifar10_targz_not_extracted(tmp_path):
    src = tmp_path / "build" / "cifar-10-batches-py"
    x_tr, _ = write_cifar10(src, np.random.default_rng(1))
    root = tmp_path / "root"
    root.mkdir()
    make_targz(src, root / "cifar-10-python.tar.gz")
    raw = load_source("cifar10", root=root, download=False, on_bad_image="error")
    np.testing.assert_array_equal(raw.x_train, x_tr)
    assert sorted(os.listdir(root)) == ["cifar-10-python.tar.gz"]  # nothing extracted


def test_cifar100_fine_labels_and_meta(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "build" / "cifar-100-python"
    src.mkdir(parents=True)
    d_tr, x_tr = cifar_batch(rng, 200, label_key=b"fine_labels", classes=100,
                             extra={b"coarse_labels": [0] * 200})
    d_te, _ = cifar_batch(rng, 100, label_key=b"fine_labels", classes=100, extra={b"coarse_labels": [0] * 100})
    (src / "train").write_bytes(pickle.dumps(d_tr, protocol=2))
    (src / "test").write_bytes(pickle.dumps(d_te, protocol=2))
    names = [f"class{i:03d}".encode() for i in range(100)]
    (src / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": [b"c"]}, protocol=2))
    root = tmp_path / "root"
    root.mkdir()
    make_targz(src, root / "cifar-100-python.tar.gz")
    raw = load_source("cifar100", root=root, download=False, on_bad_image="error")
    assert raw.num_classes == 100 and raw.class_names[7] == "class007"
    np.testing.assert_array_equal(raw.y_train, np.arange(200) % 100)
    np.testing.assert_array_equal(raw.x_train, x_tr)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_refused(tmp_path):
    target = tmp_path / "pwned_ltcl_test"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(0))
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(str(target))}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        load_source("cifar10", root=tmp_path, download=False, on_bad_image="error")
    assert not target.exists()


def test_restricted_loads_allows_numpy_only():
    arr = np.arange(10, dtype=np.int16).reshape(2, 5)
    for protocol in (2, 4, 5):
        back = restricted_loads(pickle.dumps({b"a": arr, b"l": [1, 2]}, protocol=protocol))
        np.testing.assert_array_equal(back[b"a"], arr)
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        restricted_loads(pickle.dumps(io.BytesIO))
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        restricted_loads(pickle.dumps(np.load))


def test_cifar_missing_explains(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_source("cifar100", root=tmp_path, download=False, on_bad_image="error")
    assert "cifar-100-python.tar.gz" in str(err.value) and "download" in str(err.value)


def test_cifar_download_uses_torchvision_archive(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kw):
        calls.append((url, filename, md5))
        src = tmp_path / "build" / "cifar-10-batches-py"
        write_cifar10(src, np.random.default_rng(5))
        make_targz(src, Path(download_root) / filename)

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_download)
    root = tmp_path / "root"
    root.mkdir()
    raw = load_source("cifar10", root=root, download=True, on_bad_image="error")
    assert calls[0][1] == "cifar-10-python.tar.gz" and calls[0][2]  # md5 checked
    assert len(raw.x_train) == 20


def test_cifar_bad_batch_shape(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(0))
    bad = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match="data_batch_2"):
        load_source("cifar10", root=tmp_path, download=False, on_bad_image="error")


# --------------------------------------------------------------------------- folder


def make_folder(root: Path, rng, gray=False, sizes=((20, 30), (16, 16)), classes=("cat", "dog")):
    for split, n in (("train", 3), ("test", 2)):
        for c in classes:
            for i in range(n):
                h, w = sizes[i % len(sizes)]
                shape = (h, w) if gray else (h, w, 3)
                write_png(root / split / c / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))


def test_folder_rgb_resized(tmp_path):
    make_folder(tmp_path, np.random.default_rng(0))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    raw = load_source("folder", root=tmp_path, image_size=12, download=False, on_bad_image="error")
    assert raw.x_train.shape == (6, 12, 12, 3) and raw.x_test.shape == (4, 12, 12, 3)
    assert raw.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(raw.y_train, [0, 0, 0, 1, 1, 1])


def test_folder_pixels_exact_without_resize(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for split in ("train", "test"):
        write_png(tmp_path / split / "a" / "x.png", img)
    raw = load_source("folder", root=tmp_path, download=False, on_bad_image="error")
    np.testing.assert_array_equal(raw.x_train[0], img)


def test_folder_grayscale_and_mixed_mode(tmp_path):
    make_folder(tmp_path / "g", np.random.default_rng(0), gray=True)
    assert load_source("folder", root=tmp_path / "g", image_size=8, download=False, on_bad_image="error").x_train.shape[-1] == 1
    make_folder(tmp_path / "m", np.random.default_rng(0), gray=True)
    rgb = np.random.default_rng(2).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "m" / "test" / "cat" / "rgb.png", rgb)
    raw = load_source("folder", root=tmp_path / "m", image_size=8, download=False, on_bad_image="error")
    assert raw.x_train.shape[-1] == 3
    g = raw.x_train[0]
    np.testing.assert_array_equal(g[..., 0], g[..., 2])  # gray replicated


def test_folder_mixed_sizes_error(tmp_path):
    make_folder(tmp_path, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mixed image sizes"):
        load_source("folder", root=tmp_path, download=False, on_bad_image="error")


def test_folder_symlink_outside_refused(tmp_path):
    root = tmp_path / "root"
    make_folder(root, np.random.default_rng(0), sizes=((8, 8),))
    secret = tmp_path / "outside.png"
    write_png(secret, np.zeros((8, 8, 3), np.uint8))
    link = root / "train" / "cat" / "link.png"
    link.symlink_to(secret)
    with pytest.raises(ValueError, match="link.png"):
        load_source("folder", root=root, download=False, on_bad_image="error")
    link.unlink()
    (root / "train" / "dogdir").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match="dogdir"):
        load_source("folder", root=root, download=False, on_bad_image="error")


def test_folder_symlink_inside_ok(tmp_path):
    make_folder(tmp_path, np.random.default_rng(0), sizes=((8, 8),))
    (tmp_path / "train" / "cat" / "link.png").symlink_to(tmp_path / "train" / "dog" / "0.png")
    raw = load_source("folder", root=tmp_path, download=False, on_bad_image="error")
    assert len(raw.x_train) == 7


def test_folder_corrupt_image_error_vs_skip(tmp_path, caplog):
    make_folder(tmp_path, np.random.default_rng(0), sizes=((8, 8),))
    bad = tmp_path / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.png"):
        load_source("folder", root=tmp_path, download=False, on_bad_image="error")
    with caplog.at_level("WARNING"):
        raw = load_source("folder", root=tmp_path, on_bad_image="skip", download=False)
    assert raw.skipped == [str(bad)] and len(raw.x_train) == 6
    assert "broken.png" in caplog.text
    with pytest.raises(ValueError, match="on_bad_image"):
        load_source("folder", root=tmp_path, on_bad_image="ignore", download=False)


def test_folder_missing_class_after_skip(tmp_path):
    make_folder(tmp_path, np.random.default_rng(0), sizes=((8, 8),))
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match="missing from the train split: 2 \\(empty\\)"):
        load_source("folder", root=tmp_path, download=False, on_bad_image="error")


# --------------------------------------------------------------------------- npz and validation


def _npz(path, **over):
    rng = np.random.default_rng(0)
    d = dict(x_train=rng.integers(0, 256, (12, 6, 6, 3), dtype=np.uint8), y_train=np.arange(12) % 3,
             x_test=rng.integers(0, 256, (6, 6, 6, 3), dtype=np.uint8), y_test=np.arange(6) % 3)
    d.update(over)
    np.savez(path, **d)
    return d


def test_npz_file_and_dir(tmp_path):
    d = _npz(tmp_path / "data.npz", class_names=np.array(["a", "b", "c"]))
    for root in (tmp_path, tmp_path / "data.npz"):
        raw = load_source("npz", root=root, download=False, on_bad_image="error")
        np.testing.assert_array_equal(raw.x_train, d["x_train"])
        assert raw.class_names == ["a", "b", "c"] and raw.y_train.dtype == np.int64


def test_npz_missing_class(tmp_path):
    _npz(tmp_path / "d.npz", y_train=np.where(np.arange(12) % 3 == 1, 0, np.arange(12) % 3),
         class_names=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"missing from the train split: 1 \(b\)"):
        load_source("npz", root=tmp_path / "d.npz", download=False, on_bad_image="error")


def test_npz_out_of_range_labels(tmp_path):
    _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 5, -1, 0]), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"out-of-range labels \[-1, 5\]"):
        load_source("npz", root=tmp_path / "d.npz", download=False, on_bad_image="error")


def test_npz_mixed_sizes(tmp_path):
    _npz(tmp_path / "d.npz", x_test=np.zeros((6, 5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="mixed image sizes"):
        load_source("npz", root=tmp_path / "d.npz", download=False, on_bad_image="error")
    _npz(tmp_path / "e.npz", x_test=np.zeros((6, 6, 6, 1), np.uint8))
    with pytest.raises(ValueError, match="channel"):
        load_source("npz", root=tmp_path / "e.npz", download=False, on_bad_image="error")


def test_validate_raw_dtype():
    raw = RawDataset("t", np.zeros((2, 4, 4, 1), np.float32), np.array([0, 1]), np.zeros((1, 4, 4, 1), np.uint8),
                     np.array([0]), ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        validate_raw(raw)


def test_resize_images():
    x = np.full((3, 10, 10, 3), 77, np.uint8)
    out = resize_images(x, 4)
    assert out.shape == (3, 4, 4, 3) and out.dtype == np.uint8 and np.all(out == 77)
    assert resize_images(x, 10) is x
    # antialiased downsampling of a 2x2 checkerboard averages to mid-gray
    board = np.indices((16, 16)).sum(0) % 2 * 255
    out = resize_images(board.astype(np.uint8)[None, ..., None], 4)
    assert np.all(np.abs(out.astype(int) - 128) <= 2)

"""Tests for ltcl.io: atomic writes, JSON, npz, hashes, checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import torch

from ltcl.io import (
    atomic_path,
    atomic_write,
    load_checkpoint,
    read_json,
    save_checkpoint,
    save_npz,
    sha256_file,
    write_json,
)


def _leftovers(directory) -> list[str]:
    return [p for p in os.listdir(directory) if p.endswith(".tmp")]


def test_atomic_write_success(tmp_path):
    path = tmp_path / "sub" / "a.bin"
    with atomic_write(path) as fh:
        fh.write(b"hello")
        assert not path.exists()  # nothing visible until the block ends
    assert path.read_bytes() == b"hello"
    assert _leftovers(path.parent) == []


def test_atomic_write_exception_leaves_no_file(tmp_path):
    path = tmp_path / "a.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(path) as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_write_exception_keeps_old_content(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(KeyError):
        with atomic_write(path, "w") as fh:
            fh.write("new but incomplete")
            raise KeyError("x")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "ab"):
            pass


def test_atomic_path_exception_removes_temp(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "x.npy") as tmp:
            tmp.write_bytes(b"123")
            raise ValueError("fail")
    assert os.listdir(tmp_path) == []


def test_write_json_sorted_nan_numpy(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": float("nan"), "a": np.float32(1.5), "c": np.arange(3), "d": [float("inf"), 2],
                      "e": {"z": np.int64(4), "y": None}})
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": 1.5, "b": None, "c": [0, 1, 2], "d": [None, 2], "e": {"y": None, "z": 4}}
    assert read_json(path)["c"] == [0, 1, 2]
    assert "  " in text  # indented


def test_save_npz_exact_path_and_roundtrip(tmp_path):
    path = tmp_path / "arrays.npz"
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    save_npz(path, x=x, y=np.array([1, 2, 3]))
    assert path.exists() and not (tmp_path / "arrays.npz.npz").exists()
    with np.load(path) as f:
        np.testing.assert_array_equal(f["x"], x)
        np.testing.assert_array_equal(f["y"], [1, 2, 3])


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(3_000_000)
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=1 << 16) == hashlib.sha256(data).hexdigest()


def test_checkpoint_roundtrip(tmp_path):
    path = tmp_path / "ckpt.pt"
    obj = {"model": {"w": torch.randn(3, 2)}, "epoch": 3, "lr": 0.5, "names": ["a", "b"]}
    save_checkpoint(path, obj)
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and back["names"] == ["a", "b"]
    torch.testing.assert_close(back["model"]["w"], obj["model"]["w"])
    assert _leftovers(tmp_path) == []


class _Arbitrary:
    def __init__(self) -> None:
        self.v = 1


def test_load_checkpoint_is_weights_only(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"obj": _Arbitrary()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)

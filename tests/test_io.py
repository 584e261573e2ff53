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


def test_npz_bytes_do_not_depend_on_the_time_of_writing(tmp_path, monkeypatch):
    """Two writes of the same arrays, with the clock 10 years apart, give the same bytes (every zip
    member dated NPZ_DATE), and np.load reads back the same names, dtypes and values."""
    import time
    import zipfile

    from ltcl.io import NPZ_DATE, npz_bytes

    arrays = {"pool_indices": np.arange(7, dtype=np.int64), "strategy": np.asarray("kdup"),
              "tailness": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), "empty": np.empty(0, np.int64)}
    clock = [1_000_000_000.0]  # 2001-09-09
    monkeypatch.setattr(time, "time", lambda: clock[0])
    monkeypatch.setattr(time, "localtime", lambda secs=None: time.gmtime(clock[0] if secs is None else secs))
    save_npz(tmp_path / "a.npz", **arrays)
    clock[0] += 10 * 365 * 86400
    save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes() == npz_bytes(**arrays)
    with zipfile.ZipFile(tmp_path / "b.npz") as zf:
        assert [i.filename for i in zf.infolist()] == [f"{k}.npy" for k in arrays]
        assert {i.date_time for i in zf.infolist()} == {NPZ_DATE}
    with np.load(tmp_path / "b.npz") as f:
        assert f.files == list(arrays)
        for k, v in arrays.items():
            assert f[k].dtype == v.dtype and f[k].shape == v.shape
            np.testing.assert_array_equal(f[k], v)


def test_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError):
        save_npz(tmp_path / "o.npz", x=np.asarray([{"a": 1}], dtype=object))


def test_write_json_first_keys_lead_the_rest_sorted(tmp_path):
    write_json(tmp_path / "m.json", {"knn": {"k1": 1}, "few_shot": {"all": 2}, "group_source": "x",
                                     "full": {"many": 3, "all": 4}}, first=("full", "few_shot", "ms", "knn"))
    text = (tmp_path / "m.json").read_text()
    at = [text.index(f'"{k}"') for k in ("full", "few_shot", "knn", "group_source")]
    assert at == sorted(at)
    assert text.index('"all": 4') < text.index('"many": 3')  # nested keys sorted
    assert json.loads(text) == {"full": {"all": 4, "many": 3}, "few_shot": {"all": 2}, "knn": {"k1": 1},
                                "group_source": "x"}


def test_write_json_first_orders_every_level(tmp_path):
    """A key ``first`` names leads at any depth (the groups of each protocol: Many ... All)."""
    write_json(tmp_path / "m.json", {"few_shot": {"all": 1, "std": 2, "many": 3, "val": 4},
                                     "full": {"few": 5, "all": 6, "many": 7}, "a": {"z": {"all": 8, "few": 9}}},
               first=("full", "few_shot", "many", "few", "std", "all"))
    m = json.loads((tmp_path / "m.json").read_text())
    assert list(m) == ["full", "few_shot", "a"]
    assert list(m["few_shot"]) == ["many", "std", "all", "val"] and list(m["full"]) == ["many", "few", "all"]
    assert list(m["a"]["z"]) == ["few", "all"]


# writes one torch.save checkpoint (through ltcl.io) and one safetensors file of the same seeded tensors
SAVE_SCRIPT = """
import torch
from ltcl.io import save_checkpoint
from safetensors.torch import save_file


def write(pt_path, st_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 3))
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    save_checkpoint(pt_path, {"model": state, "spec": {"backbone": "x", "mean": [0.5]},
                              "history": [{"epoch": 1, "loss": 0.25}]})
    save_file(state, st_path, metadata={"format": "pt"})
"""


def test_torch_save_and_safetensors_are_byte_stable(tmp_path):
    """The same tensors and containers written by torch.save (ltcl.io.save_checkpoint) and by
    safetensors give the same bytes in another process, seconds later: no date, random id or
    file name inside (torch's archive is named "archive" for a file object)."""
    import subprocess
    import sys
    import time

    from conftest import stage_env

    here, there = (tmp_path / "a.pt", tmp_path / "a.safetensors"), (tmp_path / "b.pt", tmp_path / "b.safetensors")
    space: dict = {}
    exec(SAVE_SCRIPT, space)  # in this process
    space["write"](*map(str, here))
    time.sleep(1.1)
    subprocess.run([sys.executable, "-c", SAVE_SCRIPT + "\nimport sys\nwrite(sys.argv[1], sys.argv[2])\n",
                    *map(str, there)], check=True, env=stage_env(), cwd=tmp_path)
    assert here[0].read_bytes() == there[0].read_bytes()
    assert here[1].read_bytes() == there[1].read_bytes()
    assert load_checkpoint(there[0])["history"] == [{"epoch": 1, "loss": 0.25}]


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

"""On-disk image rows: chunked .npy writing, row reads that equal numpy indexing, and a
training run from a split file read by rows that equals the in-memory run bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import copy_project
from ltcl.data.rows import DiskRows, NpyWriter
from ltcl.errors import UserError


@pytest.fixture
def arr(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (41, 6, 5, 3), dtype=np.uint8)
    path = tmp_path / "a.npy"
    with NpyWriter(path, a.shape) as w:
        for s in range(0, 41, 8):
            w.write(a[s: s + 8])
    return a, path


def test_writer_gives_a_numpy_file_and_refuses_a_wrong_row_count(arr, tmp_path):
    a, path = arr
    np.testing.assert_array_equal(np.load(path), a)
    with pytest.raises(UserError, match="3 rows written, 4 announced"):
        with NpyWriter(tmp_path / "b.npy", (4, 6, 5, 3)) as w:
            w.write(a[:3])
    with pytest.raises(UserError, match="more than the 2 rows"):
        with NpyWriter(tmp_path / "c.npy", (2, 6, 5, 3)) as w:
            w.write(a[:3])
    assert not (tmp_path / "c.npy").exists()  # a failed block leaves no partial file


def test_rows_index_like_the_array(arr):
    a, path = arr
    rows = DiskRows(path)
    assert len(rows) == 41 and tuple(rows.shape) == a.shape and rows.device.type == "cpu"
    idx = torch.tensor([40, 3, 3, 0, 17, -1])
    np.testing.assert_array_equal(rows[idx].numpy(), a[idx.numpy()])
    np.testing.assert_array_equal(rows[5:9].numpy(), a[5:9])
    np.testing.assert_array_equal(rows[7].numpy(), a[7])
    mask = torch.arange(41) % 3 == 0
    view = rows[mask]  # a lazy view, as the OOD sampler takes the ID rows
    assert isinstance(view, DiskRows) and len(view) == 14
    np.testing.assert_array_equal(view[torch.tensor([2, 0])].numpy(), a[mask.numpy()][[2, 0]])
    extra = torch.full((4, 6, 5, 3), 7, dtype=torch.uint8)
    both = view.concat(extra)  # ID rows on disk + sampled OOD rows in memory
    got = both[torch.tensor([15, 1, 13, 14])].numpy()
    np.testing.assert_array_equal(got[[0, 3]], extra[:2].numpy())
    np.testing.assert_array_equal(got[[1, 2]], a[mask.numpy()][[1, 13]])
    with pytest.raises(IndexError):
        rows[torch.tensor([41])]


def test_training_from_rows_equals_training_in_memory(lt_project, tmp_path, monkeypatch):
    """SimCLR pre-training with the split read by rows (the paper-scale path on a CPU) gives the
    same encoder as with the split in memory."""
    import ltcl.methods.base as base

    def load_encoder_state(path):
        return torch.load(path, map_location="cpu", weights_only=True)["model"]

    weights = {}
    orig = base.TrainSet.from_numpy.__func__
    for lazy in (False, True):
        proj = copy_project(lt_project, tmp_path / f"p{int(lazy)}", {
            "ood": {"strategy": "none"}, "pretrain": {"method": "simclr", "epochs": 2}})
        monkeypatch.setattr(base, "LAZY_MIN_BYTES", 0 if lazy else 1 << 62)
        seen = []

        def spy(cls, *a, **k):
            ts = orig(cls, *a, **k)
            seen.append(type(ts.x).__name__)
            return ts

        monkeypatch.setattr(base.TrainSet, "from_numpy", classmethod(spy))
        proj.stage("pretrain.py")
        assert seen == ["DiskRows" if lazy else "Tensor"]
        weights[lazy] = load_encoder_state(proj.path("data/models/pretrain.pt"))
    assert weights[True].keys() == weights[False].keys()
    for k in weights[False]:
        assert torch.equal(weights[True][k], weights[False][k]), k

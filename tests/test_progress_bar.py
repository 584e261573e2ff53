"""The training progress bar counts the range being trained: the OOD warm-up to
``ood.warmup_epochs``, pretrain to ``pretrain.epochs``; the learning-rate schedule of both
still spans ``pretrain.epochs``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltcl.methods.base import TrainSet
from ltcl.methods.contrastive import SimCLR
from ltcl.params import Params
from ltcl.runtime import setup_runtime
from ltcl.train import loop
from ltcl.train.session import build_augment, new_encoder, run_session


class BarSpy:
    """Stands in for tqdm in ltcl.train.loop: records each bar's description."""

    descs: list[str] = []

    def __init__(self, iterable, desc=None, **_):
        self.iterable = iterable
        BarSpy.descs.append(desc)

    def __iter__(self):
        return iter(self.iterable)


@pytest.fixture
def bars(monkeypatch):
    BarSpy.descs = []
    monkeypatch.setattr(loop, "tqdm", BarSpy)
    return BarSpy.descs


def test_warmup_bar_counts_warmup_epochs(bars):
    """A 1-epoch warm-up of a 3-epoch schedule (as ood-sampling runs it: end_epoch =
    ood.warmup_epochs) shows "ood warm-up 1/1", then pretrain (from epoch 1) "pretrain 2/3",
    "pretrain 3/3"; every epoch's learning rate is the schedule's over pretrain.epochs."""
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 16, "proj_dim": 8},
        "ood": {"strategy": "none"},
        "runtime": {"device": "cpu", "amp": False},
        "pretrain": {"method": "simclr", "epochs": 3, "batch_size": 8, "warmup_epochs": 1},
    })
    cfg = params.pretrain
    rt = setup_runtime(params.runtime, 0)
    x = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    model, spec = new_encoder(params.model, x, rt)
    data = TrainSet.from_numpy(x, np.zeros(16, np.int64), 1, rt.device)
    method = SimCLR(model, data, cfg, rt, build_augment(params.augment, spec, rt.device))
    warm, _, _ = run_session(method, cfg, rt, None, desc="ood warm-up", end_epoch=1)
    assert bars == ["ood warm-up 1/1"]
    rest, _, _ = run_session(method, cfg, rt, None, desc="pretrain", start_epoch=1)
    assert bars == ["ood warm-up 1/1", "pretrain 2/3", "pretrain 3/3"]
    logs = warm + rest
    assert [log.epoch for log in logs] == [1, 2, 3]
    # the end-of-epoch learning rates of the 3-epoch schedule (1 warm-up epoch, then cosine)
    expect = [cfg.lr * 0.5 * (1 + np.cos(np.pi * (e - 1) / 2)) for e in (1, 2, 3)]
    np.testing.assert_allclose([log.lr for log in logs], expect, rtol=1e-6, atol=1e-9)
    assert all(np.isfinite(log.loss) for log in logs) and torch.isfinite(next(model.parameters())).all()

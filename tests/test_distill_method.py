"""Guided distillation (paper 003 Sec. 3.2): f selects positives / negatives and stays frozen."""

from __future__ import annotations

import copy

import numpy as np
import torch

from ltcl.methods.base import TrainSet
from ltcl.methods.distill.guided import GuidedDistillation, farthest_clusters
from ltcl.params import Params
from ltcl.runtime import Runtime
from ltcl.train.loop import fit
from ltcl.train.session import build_augment, new_encoder


def setup(**kdup):
    torch.manual_seed(0)
    params = Params.model_validate({"model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
                                    "distill": {"epochs": 2, "batch_size": 16, "warmup_epochs": 0, "kdup": kdup}})
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 8, 8, 1), dtype=np.uint8)
    teacher, spec = new_encoder(params.model, x, rt)
    student = copy.deepcopy(teacher)
    aug = build_augment(params.augment, spec, rt.device)
    data = TrainSet.from_numpy(x, np.zeros(40, dtype=np.int64), 1, rt.device)
    clusters = np.repeat(np.arange(4), 10)
    centroids = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [2.0, 0.0]])
    neighbours = (np.arange(40)[:, None] + np.arange(1, 4)[None, :]) % 40
    m = GuidedDistillation(student, data, params.distill, rt, aug, teacher=teacher, neighbours=neighbours,
                           clusters=clusters, centroids=centroids)
    return m, params, teacher


def test_farthest_clusters():
    c = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [2.0, 0.0]])
    assert farthest_clusters(c).tolist() == [2, 2, 0, 2]  # from x=2: |2-5| > |2-0|


def test_pick_uses_neighbours_and_farthest_cluster():
    m, _, _ = setup()
    idx = torch.arange(40)
    for _ in range(5):
        pos, neg = m.pick(idx)
        assert all(int(p) in m.neighbours[i].tolist() for i, p in zip(idx, pos))
        far = torch.tensor([2, 2, 0, 2])[m.cluster[idx]]
        assert torch.equal(m.cluster[neg], far)


def test_teacher_frozen_student_trains():
    for kw in ({}, {"guided_sampling": False}, {"guided_weighting": False}):
        m, params, teacher = setup(**kw)
        t_before = copy.deepcopy(teacher.state_dict())
        s_before = copy.deepcopy(m.model.state_dict())
        logs = fit(m, params.distill, m.runtime)
        assert all(np.isfinite(l.loss) for l in logs) and set(logs[0].parts) == {"gcl", "dl"}
        for k, v in teacher.state_dict().items():
            assert torch.equal(v, t_before[k]), k  # weights and BN statistics untouched
        assert all(not p.requires_grad for p in teacher.parameters())
        assert any(not torch.equal(v, s_before[k]) for k, v in m.model.state_dict().items())

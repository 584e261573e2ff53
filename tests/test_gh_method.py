"""GH on top of SimCLR, SDCLR and BCL (``pretrain.gh``, ltcl.methods.gh) recomputed from its verified
pieces (tests/test_losses_gh.py): the step's loss is the method's plus w L_GH(t1, t2, pi), the
moving average and the prior follow the released loop (train_cifar.py:143-290), SDCLR's single
term has the gradient of the released two backward passes, and the two-stage learning rate is
GH's lr_scheduler_warm.  Every configured value differs from its default, so a hard-coded default
is caught."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ltcl.errors import UserError
from ltcl.losses.contrastive import nt_xent
from ltcl.losses.gh import ema_beta, gh_loss, moving_average_update, prior_from_argmax, simplex_etf, target_logits
from ltcl.methods.base import TrainSet
from ltcl.methods.gh import ETF_STREAM
from ltcl.params import Params, validate
from ltcl.registry import PRETRAIN, get_method
from ltcl.runtime import Runtime
from ltcl.train.loop import lr_at
from ltcl.train.session import build_augment, new_encoder

N, K, TEMP, SEED, EPOCHS = 16, 8, 0.37, 3, 20
GH = {"enabled": True, "warmup_fraction": 0.25, "ramp_epochs": 4, "target_dim": K, "beta": 0.8,
      "beta_warmup": 0.6, "prior_every": 3, "sinkhorn_iters": 40, "sinkhorn_eps": 0.07, "gamma": 0.2}
RT = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


def make(method: str = "simclr", gh: dict | bool = True, n: int = N):
    torch.manual_seed(0)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
        "ood": {"strategy": "none"},
        "pretrain": {"method": method, "temperature": TEMP, "seed": SEED, "epochs": EPOCHS,
                     "gh": GH if gh is True else gh},
    })
    x = np.random.default_rng(0).integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    model, spec = new_encoder(params.model, x, RT)
    aug = build_augment(params.augment, spec, RT.device)
    data = TrainSet.from_numpy(x, np.arange(n) % 4, 4, RT.device)
    return get_method(method)(model, data, params.pretrain, RT, aug)


def test_gh_params_shorthand_and_the_methods_it_composes_with():
    raw = {"ood": {"strategy": "none"}, "pretrain": {"method": "sdclr", "gh": True}}
    assert validate(raw).pretrain.gh.enabled  # -S pretrain.gh=true
    assert {n for n, e in PRETRAIN.items() if e.gh} == {"simclr", "sdclr", "bcl"}
    with pytest.raises(Exception, match="GH composes with simclr, sdclr, bcl"):
        validate({"ood": {"strategy": "none"}, "pretrain": {"method": "tase", "gh": True}})
    with pytest.raises(UserError, match="target_dim = 32 is larger than model.proj_dim = 16"):
        make(gh={**GH, "target_dim": 32})


def test_target_is_the_seeded_etf():
    m = make()
    assert m.gh.warm_up == 5  # floor(0.25 x 20)
    torch.testing.assert_close(m.gh.target, simplex_etf(K, 16, seed=SEED * 256 + ETF_STREAM, dtype=torch.float32))


def _reference_step(m, idx, epoch, memory, seen, prior):
    """The step by hand from the verified pieces: SimCLR's views and NT-Xent, then w L_GH, then the
    memory (copy at first sight, else the moving average with ema_beta) and the prior where due."""
    torch.manual_seed(100 + epoch)
    v1, v2 = m.views(idx)
    z = m.embed(torch.cat([v1, v2]))
    z1, z2 = z[:len(idx)], z[len(idx):]
    loss = nt_xent(z1, z2, TEMP)
    e1, w_up = epoch + 1, 5
    w = 0.0 if e1 <= w_up else min((e1 - w_up) / GH["ramp_epochs"], 1.0)
    if w > 0:
        t1, t2 = target_logits(z1, m.gh.target), target_logits(z2, m.gh.target)
        loss = loss + w * gh_loss(t1, t2, prior, eps=GH["sinkhorn_eps"], iters=GH["sinkhorn_iters"], gamma=GH["gamma"])
    logits = target_logits(z1.detach(), m.gh.target)
    beta = GH["beta"] if epoch >= w_up else GH["beta_warmup"]
    for r, i in enumerate(idx.tolist()):  # the released per-sample loop
        memory[i] = logits[r].clone() if not seen[i] else beta * memory[i] + (1 - beta) * logits[r]
        seen[i] = True
    if (e1 % GH["prior_every"] == 0 or e1 == w_up) and e1 >= w_up:
        counts = torch.bincount(memory[seen].argmax(1), minlength=K).float()
        prior = counts / counts.sum()
    return loss, memory, seen, prior, w


@pytest.mark.parametrize("method", ["simclr", "sdclr"])
def test_step_is_the_method_plus_weighted_gh_and_its_updates(method):
    m = make(method)
    memory, seen, prior = torch.zeros(N, K), torch.zeros(N, dtype=torch.bool), None
    gen = torch.Generator().manual_seed(1)
    weights = set()
    for epoch in [0, 1, 4, 5, 6, 8, 11]:  # before W, the refresh at W, the ramp, a refresh epoch
        m.on_epoch_start(epoch)
        for _ in range(2):
            idx = torch.randperm(N, generator=gen)[:10]
            torch.manual_seed(100 + epoch)
            out = m.training_step(idx)
            if method == "simclr":  # SDCLR's pruned view: its weights and the parts are checked
                ref, memory, seen, prior, w = _reference_step(m, idx, epoch, memory, seen, prior)
                torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
            else:
                w = m.gh.weight(epoch)
            weights.add(w)
            assert ("gh" in out.parts) == (w > 0)
        if method == "simclr":
            torch.testing.assert_close(m.gh.memory, memory, rtol=1e-5, atol=1e-6)
            assert torch.equal(m.gh.seen, seen)
            if prior is None:
                assert m.gh.prior is None
            else:
                torch.testing.assert_close(m.gh.prior, prior)
    assert weights == {0.0, 0.25, 0.5, 1.0}


def test_sdclr_gh_has_the_gradient_of_the_released_two_backward_passes():
    """train_cifar.py:202-235: backward of nt_xent(f1, sg f2) + w L_GH(t1, sg t2), then of
    nt_xent(sg f1, f2) + w L_GH(sg t1, t2).  ltcl adds nt_xent(f1, f2) + w L_GH(t1, t2) once."""
    torch.manual_seed(0)
    target = simplex_etf(K, 16, seed=5, dtype=torch.float64)
    f1 = torch.randn(12, 16, dtype=torch.float64, requires_grad=True)
    f2 = torch.randn(12, 16, dtype=torch.float64, requires_grad=True)
    prior, w = torch.rand(K, dtype=torch.float64), 0.7

    def gh(a, b):
        return gh_loss(target_logits(a, target), target_logits(b, target), prior, iters=50,
                       sinkhorn_dtype=torch.float64)

    (nt_xent(f1, f2.detach(), 0.2) + w * gh(f1, f2.detach())).backward()
    (nt_xent(f1.detach(), f2, 0.2) + w * gh(f1.detach(), f2)).backward()
    released = (f1.grad.clone(), f2.grad.clone())
    f1.grad = f2.grad = None
    (nt_xent(f1, f2, 0.2) + w * gh(f1, f2)).backward()
    torch.testing.assert_close(f1.grad, released[0])
    torch.testing.assert_close(f2.grad, released[1])


def test_the_prior_counts_the_samples_seen_so_far():
    m = make()
    m.on_epoch_start(4)  # e + 1 = W: a refresh epoch
    m.training_step(torch.arange(0, 6))
    seen = m.gh.memory[:6]
    assert not m.gh.seen[6:].any()
    torch.testing.assert_close(m.gh.prior, prior_from_argmax(seen))
    assert int((m.gh.prior * 6).round().sum()) == 6


def test_bcl_with_gh_keeps_both_memories_and_resumes():
    m = make("bcl")
    for epoch in range(7):
        m.on_epoch_start(epoch)
        m.training_step(torch.arange(0, 8))
        m.training_step(torch.arange(8, N))
    st = m.state_dict()
    assert set(st) == {"gh", "memory", "seen"} and st["gh"]["prior"] is not None
    fresh = make("bcl")
    fresh.load_state_dict(st)
    torch.testing.assert_close(fresh.gh.memory, m.gh.memory)
    torch.testing.assert_close(fresh.gh.prior, m.gh.prior)
    torch.testing.assert_close(fresh.memory, m.memory)


def test_a_resampling_keeps_the_id_rows_and_resets_the_new_ones():
    m = make()
    m.on_epoch_start(0)
    m.training_step(torch.arange(N))
    before = m.gh.memory.clone()
    data = m.data.with_extra(m.data.x[:4])
    m.set_data(data)
    assert m.gh.memory.shape == (N + 4, K)
    torch.testing.assert_close(m.gh.memory[:N], before)
    assert not m.gh.seen[N:].any() and (m.gh.memory[N:] == 0).all()


def test_without_gh_the_step_is_simclrs():
    m, s = make(gh=False), make("simclr", gh=False)
    assert m.gh is None
    idx = torch.arange(N)
    torch.manual_seed(5)
    a = m.training_step(idx)
    torch.manual_seed(5)
    b = s.training_step(idx)
    assert torch.equal(a.loss, b.loss) and "gh" not in a.parts


def _released_lr(epoch, lr, lr_min, stage1_min, stage2_max, warm_up, epochs):
    """GH's lr_scheduler_warm (utils.py:432-443), 0-indexed epoch."""
    e = epoch + 1
    if e < 10:
        return lr * e / 10
    if e < warm_up:
        return stage1_min + (lr - stage1_min) * 0.5 * (1 + math.cos((e - 10) / (warm_up - 10) * math.pi))
    return lr_min + (stage2_max - lr_min) * 0.5 * (1 + math.cos((e - warm_up) / (epochs - warm_up) * math.pi))


def test_two_stage_lr_is_ghs_lr_scheduler_warm():
    """At the start of 0-indexed epoch e the released rate is its formula at e + 1; ltcl's at
    progress e + 1 is the same (lr_min 0 where the released code ends at 1e-6)."""
    cfg = Params().pretrain.model_copy(update={"epochs": 1000, "warmup_epochs": 10, "lr": 0.5,
                                               "lr_schedule": "two-stage", "lr_split": 0.5,
                                               "lr_stage1_min": 0.6, "lr_stage2_max": 0.4})
    for e in range(999):
        assert lr_at(e + 1, cfg) == pytest.approx(_released_lr(e, 0.5, 0.0, 0.3, 0.2, 500, 1000), rel=1e-6, abs=1e-9)
    cosine = cfg.model_copy(update={"lr_schedule": "cosine"})
    assert lr_at(700, cfg) != pytest.approx(lr_at(700, cosine))

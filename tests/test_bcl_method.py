"""BCL-I's step (ltcl.methods.bcl) recomputed from its verified pieces: the RandAugment draws and
the loss memory (tests/test_losses_bcl.py), the ops against PIL (tests/test_randaugment.py), and
SimCLR's augmentation and NT-Xent.  Every configured value differs from its default (temperature
0.37, beta 0.9, rand_strength 24, seed 3), so a hard-coded default is caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import copy_project

from ltcl.data.randaugment import OPS, cutout_centres
from ltcl.losses.bcl import AUGMENT_OPS, momentum_loss_update, momentum_weights, nt_xent_per_sample, randaugment_draws
from ltcl.losses.contrastive import nt_xent
from ltcl.methods.base import TrainSet
from ltcl.methods.bcl import SEED_STREAM
from ltcl.params import Params
from ltcl.registry import PRETRAIN, get_method
from ltcl.runtime import Runtime
from ltcl.train.session import build_augment, new_encoder

N, TEMP, BETA, STRENGTH, SEED = 16, 0.37, 0.9, 24.0, 3
RT = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


def make(method: str = "bcl", rand_k: int = 1, channels: int = 3):
    torch.manual_seed(0)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
        "ood": {"strategy": "none"},
        "pretrain": {"method": method, "temperature": TEMP, "seed": SEED,
                     "bcl": {"beta": BETA, "rand_k": rand_k, "rand_strength": STRENGTH}},
    })
    x = np.random.default_rng(0).integers(0, 256, size=(N, 16, 16, channels), dtype=np.uint8)
    model, spec = new_encoder(params.model, x, RT)
    aug = build_augment(params.augment, spec, RT.device)
    data = TrainSet.from_numpy(x, np.arange(N) % 4, 4, RT.device)
    return get_method(method)(model, data, params.pretrain, RT, aug)


def reference_views(m, idx, weights, generator, global_seed):
    """Both views by hand: SimCLR's augmentation, then per sample and slot the drawn op applied to
    that one image (uint8, round(255 x)), then the normalisation.  The draws come first, then per
    view and slot one Cutout-centre draw for the rows whose Cutout is applied (in row order)."""
    own = m.cfg.own
    draws = randaugment_draws(weights[idx], own.rand_k, own.rand_strength, generator, views=2)
    torch.manual_seed(global_seed)
    cut = [o.name for o in AUGMENT_OPS].index("Cutout")
    out = []
    for view in range(2):
        x01 = m.augment.unnormalised(m.data.x[idx])
        h, w = x01.shape[-2:]
        for slot in range(own.rand_k):
            applied, op = draws.applied[:, view, slot], draws.op[:, view, slot]
            rows_c = torch.nonzero(applied & (op == cut)).flatten().tolist()
            centres = cutout_centres(len(rows_c), h, w, generator=generator) if rows_c else None
            for i in range(len(idx)):
                if not bool(applied[i]):
                    continue
                name = AUGMENT_OPS[int(op[i])].name
                img = (x01[i:i + 1] * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
                v = draws.value[i:i + 1, view, slot]
                if name == "Cutout":
                    j = rows_c.index(i)
                    img = OPS[name](img, v, centres[0][j:j + 1], centres[1][j:j + 1])
                else:
                    img = OPS[name](img, v)
                x01[i] = img.permute(0, 3, 1, 2)[0].float() / 255.0
        out.append(m.augment.normalise(x01))
    return out, draws


def test_without_weights_the_views_are_simclrs():
    """Epoch 0 (w = 0): no op is applied and the views are SimCLR's, bit for bit."""
    m, s = make("bcl"), make("simclr")
    m.on_epoch_start(0)
    idx = torch.arange(N)
    torch.manual_seed(7)
    a = m.views(idx)
    torch.manual_seed(7)
    b = s.views(idx)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("rand_k,channels", [(1, 3), (2, 3), (1, 1)])
def test_step_views_loss_and_memory_from_the_verified_pieces(rand_k, channels):
    m = make("bcl", rand_k, channels)
    m.on_epoch_start(0)
    idx = torch.arange(N)
    m.training_step(idx)  # epoch 0: first sight of every sample
    m.on_epoch_start(1)
    np.testing.assert_array_equal(m.weights.numpy(), momentum_weights(m.memory).numpy())
    assert float(m.weights.max()) == 1.0 or float(m.weights.min()) == 0.0  # the released mapping's ends

    idx = torch.tensor([3, 0, 9, 12, 5, 7, 1, 14])
    g0 = m.generator.get_state()
    memory, seen = m.memory.clone(), m.seen.clone()
    gen = torch.Generator()
    gen.set_state(g0)
    (r1, r2), draws = reference_views(m, idx, m.weights, gen, 11)
    assert bool(draws.applied.any()) and not bool(draws.applied.all())  # some ops applied, some not

    torch.manual_seed(11)
    m.generator.set_state(g0)
    v1, v2 = m.views(idx)
    assert torch.equal(v1, r1) and torch.equal(v2, r2)

    torch.manual_seed(11)
    m.generator.set_state(g0)
    out = m.training_step(idx)
    z1, z2 = m.encode_pair(r1, r2)  # train mode: batch statistics, the step's own forward
    torch.testing.assert_close(out.loss, nt_xent(z1, z2, TEMP), rtol=1e-6, atol=1e-7)
    per = nt_xent_per_sample(z1.detach().double(), z2.detach().double(), TEMP)
    mem, sn = momentum_loss_update(memory, seen, idx, per, BETA)
    torch.testing.assert_close(m.memory, mem, rtol=1e-6, atol=1e-9)
    assert torch.equal(m.seen, sn) and int(sn.sum()) == N


def test_resume_state_round_trip():
    m = make("bcl")
    m.on_epoch_start(0)
    m.training_step(torch.arange(N))
    m.on_epoch_start(1)
    from ltcl.train.resume import load_method_state, method_state

    state = method_state(m)  # what the resume checkpoint holds of the method
    torch.manual_seed(5)
    a = m.views(torch.arange(N))
    m2 = make("bcl")
    load_method_state(m2, state)
    m2.on_epoch_start(1)
    torch.manual_seed(5)
    b = m2.views(torch.arange(N))
    assert torch.equal(m2.memory, m.memory) and all(torch.equal(p, q) for p, q in zip(a, b))


def test_a_new_training_set_keeps_the_id_memory_and_starts_ood_rows_unseen():
    m = make("bcl")
    m.on_epoch_start(0)
    m.training_step(torch.arange(N))
    before = m.memory.clone()
    extra = torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)
    m.set_data(m.data.with_extra(extra))
    assert len(m.memory) == N + 5 and torch.equal(m.memory[:N], before)
    assert not bool(m.seen[N:].any()) and bool(m.seen[:N].all())
    assert torch.equal(m.weights[:N], momentum_weights(before)) and not bool(m.weights[N:].any())


def test_entry_and_generator_seed():
    e = PRETRAIN["bcl"]
    assert e.display == "BCL-I" and not e.supervised and e.ddp and not e.classifier
    m = make("bcl")
    assert torch.equal(m.generator.get_state(), torch.Generator().manual_seed(SEED * 65536 + SEED_STREAM).get_state())


def test_bcl_runs_the_stages_with_kdup_sampling(lt_project, tmp_path):
    """BCL-I pre-trains through the stages with KDUP's OOD images (re-sampled every epoch)."""
    proj = copy_project(lt_project, tmp_path / "p", {"ood": {"strategy": "kdup"}, "pretrain": {"method": "bcl",
                                                                                             "epochs": 3}})
    proj.stage("ood_sampling.py")
    proj.stage("pretrain.py")
    import json

    m = json.loads(proj.path("metrics/pretrain.json").read_text())
    assert m["method"] == "bcl" and m["ood_images"] > 0 and np.isfinite(m["final_loss"])

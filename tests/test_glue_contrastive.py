"""Glue of the contrastive pre-training methods (``ltcl.methods.contrastive``): one real
``training_step`` of ``simclr``, ``sdclr`` and ``psd`` on a tiny batch, its loss and logged
parts recomputed independently from the verified losses (``ltcl.losses``) with the configured
temperature, alpha, prune ratio and k_pos.

How the reference is built, independently of the method's own code:

* the augmentation is a deterministic stand-in that records every call (its uint8 input and
  the float view it returned), so the reference sees the very views the step used; the first
  call is view 1, the second view 2, the third (PSD) the augmented neighbour block;
* the embeddings are recomputed with a copy of the encoder taken just before the step, in
  train mode (BatchNorm on batch statistics, as in the loop) and with the batch composition
  the module documents (SimCLR: one dense forward of [view 1; view 2]; SDCLR: view 1 dense,
  view 2 pruned; PSD: [view 1; neighbours; view 2] in one dense forward, or with
  ``pruned_branch: true`` [view 1; neighbours] dense and view 2 pruned);
* the SDCLR pruned branch is rebuilt here: global magnitude masks by sorting |w| of every
  backbone conv weight (the projection head excluded), a copy of the encoder with the weights
  multiplied by the masks and the pruned branch's own BatchNorms loaded into it;
* the PSD neighbours are a cosine kNN in torch within each domain on the un-augmented,
  normalised images' projections (eval mode), and the positive mask is a Python loop.

Every configured value differs from its default (temperature 0.37, alpha 0.45, prune_ratio 0.7,
k_pos 2), so a hard-coded default is caught.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.testing import assert_close

from ltcl.losses.contrastive import nt_xent
from ltcl.losses.kdup import domain_loss, psd_loss
from ltcl.methods.base import TrainSet
from ltcl.params import Params
from ltcl.registry import get_method
from ltcl.runtime import Runtime
from ltcl.train.session import new_encoder

N_ID, N_OOD = 12, 8
TEMP, ALPHA, PRUNE, K_POS = 0.37, 0.45, 0.7, 2
TOL = dict(rtol=1e-5, atol=1e-6)


class RecordingAugment(nn.Module):
    """Deterministic augmentation (normalise, then a call-dependent roll and flip) that records
    each call's uint8 input and returned view."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.calls)
        v = (x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        v = v.roll(k, dims=-2)
        v = (v.flip(-1) if k % 2 else v).contiguous()
        self.calls.append((x.detach().clone(), v.detach().clone()))
        return v


def make_method(method: str, with_ood: bool, **pretrain):
    torch.manual_seed(0)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
        "ood": {"strategy": "none"},
        "pretrain": {"method": method, "temperature": TEMP, "alpha": ALPHA, "prune_ratio": PRUNE,
                     "psd": {"k_pos": K_POS}, **pretrain},
    })
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N_ID, 8, 8, 1), dtype=np.uint8)
    model, spec = new_encoder(params.model, x, rt)
    aug = RecordingAugment(spec["mean"], spec["std"])
    data = TrainSet.from_numpy(x, np.arange(N_ID) % 4, 4, rt.device)
    if with_ood:
        ood = rng.integers(0, 256, size=(N_OOD, 8, 8, 1), dtype=np.uint8)
        data = data.with_extra(torch.as_tensor(ood))
        assert data.domain.tolist() == [0] * N_ID + [1] * N_OOD and (data.labels[N_ID:] == -1).all()
    m = get_method(method)(model, data, params.pretrain, rt, aug)
    return m


def batch(with_ood: bool) -> torch.Tensor:
    """A batch in shuffled order; with OOD images it mixes both domains."""
    return torch.tensor([13, 2, 7, 17, 0, 5, 19]) if with_ood else torch.tensor([9, 2, 7, 11, 0, 5])


def snapshot(m):
    """The encoder (and pruned-branch norms) as they are when the step runs."""
    model = copy.deepcopy(m.model).train()
    norms = copy.deepcopy(m.pruned_norms) if m.pruned_norms is not None else None
    return model, norms


def image_ids(m, images: torch.Tensor) -> torch.Tensor:
    """Index into the training set of each uint8 image (the tiny random images are unique)."""
    flat = m.data.x.reshape(len(m.data), -1)
    hits = (images.reshape(len(images), 1, -1) == flat[None]).all(-1)
    assert (hits.sum(1) == 1).all()
    return hits.float().argmax(1)


def reference_masks(model: nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """Global magnitude pruning written out: the round(ratio * n) smallest |w| over all
    backbone conv / linear weights are pruned (the projection head is never pruned)."""
    names = [f"{n}.weight" for n, mod in model.named_modules()
             if isinstance(mod, (nn.Conv2d, nn.Linear)) and not n.startswith("head")]
    assert names, "no prunable weights"
    ws = [model.get_parameter(n).detach() for n in names]
    flat = torch.cat([w.abs().reshape(-1) for w in ws])
    k = int(round(ratio * flat.numel()))
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    out, off = {}, 0
    for n, w in zip(names, ws):
        out[n] = keep[off: off + w.numel()].reshape(w.shape)
        off += w.numel()
    return out


def pruned_copy(model: nn.Module, norms: nn.Module, ratio: float) -> nn.Module:
    """The SDCLR pruned branch as a separate network: masked weights, the branch's own BNs."""
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for name, mask in reference_masks(model, ratio).items():
            pruned.get_parameter(name).mul_(mask)
    bns = [mod for mod in pruned.modules() if isinstance(mod, _BatchNorm)]
    own = [mod for mod in norms.modules() if isinstance(mod, _BatchNorm)]
    assert len(bns) == len(own) > 0
    for dst, src in zip(bns, own):
        dst.load_state_dict(src.state_dict())
    return pruned.train()


def perturb_pruned_norms(m) -> None:
    """Make the pruned branch's BatchNorms differ from the dense ones (they start as copies), so
    a step that used the dense BNs for the pruned branch cannot match."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for mod in m.pruned_norms.modules():
            if isinstance(mod, _BatchNorm):
                mod.weight.copy_(1.0 + 0.5 * torch.rand(mod.weight.shape, generator=g))
                mod.bias.copy_(0.3 * torch.randn(mod.bias.shape, generator=g))


def z_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[1].float()


def reference_neighbours(m, k: int) -> torch.Tensor:
    """(N, k) cosine nearest neighbours of every training image among the other images of its
    own domain, on the projections of the un-augmented normalised images (encoder in eval)."""
    model = copy.deepcopy(m.model).eval()
    x = (m.data.x.permute(0, 3, 1, 2).float() / 255.0 - m.augment.mean) / m.augment.std
    z = F.normalize(z_of(model, x), dim=1)
    sim = z @ z.T
    dom = m.data.domain
    allowed = (dom[:, None] == dom[None, :]) & ~torch.eye(len(dom), dtype=torch.bool)
    sim = sim.masked_fill(~allowed, float("-inf"))
    top = sim.topk(k, dim=1)
    assert torch.isfinite(top.values).all()
    # no near-ties at the k-th place, so the set of neighbours is unambiguous
    nxt = sim.topk(k + 1, dim=1).values[:, -1]
    assert ((top.values[:, -1] - nxt) > 1e-4).all()
    return top.indices


def assert_views(m, idx: torch.Tensor, n_calls: int):
    calls = m.augment.calls
    assert len(calls) == n_calls
    for x_in, _ in calls[:2]:
        assert torch.equal(x_in, m.data.x[idx])  # both views show the batch's images
    return [v for _, v in calls]


def assert_loss(out, expected: torch.Tensor, parts: dict[str, torch.Tensor]):
    assert out.loss.requires_grad
    assert_close(out.loss.detach(), expected, **TOL)
    assert set(out.parts) == set(parts)
    for k, v in parts.items():
        assert_close(torch.tensor(out.parts[k]), v.detach(), **TOL, msg=lambda s, k=k: f"part {k}: {s}")


# --------------------------------------------------------------------------- SimCLR / COLT
@pytest.mark.parametrize("with_ood,alpha", [(False, ALPHA), (True, ALPHA), (True, 0.0)])
def test_simclr_step_is_nt_xent_plus_alpha_domain_loss(with_ood, alpha):
    """SimCLR: NT-Xent of the two views at pretrain.temperature; with OOD images in the batch and
    alpha > 0 (COLT, paper 003 Eq. 9/10) + alpha * L_DD on both views' projections with each
    row's domain; alpha = 0 (or ID only) adds nothing and logs no ``dd``."""
    m = make_method("simclr", with_ood, alpha=alpha)
    m.on_epoch_start(0)
    m.model.train()
    idx = batch(with_ood)
    ref, _ = snapshot(m)
    out = m.training_step(idx)
    v1, v2 = assert_views(m, idx, 2)

    z = z_of(ref, torch.cat([v1, v2]))  # one dense forward of both views
    z1, z2 = z[: len(idx)], z[len(idx):]
    contrastive = nt_xent(z1, z2, TEMP)
    if with_ood and alpha > 0:
        dom = torch.tensor([0 if int(i) < N_ID else 1 for i in idx])
        assert 0 < int(dom.sum()) < len(idx)
        dd = domain_loss(torch.cat([z1, z2]), torch.cat([dom, dom]), TEMP)
        assert float(dd) > 0.1  # a real term, large enough for a doubled alpha to show
        assert_loss(out, contrastive + ALPHA * dd, {"contrastive": contrastive, "dd": dd})
    else:
        assert_loss(out, contrastive, {"contrastive": contrastive})
    assert out.images == 2 * len(idx)


# --------------------------------------------------------------------------- SDCLR
@pytest.mark.parametrize("with_ood", [False, True])
def test_sdclr_second_view_goes_through_pruned_branch(with_ood):
    """SDCLR: masks re-computed at every epoch start from the current weights (global magnitude
    pruning at pretrain.prune_ratio), view 1 through the dense encoder, view 2 through the pruned
    one with the branch's own BatchNorms; loss = NT-Xent(z_dense(v1), z_pruned(v2)) at the
    temperature (+ alpha * L_DD with OOD images)."""
    m = make_method("sdclr", with_ood)
    own_norm_params = {id(p) for p in m.pruned_norms.parameters()}
    assert own_norm_params and own_norm_params <= {id(p) for p in m.parameters()}  # trained too
    m.on_epoch_start(0)
    with torch.no_grad():  # the dense weights move between epochs: epoch 1 must re-prune
        g = torch.Generator().manual_seed(3)
        for name, p in m.model.named_parameters():
            if name.endswith("weight") and p.dim() == 4:
                p.mul_(torch.rand(p.shape, generator=g) * 2)
    m.on_epoch_start(1)
    perturb_pruned_norms(m)
    m.model.train()
    idx = batch(with_ood)
    ref, norms = snapshot(m)
    out = m.training_step(idx)
    v1, v2 = assert_views(m, idx, 2)

    z1 = z_of(ref, v1)
    z2 = z_of(pruned_copy(ref, norms, PRUNE), v2)
    contrastive = nt_xent(z1, z2, TEMP)
    parts = {"contrastive": contrastive}
    expected = contrastive
    if with_ood:
        dom = (idx >= N_ID).long()
        dd = domain_loss(torch.cat([z1, z2]), torch.cat([dom, dom]), TEMP)
        parts["dd"] = dd
        expected = expected + ALPHA * dd
    assert_loss(out, expected, parts)


# --------------------------------------------------------------------------- PSD (KDUP pre-training)
def psd_reference(m, idx, nb_ref, views, ref, pruned):
    """Rows, positive mask, domains and the loss of paper 003 Eq. 8-10 for the recorded views."""
    v1, v2, vn = views
    b = len(idx)
    nb_ids = image_ids(m, m.augment.calls[2][0])
    # the neighbour block: exactly the anchors' k_pos within-domain neighbours
    assert sorted(nb_ids.tolist()) == sorted(nb_ref[idx].reshape(-1).tolist())
    if pruned is None:  # one dense forward of [view 1; neighbours; view 2]
        zz = z_of(ref, torch.cat([v1, vn, v2]))
        za, zb = zz[: len(v1) + len(vn)], zz[len(v1) + len(vn):]
    else:  # [view 1; neighbours] dense, view 2 pruned
        za, zb = z_of(ref, torch.cat([v1, vn])), z_of(pruned, v2)
    z = torch.cat([za[:b], zb, za[b:]])
    ids = torch.cat([idx, idx, nb_ids])
    nbs = {int(i): set(nb_ref[i].tolist()) for i in range(len(nb_ref))}
    n = len(ids)
    pos = torch.zeros(n, n, dtype=torch.bool)
    for a in range(n):
        for c in range(n):
            i, j = int(ids[a]), int(ids[c])
            pos[a, c] = i == j or j in nbs[i] or i in nbs[j]
    dom = (ids >= N_ID).long()
    psd = psd_loss(z, pos, TEMP)
    return z, ids, dom, psd


@pytest.mark.parametrize("with_ood,sdclr", [(False, False), (True, False), (True, True)])
def test_psd_step_brings_neighbours_and_matches_eq8_10(with_ood, sdclr):
    """PSD: neighbours = cosine kNN (k_pos) within each domain on the un-augmented projections;
    the step adds the anchors' neighbours (augmented) to the batch; positives = same image or
    in each other's neighbour lists; loss = L_PSD at the temperature + alpha * L_DD over all
    rows with their domains; ``pretrain.pruned_branch: true`` sends view 2 through the pruned branch."""
    m = make_method("psd", with_ood, pruned_branch=sdclr)
    assert (m.pruned_norms is not None) == sdclr
    m.on_epoch_start(0)
    nb_ref = reference_neighbours(m, K_POS)
    assert m.neighbours.shape == (len(m.data), K_POS)
    for i in range(len(m.data)):
        assert set(m.neighbours[i].tolist()) == set(nb_ref[i].tolist()), i
    if sdclr:
        perturb_pruned_norms(m)
    m.model.train()
    idx = batch(with_ood)
    ref, norms = snapshot(m)
    out = m.training_step(idx)
    views = assert_views(m, idx, 3)
    pruned = pruned_copy(ref, norms, PRUNE) if sdclr else None
    z, ids, dom, psd = psd_reference(m, idx, nb_ref, views, ref, pruned)
    assert out.images == len(idx) * (2 + K_POS)
    if with_ood:
        assert 0 < int(dom[: len(idx)].sum()) < len(idx)
        dd = domain_loss(z, dom, TEMP)
        assert float(dd) > 0.1
        assert_loss(out, psd + ALPHA * dd, {"psd": psd, "dd": dd})
    else:
        assert_loss(out, psd, {"psd": psd})

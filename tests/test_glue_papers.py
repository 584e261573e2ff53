"""Glue of papers 000-002 and the TS baseline: one real ``training_step`` (and ``on_epoch_start``
where the method refreshes state) on a tiny labelled set, with the loss recomputed independently.

Each test records what the step really used: the uint8 images handed to the augmentation (the
deterministic stand-in of tests/fixed_augment.py, shared with test_ddp, which remembers its inputs) and the encoder's outputs (forward hooks).  From those
captured embeddings the expected loss is rebuilt with the verified pure functions of
``ltcl.losses`` (or a direct formula of the paper's equation) and the *configured* values
(temperatures and their schedules, pseudo-label sizes, class counts, alpha/beta/gamma), never by
calling the method's own helpers; the optimised loss and its logged ``parts`` must match to
float32 rounding.  Configured values are chosen away from the defaults and from each other
(e.g. gamma != beta, ProCo's alpha != 0.5) so that a swapped or hard-coded value shows.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixed_augment import FixedAugment
from ltcl.losses.contrastive import nt_xent
from ltcl.losses.gloco import gloco_simclr_loss
from ltcl.losses.gml import gml_loss, gml_queue_lengths
from ltcl.losses.proco import class_prototypes, kcenter_greedy_per_class, proco_loss
from ltcl.losses.tase import tase_loss
from ltcl.methods.base import TrainSet
from ltcl.params import Params
from ltcl.registry import get_method
from ltcl.runtime import Runtime
from ltcl.train.session import new_encoder

COUNTS = [16, 8, 4, 2]  # long-tailed toy set: 30 labelled images, 4 classes
TOL = dict(rtol=1e-6, atol=1e-6)


class Hook:
    """Records (input, output) of every forward call of ``module`` (outputs detached copies) while
    used as a context manager: ``with Hook(m.model) as hook: out = m.training_step(idx)``."""

    def __init__(self, module: nn.Module):
        self.calls: list[tuple[torch.Tensor, object]] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inp, out):
        def copy(t):
            return tuple(copy(o) for o in t) if isinstance(t, tuple) else t.detach().clone().float()
        self.calls.append((inp[0].detach().clone(), copy(out)))

    def __enter__(self) -> "Hook":
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def build(method: str, counts=COUNTS, distill: dict | None = None, own: dict | None = None, **pretrain):
    """``own``: the method's own subsection (pretrain.<method>); ``distill``: GML's student's (distill.gml)."""
    torch.manual_seed(0)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
        "ood": {"strategy": "none"},
        "pretrain": {"method": method, "epochs": 2, "batch_size": 10, "warmup_epochs": 1, **pretrain,
                     method: own or {}},
        "distill": {"method": "gml" if method == "gml" else "kdup", "epochs": 2, "batch_size": 10,
                    "warmup_epochs": 0, "gml": distill or {}},
    })
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=True)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(counts)), counts)
    x = rng.integers(0, 255, size=(len(y), 8, 8, 1), dtype=np.uint8)
    assert len({r.tobytes() for r in x}) == len(x)  # every image identifiable by its pixels
    model, _ = new_encoder(params.model, x, rt)
    data = TrainSet.from_numpy(x, y, len(counts), rt.device)
    return model, FixedAugment(), data, params, rt


def image_ids(data: TrainSet, images: torch.Tensor) -> torch.Tensor:
    """Dataset index of every uint8 image in ``images`` (matched by pixels)."""
    lookup = {data.x[i].numpy().tobytes(): i for i in range(len(data))}
    return torch.tensor([lookup[im.numpy().tobytes()] for im in images])


def close(got, want):
    torch.testing.assert_close(torch.as_tensor(got, dtype=torch.float32), torch.as_tensor(want, dtype=torch.float32),
                               **TOL)


# ---------------------------------------------------------------------------------------------
# TS (Kukleva et al. 2023): cosine temperature schedule + NT-Xent
# ---------------------------------------------------------------------------------------------

def test_ts_step_uses_the_cosine_temperature_of_the_current_epoch():
    tau_min, tau_max, fraction, epochs = 0.12, 0.48, 0.4, 20  # T = 8 epochs, TS's t_max = 4
    model, aug, data, params, rt = build("ts", own={"tau_min": tau_min, "tau_max": tau_max,
                                                    "period_fraction": fraction}, temperature=0.3, epochs=epochs)
    t_max = fraction * epochs / 2
    m = get_method("ts")(model, data, params.pretrain, rt, aug)
    idx = torch.tensor([0, 3, 7, 12, 16, 20, 24, 26, 28, 29])
    for epoch in (0, 1, 3, 6):
        m.on_epoch_start(epoch)
        with Hook(m.model) as hook:
            out = m.training_step(idx)
        # TS's train_simCLR.py:399 at its epoch e = ltcl's epoch + 1 (its loop counts from 1)
        want_tau = tau_min + 0.5 * (tau_max - tau_min) * (1 + math.cos(math.pi * (epoch + 1) / t_max))
        assert out.parts["tau"] == pytest.approx(want_tau, rel=1e-9)
        (inp, (_, z)), = hook.calls
        b = len(idx)
        assert torch.equal(image_ids(data, aug.inputs[-2]), idx) and torch.equal(image_ids(data, aug.inputs[-1]), idx)
        want = nt_xent(z[:b], z[b:], want_tau)
        close(out.loss.detach(), want)
        assert out.parts["contrastive"] == pytest.approx(float(want), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# TASE (paper 000): pseudo-labels, per-sample temperatures, negative weights
# ---------------------------------------------------------------------------------------------

def _designed_pseudo_labels(n: int) -> list[np.ndarray]:
    """Two pseudo-labellings with 4 clusters of sizes 20/10/6/4 (three distinct sizes in between
    the extremes, so linear and log mappings differ), on different samples."""
    base = np.repeat(np.arange(4), [20, 10, 6, 4])
    assert len(base) == n
    rng = np.random.default_rng(3)
    return [base[rng.permutation(n)], (base[rng.permutation(n)] + 1) % 4]


@pytest.mark.parametrize("mapping", ["linear", "log"])
def test_tase_step_uses_configured_pseudo_labels_temperatures_and_weights(monkeypatch, mapping):
    import ltcl.sampling.clustering as clustering

    B, F_, S = 2, 3, 6
    tau_min, tau_max, base_tau = 0.15, 0.6, 0.25
    counts = [10, 10, 10, 10]
    model, aug, data, params, rt = build("tase", counts=counts, temperature=base_tau,
                                         own={"warmup": B, "refresh": F_, "full": S, "mapping": mapping,
                                              "tau_min": tau_min, "tau_max": tau_max, "clusters": 0})
    m = get_method("tase")(model, data, params.pretrain, rt, aug)
    designs = _designed_pseudo_labels(len(data))
    refreshes: list[tuple[int, int]] = []  # (epoch, k) of every k-means pseudo-labelling
    real_kmeans, real_assign = clustering.kmeans, clustering.assign_nearest

    def kmeans(z, k, seed, **kw):
        refreshes.append((m.epoch, int(k)))
        assert z.shape == (len(data), params.model.proj_dim)  # on the projections of the whole set
        return real_kmeans(z, k, seed, **kw)

    def assign_nearest(z, centroids):
        real_assign(z, centroids)
        return designs[(len(refreshes) - 1) % 2].copy()

    monkeypatch.setattr(clustering, "kmeans", kmeans)
    monkeypatch.setattr(clustering, "assign_nearest", assign_nearest)

    idx = torch.tensor([1, 4, 9, 13, 17, 22, 25, 31, 36, 39])
    b = len(idx)
    steps = {1: None, 4: designs[0], 7: designs[1]}  # epoch -> pseudo-labels in force
    for epoch in range(8):
        m.on_epoch_start(epoch)
        if epoch not in steps:
            continue
        with Hook(m.model) as hook:
            out = m.training_step(idx)
        (_, (_, z)), = hook.calls
        z1, z2 = z[:b], z[b:]
        pseudo = steps[epoch]
        if pseudo is None:  # SimCLR warm-up before B, at pretrain.temperature
            want = nt_xent(z1, z2, base_tau)
            close(out.loss.detach(), want)
            assert out.parts == {"contrastive": pytest.approx(float(want), rel=1e-6)}
            continue
        sizes = torch.tensor(np.bincount(pseudo, minlength=4)[pseudo], dtype=torch.float64)
        f = torch.log if mapping == "log" else (lambda t: t)
        u = (f(sizes) - f(sizes.min())) / (f(sizes.max()) - f(sizes.min()))
        lam = min(max((epoch - B) / (S - B), 0.0), 1.0)
        tau = (1 - lam) * base_tau + lam * (tau_min + (tau_max - tau_min) * u)
        weight = sizes.rsqrt()
        want = tase_loss(z1, z2, tau[idx].float(), weight[idx].float())
        close(out.loss.detach(), want)
        assert out.parts["tase"] == pytest.approx(float(want), rel=1e-6)
        assert out.parts["tau_mean"] == pytest.approx(float(tau[idx].mean()), rel=1e-6)
    # refreshed at B and every F epochs after it, k = number of classes (pretrain.tase.clusters: 0)
    assert refreshes == [(B, 4), (B + F_, 4)]


# ---------------------------------------------------------------------------------------------
# GloCo, GloCo+ProCo (paper 001)
# ---------------------------------------------------------------------------------------------

GLOCO = dict(k=3, gamma=0.15, tau_max=0.7)  # pretrain.gloco (and the GloCo keys of pretrain.gloco-proco)
IDX = torch.tensor([0, 5, 11, 16, 19, 24, 26, 28, 29, 3])


def _gloco_expected(data, aug, hook, idx, k, gamma, tau_max):
    """L_GloCo from the captured step: global positives identified from the augmentation's
    inputs, per-anchor temperature of Eq. 13 from the class counts."""
    b = len(idx)
    v1_in, v2_in, g_in = aug.inputs[-3:]
    assert torch.equal(image_ids(data, v1_in), idx) and torch.equal(image_ids(data, v2_in), idx)
    assert len(g_in) == b * k, f"{len(g_in)} global positives for {b} anchors, want k = {k} each"
    glob = image_ids(data, g_in).reshape(b, k)  # row-major: anchor i's k positives together
    y = data.labels
    assert torch.equal(y[glob], y[idx][:, None].expand(b, k))  # of the anchor's class
    assert not (glob == idx[:, None]).any()  # never the anchor itself (every class has > 1 image)
    (inp, (_, z)), = hook.calls
    assert inp.shape[0] == (2 + k) * b
    z1, z2, zg = z[:b], z[b:2 * b], z[2 * b:].reshape(b, k, -1)
    counts = torch.bincount(y, minlength=data.num_classes).double()
    tau = (gamma + (tau_max - gamma) * counts / counts.max())[y[idx]]  # Eq. 13
    return gloco_simclr_loss(z1, z2, zg, tau.float()), z1, z2, glob


def test_gloco_step_uses_k_global_positives_and_eq13_temperature():
    model, aug, data, params, rt = build("gloco", own=GLOCO)
    m = get_method("gloco")(model, data, params.pretrain, rt, aug)
    m.on_epoch_start(0)
    with Hook(m.model) as hook:
        out = m.training_step(IDX)
    want, _, _, glob = _gloco_expected(data, aug, hook, IDX, GLOCO["k"], GLOCO["gamma"], GLOCO["tau_max"])
    close(out.loss.detach(), want)
    assert out.parts == {"gloco": pytest.approx(float(want), rel=1e-6)}
    assert not torch.isin(glob, IDX).all()  # drawn from the whole training set, not the batch


def test_gloco_proco_step_mixes_alpha_and_uses_coreset_prototypes():
    alpha, frac, temp = 0.3, 0.25, 0.35
    model, aug, data, params, rt = build("gloco-proco", temperature=temp,
                                         own={"alpha": alpha, "coreset": frac, **GLOCO})
    m = get_method("gloco-proco")(model, data, params.pretrain, rt, aug)
    y = data.labels
    with Hook(m.model) as hook:
        m.on_epoch_start(0)
    # the coreset: k-center greedy per class on the L2-normalised projections of the whole set
    (_, (_, z_all)), = hook.calls[:1]
    assert z_all.shape[0] == len(data)
    want_core = kcenter_greedy_per_class(F.normalize(z_all, dim=1), y, frac, seed=params.pretrain.seed)
    assert np.bincount(y[want_core].numpy(), minlength=4).tolist() == [4, 2, 1, 1]
    assert torch.equal(image_ids(data, aug.inputs[-2]), want_core)
    assert torch.equal(image_ids(data, aug.inputs[-1]), want_core)

    # prototypes are recomputed at every epoch from two augmented views of the coreset
    with Hook(m.model) as hook:
        m.on_epoch_start(1)
    assert len(hook.calls) == 2 and all(torch.equal(image_ids(data, a), want_core) for a in aug.inputs[-2:])
    sets = [class_prototypes(z, y[want_core], data.num_classes) for _, (_, z) in hook.calls]
    protos = torch.stack([p for p, _ in sets])
    present = torch.stack([p for _, p in sets])

    with Hook(m.model) as hook:
        out = m.training_step(IDX)
    l_gloco, z1, z2, _ = _gloco_expected(data, aug, hook, IDX, GLOCO["k"], GLOCO["gamma"], GLOCO["tau_max"])
    l_proco = proco_loss(torch.stack([z1, z2]), y[IDX], protos, temp, prototype_mask=present)
    close(out.loss.detach(), alpha * l_gloco + (1 - alpha) * l_proco)
    assert out.parts == {"gloco": pytest.approx(float(l_gloco), rel=1e-6),
                         "proco": pytest.approx(float(l_proco), rel=1e-6)}


# ---------------------------------------------------------------------------------------------
# GML (paper 002): teacher (Eq. 7) and student (gamma L_cls + beta L_GML, teacher queues)
# ---------------------------------------------------------------------------------------------

def _eq7_loss(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, counts: list[int], scale: float):
    """Logit-adjusted cosine-classifier cross-entropy (paper 002 Eq. 7), sample by sample."""
    n = float(sum(counts))
    total = 0.0
    for i in range(len(h)):
        hi = h[i].double() / h[i].double().norm()
        logits = [scale * float(hi @ (weight[c].double() / weight[c].double().norm())) + math.log(counts[c] / n)
                  for c in range(len(counts))]
        total += -logits[int(labels[i])] + math.log(sum(math.exp(v) for v in logits))
    return total / len(h)


def test_gml_teacher_step_is_logit_adjusted_cosine_loss_eq7():
    scale = 12.5
    model, aug, data, params, rt = build("gml", own={"scale": scale})
    m = get_method("gml")(model, data, params.pretrain, rt, aug)
    m.on_epoch_start(0)
    with Hook(m.model) as hook:
        out = m.training_step(IDX)
    assert torch.equal(image_ids(data, aug.inputs[-1]), IDX)
    (_, (h, _)), = hook.calls
    want = _eq7_loss(h, m.classifier.weight.detach(), data.labels[IDX], COUNTS, scale)
    assert float(out.loss.detach()) == pytest.approx(want, rel=1e-5)
    assert out.parts == {"cls": pytest.approx(want, rel=1e-5)}


def test_gml_student_step_weights_cls_and_gml_over_teacher_queues():
    dcfg = {"k": 40, "km": 2, "temperature": 0.3, "alpha": 0.5, "scale": 20.0, "cls_weight": 0.7, "weight": 1.3}
    model, aug, data, params, rt = build("gml", distill=dcfg, own={"scale": 9.0})
    teacher, _ = new_encoder(params.model, data.x.numpy(), rt)
    m = get_method("gml", "distill")(model, data, params.distill, rt, aug, teacher=teacher)
    y = data.labels
    lengths = gml_queue_lengths(torch.tensor(COUNTS, dtype=torch.float64), dcfg["k"], dcfg["km"]).tolist()
    queues = [deque(maxlen=n) for n in lengths]  # FIFO of teacher features per class (Eq. 6)
    log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS))
    # class 2 (queue 6) gets 4 + 4 rows, class 3 (queue 4) 4 + 2: the second step overwrites
    batches = [torch.tensor([0, 1, 2, 16, 17, 24, 25, 28, 29, 8]), torch.tensor([3, 4, 18, 19, 20, 26, 27, 28, 5, 6])]
    m.on_epoch_start(0)
    for idx in batches:
        b = len(idx)
        with Hook(m.model) as hs, Hook(teacher) as ht, Hook(m.model.head) as hh:
            out = m.training_step(idx)
        assert all(torch.equal(image_ids(data, a), idx) for a in aug.inputs[-2:])
        (_, (h, z)), = hs.calls
        (_, (h_t, _)), = ht.calls
        yy = torch.cat([y[idx], y[idx]])
        for row, c in zip(h_t, yy.tolist()):  # this batch's teacher features join the queues first
            queues[c].append(row)
        # the student's MLP runs over exactly the queued teacher features (any slot order)
        assert len(hh.calls) == 2
        feats_in, contrast = hh.calls[1]
        expected = [(row, c) for c, q in enumerate(queues) for row in q]
        assert feats_in.shape[0] == len(expected)
        used, labels = [False] * len(expected), []
        for row in feats_in:
            j = next((j for j, (e, _) in enumerate(expected) if not used[j] and torch.equal(e, row)), None)
            assert j is not None, "the MLP ran over a feature that is not a queued teacher feature"
            used[j] = True
            labels.append(expected[j][1])
        labels = torch.tensor(labels)
        l_cls = _eq7_loss(h, m.classifier.weight.detach(), yy, COUNTS, dcfg["scale"])
        l_gml = float(gml_loss(z, contrast, labels, yy, log_prior, dcfg["temperature"], alpha=dcfg["alpha"]))
        want = dcfg["cls_weight"] * l_cls + dcfg["weight"] * l_gml
        assert float(out.loss.detach()) == pytest.approx(want, rel=1e-5)
        assert out.parts == {"cls": pytest.approx(l_cls, rel=1e-5), "gml": pytest.approx(l_gml, rel=1e-5),
                             "tau_g": pytest.approx(dcfg["temperature"], rel=1e-6)}
        assert out.images == 4 * b

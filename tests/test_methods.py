"""Every pre-training method takes real optimisation steps through the shared loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltcl.methods.base import TrainSet
from ltcl.params import Params
from ltcl.registry import get_method
from ltcl.runtime import Runtime
from ltcl.train.loop import fit, lr_at
from ltcl.train.session import build_augment, new_encoder


def tiny_setup(method: str, with_ood: bool = False, runtime: Runtime | None = None, **pretrain):
    torch.manual_seed(0)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
        "ood": {"strategy": "none"},
        "pretrain": {"method": method, "epochs": 2, "batch_size": 16, "warmup_epochs": 1, "psd": {"k_pos": 2},
                     **pretrain},
    })
    rt = runtime or Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 8, 8, 1), dtype=np.uint8)
    y = np.repeat(np.arange(4), 10)
    model, spec = new_encoder(params.model, x, rt)
    aug = build_augment(params.augment, spec, rt.device)
    data = TrainSet.from_numpy(x, y, 4, rt.device)
    if with_ood:
        data = data.with_extra(torch.as_tensor(rng.integers(0, 255, size=(20, 8, 8, 1), dtype=np.uint8)))
    m = get_method(method)(model, data, params.pretrain, rt, aug)
    return m, params


@pytest.mark.parametrize("method,kw", [
    ("simclr", {}), ("sdclr", {}), ("psd", {}), ("psd", {"pruned_branch": True}),
    ("ts", {"ts": {"period_fraction": 0.5}}),
    ("tase", {"tase": {"warmup": 1, "refresh": 1, "full": 2}}),
])
@pytest.mark.parametrize("with_ood", [False, True])
def test_method_trains(method, kw, with_ood):
    m, params = tiny_setup(method, with_ood, **kw)
    before = [p.detach().clone() for p in m.model.parameters()]
    logs = fit(m, params.pretrain, m.runtime)
    assert len(logs) == 2 and all(np.isfinite(l.loss) for l in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.model.parameters()))
    if with_ood:
        assert "dd" in logs[-1].parts  # domain discrimination loss active with two domains
    else:
        assert "dd" not in logs[-1].parts


def test_psd_neighbours_stay_in_domain():
    m, _ = tiny_setup("psd", with_ood=True)
    m.on_epoch_start(0)
    nb = m.neighbours
    dom = m.data.domain
    assert nb.shape == (60, 2)
    assert torch.equal(dom[nb], dom[:, None].expand_as(nb))
    assert not (nb == torch.arange(60)[:, None]).any()


def test_psd_positive_mask():
    m, _ = tiny_setup("psd")
    m.neighbours = torch.tensor([[1, 2], [0, 2], [3, 0], [2, 1]])
    ids = torch.tensor([0, 3, 0, 3, 1, 2])
    pos = m.positive_mask(ids)
    for a in range(6):
        for b in range(6):
            i, j = int(ids[a]), int(ids[b])
            want = i == j or j in m.neighbours[i].tolist() or i in m.neighbours[j].tolist()
            assert bool(pos[a, b]) == want


def test_sdclr_prunes_ninety_percent():
    m, _ = tiny_setup("sdclr")
    m.on_epoch_start(0)
    kept = sum(int(v.sum()) for v in m.masks.values())
    total = sum(v.numel() for v in m.masks.values())
    assert abs(1 - kept / total - 0.9) < 1.0 / total + 1e-9


def test_lr_schedule_warmup_then_cosine():
    cfg = Params().pretrain.model_copy(update={"epochs": 10, "warmup_epochs": 2, "lr": 1.0})
    assert lr_at(1.0, cfg) == pytest.approx(0.5)
    assert lr_at(2.0, cfg) == pytest.approx(1.0)
    assert lr_at(6.0, cfg) == pytest.approx(0.5)
    assert lr_at(10.0, cfg) == pytest.approx(0.0, abs=1e-12)


def test_registry_names_the_classes_params_accept():
    """One registry: every pre-training name resolves to a class of that name, the supervised flag
    agrees with the table params validation reads, and params accept exactly those names."""
    from ltcl.methods.base import Method
    from ltcl.params import PRETRAIN_METHODS, SUPERVISED_METHODS
    from ltcl.registry import DISTILL, PRETRAIN, SUPERVISED

    assert PRETRAIN_METHODS == tuple(PRETRAIN) and SUPERVISED_METHODS == SUPERVISED
    for name in PRETRAIN:
        cls = get_method(name)
        assert issubclass(cls, Method) and cls.name == name, name
    for name in DISTILL:
        assert issubclass(get_method(name, "distill"), Method)
    assert get_method("kdup", "distill").__name__ == "GuidedDistillation"
    assert get_method("gml", "distill").__name__ == "GMLStudent"


def test_unknown_method_lists_known():
    with pytest.raises(ValueError, match="known: .*simclr"):
        get_method("byol")


def test_ts_temperature_is_ts_released_schedule_over_2000_epochs():
    """At the schema's TS defaults in a 2,000-epoch run, tau at every epoch is what TS's released code
    computes there (annusha/temperature_schedules@3ac1db6 train_simCLR.py:349, 395-399, with its
    published runs' --temperature_min 0.1 --temperature_max 1.0 --t_max 200, README.md:53-60): its
    epoch loop counts from 1, ltcl's from 0."""
    import math

    m, params = tiny_setup("ts", epochs=2000)
    assert params.pretrain.epochs == 2000 and "ts" not in params.pretrain.model_fields_set  # the defaults
    args_t_max, args_temperature_min, args_temperature_max = 200, 0.1, 1.0
    ours, theirs32, theirs64 = [], [], []
    for i, epoch in enumerate(range(1, 2000 + 1)):  # TS: for epoch in range(start_epoch=1, args.epochs + 1)
        t_max, min_tau, max_tau = args_t_max, args_temperature_min, args_temperature_max
        tau = min_tau + 0.5 * (max_tau - min_tau) * (1 + torch.cos(torch.tensor(torch.pi * epoch / t_max)))
        theirs32.append(float(tau))  # TS's float32 tensor
        theirs64.append(min_tau + 0.5 * (max_tau - min_tau) * (1 + math.cos(math.pi * epoch / t_max)))
        m.on_epoch_start(i)
        ours.append(m.temperature())
    assert max(abs(a - b) for a, b in zip(ours, theirs64)) < 1e-12
    assert max(abs(a - b) for a, b in zip(ours, theirs32)) < 1e-6  # float32 rounding of TS's cos
    # five full oscillations: tau_min at TS's epochs 200, 600, ..., 1800, tau_max at 400, ..., 2000
    assert [e + 1 for e in range(2000) if abs(ours[e] - 0.1) < 1e-12] == [200, 600, 1000, 1400, 1800]
    assert [e + 1 for e in range(2000) if abs(ours[e] - 1.0) < 1e-12] == [400, 800, 1200, 1600, 2000]


def test_tase_pseudo_labels_after_warmup():
    m, params = tiny_setup("tase", tase={"warmup": 1, "refresh": 1, "full": 2})
    m.on_epoch_start(0)
    assert m.sizes is None  # SimCLR warm-up
    m.on_epoch_start(1)
    k = params.pretrain.tase.clusters or 4
    assert m.sizes.shape == (40,) and int(np.bincount(m.pseudo, minlength=k).sum()) == 40
    assert torch.equal(m.sizes, torch.as_tensor(np.bincount(m.pseudo)[m.pseudo], dtype=torch.float32))
    out = m.training_step(torch.arange(16))
    # epoch B = tase.warmup: the progressive factor is 0, every sample still has SimCLR's temperature
    assert np.isfinite(float(out.loss.detach())) and out.parts["tau_mean"] == pytest.approx(params.pretrain.temperature)
    # epoch S = tase.full: tau_i = tau_min + (tau_max - tau_min) (n_i - n_min) / (n_max - n_min) of the
    # pseudo-class sizes n (Sec. 3.3, linear mapping), averaged over the batch
    m.on_epoch_start(2)
    n = m.sizes.double()
    cfg = params.pretrain.tase
    tau = cfg.tau_min + (cfg.tau_max - cfg.tau_min) * (n - n.min()) / (n.max() - n.min())
    assert m.training_step(torch.arange(16)).parts["tau_mean"] == pytest.approx(float(tau[:16].mean()), rel=1e-6)


@pytest.mark.parametrize("method", ["simclr", "sdclr"])
def test_compiled_model_trains_like_eager(method):
    """runtime.compile: the method's model runs through torch.compile (backend aot_eager here: the
    same graph capture and autograd as inductor, without its C++ code generation, which takes
    ~95 s on this CPU) and two epochs give the eager run's weights."""
    from ltcl.runtime import setup_runtime

    eager, params = tiny_setup(method)
    fit(eager, params.pretrain, eager.runtime)
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=True, compile_backend="aot_eager")
    compiled, _ = tiny_setup(method, runtime=rt)
    assert compiled.model._compiled_call_impl is not None and eager.model._compiled_call_impl is None
    fit(compiled, params.pretrain, rt)
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
    on = Params.model_validate({"runtime": {"compile": True}}).runtime
    assert setup_runtime(on, 0).compile_backend == "inductor"
    assert setup_runtime(Params().runtime, 0).compile_backend is None


def test_registry_entries_state_what_the_classes_do():
    """The registry is the one place a method's flags are stated: each entry's classifier flag is
    what its class has (a classifier of its own), its params model is the one its params subsection
    validates with, and compare's names come from it (ddp: tests/test_ddp.py)."""
    from ltcl import registry
    from ltcl.compare.experiments import METHOD_NAMES, SUPERVISED
    from ltcl.params import DistillParams, PretrainParams

    for section, table, model in (("pretrain", registry.PRETRAIN, PretrainParams),
                                  ("distill", registry.DISTILL, DistillParams)):
        fields = {f.alias or n: f.annotation for n, f in model.model_fields.items()}
        for name, e in table.items():
            cls = registry.load(section, name)
            assert not hasattr(cls, "supports_ddp") and not hasattr(cls, "supervised"), (section, name)
            assert hasattr(cls, "predict") == e.classifier, (section, name)
            assert fields[name] is e.params, (section, name)
    assert METHOD_NAMES == {n: e.display for n, e in registry.PRETRAIN.items()}
    assert SUPERVISED == registry.SUPERVISED

"""Glue of the training loop and of the report (issue 13): what ``fit`` / ``run_session`` do with
the configured optimiser, schedule, batches, precision and non-finite losses, and whether the
report prints the numbers of the metrics files it reads.

Every expected value here is computed independently of the code under test: the SGD trajectory
by hand (heavy-ball momentum, L2 weight decay, warm-up + cosine written out), the batches from
the seeded permutation, the report's cells from the metrics JSON files with the report's
printed precision."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from conftest import copy_project
from ltcl.eval.protocols import probe_headline
from ltcl.headline import details_path
from ltcl.pipeline.cluster import cluster_headline
from ltcl.sampling.selection_io import ood_headline
from ltcl.methods.base import Method, StepOutput, TrainSet
from ltcl.params import Params
from ltcl.runtime import Runtime
from ltcl.train import loop as loop_mod
from ltcl.train import session as session_mod
from ltcl.train.loop import NonFiniteLossError, epoch_batches, fit

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


# --------------------------------------------------------------------------- a toy method
class Vec(nn.Module):
    """Two parameter tensors, in float64: the hand-written SGD run matches to 1e-7 (the loop's
    warm-up adds 1e-8 epochs)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
        self.v = nn.Parameter(torch.tensor([0.3, 0.7], dtype=torch.float64))


class Toy(Method):
    """Loss 0.5 * mean_i (|w - a_i|^2 + |v - b_i|^2) over the batch's indices i: its gradient
    (w - mean a_i, v - mean b_i) is known in closed form.  ``bad`` maps a global step number
    (0-based) to the non-finite constant added to the loss there (gradient unaffected);
    ``bad_part``: whether that term is reported in ``parts``."""

    name = "toy"

    def __init__(self, n: int, cfg, bad: dict | None = None, bad_part: bool = True):
        g = torch.Generator().manual_seed(123)
        self.a = torch.randn(n, 3, generator=g, dtype=torch.float64)
        self.b = torch.randn(n, 2, generator=g, dtype=torch.float64)
        data = TrainSet(x=torch.zeros(n, 1, 1, 1, dtype=torch.uint8), domain=torch.zeros(n, dtype=torch.long),
                        labels=torch.zeros(n, dtype=torch.long), num_classes=1)
        super().__init__(Vec(), data, cfg, CPU, augment=None)
        self.bad = bad or {}
        self.bad_part = bad_part
        self.seen: list[torch.Tensor] = []  # the index batch of every step
        self.lrs: list[float] = []  # the optimiser's lr when the step ran (set by the spy below)
        self.optimizer = None

    def training_step(self, idx):
        step = len(self.seen)
        self.seen.append(idx.clone())
        if self.optimizer is not None:
            self.lrs.append(self.optimizer.param_groups[0]["lr"])
        m = self.model
        fit_term = 0.5 * (((m.w - self.a[idx]) ** 2).sum(1) + ((m.v - self.b[idx]) ** 2).sum(1)).mean()
        parts = {"fit": float(fit_term.detach())}
        loss = fit_term
        if step in self.bad:
            loss = loss + torch.tensor(self.bad[step], dtype=torch.float64)
            if self.bad_part:
                parts["bad_term"] = self.bad[step]
        return StepOutput(loss=loss, parts=parts, images=len(idx))


def toy_cfg(**kw):
    base = {"epochs": 4, "batch_size": 4, "lr": 0.4, "momentum": 0.55, "weight_decay": 0.03, "warmup_epochs": 2,
            "seed": 7}
    return Params().pretrain.model_copy(update={**base, **kw})


def spy_optimizer(monkeypatch, method: Toy, module) -> list:
    """Wrap ``module.build_optimizer`` (the real one still builds it) to hand the optimiser the
    loop builds to the toy method, which then records the lr of each step."""
    made = []
    real = module.build_optimizer

    def spy(params, cfg):
        opt = real(params, cfg)
        made.append(opt)
        method.optimizer = opt
        return opt

    monkeypatch.setattr(module, "build_optimizer", spy)
    return made


def expected_lr(p: float, lr: float, warm: int, epochs: int) -> float:
    """Linear warm-up over ``warm`` epochs, then half a cosine from lr to 0 at ``epochs``."""
    if p < warm:
        return lr * p / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (p - warm) / (epochs - warm)))


def expected_batches(n: int, bs: int, seed: int) -> list[list[int]]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    if n <= bs:
        return [perm]
    return [perm[k * bs:(k + 1) * bs] for k in range(n // bs)]  # the incomplete tail dropped


def reference_run(method: Toy, cfg, n: int, stop_before: int | None = None):
    """The run by hand: per epoch the batches of ``randperm(n)`` seeded with seed*100003+epoch,
    per step lr from the warm-up + cosine schedule at fractional epoch, torch.optim.SGD's rule
    (d = g + wd p; buf = d on the first step, else momentum buf + d; p -= lr buf).
    Returns the batches, lrs, losses and final parameters (before step ``stop_before`` if given)."""
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    v = torch.tensor([0.3, 0.7], dtype=torch.float64)
    bw = bv = None
    batches, lrs, losses, step = [], [], [], 0
    for epoch in range(cfg.epochs):
        ep = expected_batches(n, cfg.batch_size, cfg.seed * 100_003 + epoch)
        for s, idx in enumerate(ep):
            if step == stop_before:
                return batches, lrs, losses, (w, v)
            lr = expected_lr(epoch + s / len(ep), cfg.lr, cfg.warmup_epochs, cfg.epochs)
            batches.append(idx)
            lrs.append(lr)
            losses.append(float(0.5 * (((w - method.a[idx]) ** 2).sum(1) + ((v - method.b[idx]) ** 2).sum(1)).mean()))
            gw = w - method.a[idx].mean(0) + cfg.weight_decay * w
            gv = v - method.b[idx].mean(0) + cfg.weight_decay * v
            bw = gw if bw is None else cfg.momentum * bw + gw
            bv = gv if bv is None else cfg.momentum * bv + gv
            w, v = w - lr * bw, v - lr * bv
            step += 1
    return batches, lrs, losses, (w, v)


# --------------------------------------------------------------------------- batches
@pytest.mark.parametrize("n,bs", [(10, 4), (12, 4), (3, 8), (9, 9), (2, 5)])
def test_epoch_batches_drop_the_incomplete_tail_unless_only_batch(n, bs):
    got = epoch_batches(n, bs, torch.Generator().manual_seed(42))
    assert [b.tolist() for b in got] == expected_batches(n, bs, 42)
    # n=10, bs=4: two full batches, the 2 images left over wait for the next epoch's permutation
    assert len(got) == (1 if n <= bs else n // bs)


def test_epoch_batches_refuse_one_image():
    from ltcl.errors import UserError

    with pytest.raises(UserError, match="at least 2"):
        epoch_batches(1, 4, torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- optimiser and schedule
@pytest.mark.parametrize("entry", ["fit", "run_session"])
def test_sgd_trajectory_lr_momentum_weight_decay_from_params(monkeypatch, entry):
    """Four epochs of 10 samples in batches of 4 (2 steps each, the 2 left over dropped): the
    parameters after training equal the hand-computed SGD run with the configured lr schedule,
    momentum and weight decay, step by step through the seeded batches."""
    n, cfg = 10, toy_cfg()
    m = Toy(n, cfg)
    made = spy_optimizer(monkeypatch, m, loop_mod if entry == "fit" else session_mod)
    if entry == "fit":
        logs = fit(m, cfg, CPU, seed=cfg.seed)
    else:
        logs, summary, timings = session_mod.run_session(m, cfg, CPU, live_dir=None)
        assert summary == {"epochs": 4, "steps": 8, "final_loss": logs[-1].loss}  # no timings in the metrics
        # the timings (the run record's): each epoch's seconds and images/s, their mean, per epoch
        assert timings["per_epoch"] == [{"epoch": l.epoch, "seconds": l.seconds, "images_per_s": l.images_per_s}
                                        for l in logs]
        assert timings["images_per_s"] == pytest.approx(np.mean([l.images_per_s for l in logs]))
        assert timings["seconds_per_epoch"] == pytest.approx(timings["seconds"] / 4)
        assert timings["seconds"] >= sum(l.seconds for l in logs)
    batches, lrs, losses, (w, v) = reference_run(m, cfg, n)
    assert [b.tolist() for b in m.seen] == batches  # the seeded batches, incomplete tail dropped
    assert m.lrs == pytest.approx(lrs, abs=1e-8)  # warm-up + cosine per step
    assert lrs[1] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.4) and lrs[6] == pytest.approx(0.2)
    torch.testing.assert_close(m.model.w.detach(), w, rtol=0, atol=1e-7)
    torch.testing.assert_close(m.model.v.detach(), v, rtol=0, atol=1e-7)
    (opt,) = made
    for group in opt.param_groups:  # after fit: the configured hyperparameters, not SGD's defaults
        assert group["momentum"] == 0.55 and group["weight_decay"] == 0.03
        assert not group["nesterov"] and group["dampening"] == 0
    # each epoch's log: its mean loss and the schedule's lr at the epoch's end
    assert [l.steps for l in logs] == [2, 2, 2, 2]
    assert [l.loss for l in logs] == pytest.approx([(losses[2 * e] + losses[2 * e + 1]) / 2 for e in range(4)],
                                                   abs=1e-7)
    assert [l.parts["fit"] for l in logs] == pytest.approx([l.loss for l in logs], abs=1e-12)
    assert [l.lr for l in logs] == pytest.approx([expected_lr(e + 1, 0.4, 2, 4) for e in range(4)], abs=1e-8)


def test_sgd_without_momentum_and_decay_is_plain_gradient_descent(monkeypatch):
    """momentum 0 and weight_decay 0 configured: neither may sneak back in from the defaults."""
    n, cfg = 10, toy_cfg(momentum=0.0, weight_decay=0.0, epochs=2, warmup_epochs=0)
    m = Toy(n, cfg)
    spy_optimizer(monkeypatch, m, loop_mod)
    fit(m, cfg, CPU, seed=cfg.seed)
    _, lrs, _, (w, v) = reference_run(m, cfg, n)
    assert lrs[0] == pytest.approx(0.4)  # no warm-up: the first step at the full lr
    torch.testing.assert_close(m.model.w.detach(), w, rtol=0, atol=1e-7)
    torch.testing.assert_close(m.model.v.detach(), v, rtol=0, atol=1e-7)


# --------------------------------------------------------------------------- non-finite loss
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_stops_before_the_step(value):
    """A NaN / inf loss at epoch 2, step 2 (global step 3): NonFiniteLossError naming epoch,
    step and the bad term; the parameters are those after the 3 good steps (the bad loss's
    gradient is finite, so a step taken for it would move them)."""
    n, cfg = 10, toy_cfg()
    m = Toy(n, cfg, bad={3: value})
    with pytest.raises(NonFiniteLossError) as exc:
        fit(m, cfg, CPU, seed=cfg.seed)
    msg = str(exc.value)
    assert "epoch 2, step 2" in msg and "bad_term" in msg and "fit" not in msg.split("=")[0]
    assert len(m.seen) == 4
    _, _, _, (w, v) = reference_run(m, cfg, n, stop_before=3)
    torch.testing.assert_close(m.model.w.detach(), w, rtol=0, atol=1e-7)
    torch.testing.assert_close(m.model.v.detach(), v, rtol=0, atol=1e-7)


def test_non_finite_total_with_finite_parts_names_total():
    n, cfg = 10, toy_cfg()
    m = Toy(n, cfg, bad={0: math.nan}, bad_part=False)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1: term\(s\) total"):
        fit(m, cfg, CPU, seed=cfg.seed)
    assert m.model.w.detach().tolist() == [1.0, -2.0, 0.5]  # not one step taken


# --------------------------------------------------------------------------- autocast
def _real_method(method: str, runtime: Runtime):
    from ltcl.registry import get_method
    from ltcl.train.session import build_augment, new_encoder

    torch.manual_seed(0)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "width": 0.5, "proj_hidden": 16, "proj_dim": 8},
        "ood": {"strategy": "none"},
        "pretrain": {"method": "simclr" if method == "kdup distill" else method.split()[0], "epochs": 1,
                     "batch_size": 8, "warmup_epochs": 0, "psd": {"k_pos": 2}},
        "distill": {"method": "gml" if method.startswith("gml") else "kdup", "epochs": 1, "batch_size": 8,
                    "warmup_epochs": 0, "gml": {"k": 8, "km": 2}},
    })
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 4)  # one batch of 8: one step (bf16 convolutions are slow on CPUs without bf16)
    x = rng.integers(0, 255, size=(len(y), 8, 8, 1), dtype=np.uint8)
    model, spec = new_encoder(params.model, x, runtime)
    aug = build_augment(params.augment, spec, runtime.device)
    data = TrainSet.from_numpy(x, y, 2, runtime.device)
    if method == "kdup distill":  # g from a frozen f (paper 003 Sec. 3.2)
        teacher, _ = new_encoder(params.model, x, runtime)
        return get_method("kdup", "distill")(
            model, data, params.distill, runtime, aug, teacher=teacher,
            neighbours=(np.arange(8)[:, None] + np.arange(1, 3)[None, :]) % 8, clusters=np.repeat(np.arange(2), 4),
            centroids=np.array([[0.0, 0.0], [1.0, 0.0]])), params.distill
    if method == "gml student":  # paper 002's student from a frozen teacher's queues
        teacher, _ = new_encoder(params.model, x, runtime)
        return get_method("gml", "distill")(model, data, params.distill, runtime, aug, teacher=teacher), params.distill
    return get_method(method)(model, data, params.pretrain, runtime, aug), params.pretrain


def runtime_from_params(amp: bool) -> Runtime:
    """``setup_runtime`` of ``runtime: {device: cpu, amp: ...}``, restoring the global state it sets."""
    import random

    from ltcl.runtime import setup_runtime

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        return setup_runtime(Params.model_validate({"runtime": {"device": "cpu", "amp": amp}}).runtime, 0)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_rng_state(saved[2])
        np.random.set_state(saved[3])
        random.setstate(saved[4])


@pytest.mark.parametrize("method", ["simclr", "sdclr", "gml", "kdup distill", "gml student"])
@pytest.mark.parametrize("amp", [True, False])
def test_training_forward_runs_under_autocast(method, amp):
    """runtime.amp: true (bf16 on CPU): every convolution and linear layer of the trained model
    that the training step runs computes in bfloat16; with amp: false in float32.  Seen by forward
    hooks during ``fit``."""
    rt = runtime_from_params(amp)
    m, cfg = _real_method(method, rt)
    dtypes: set = set()
    hooks = [mod.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
             for mod in m.model.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    try:
        logs = fit(m, cfg, rt)
    finally:
        for h in hooks:
            h.remove()
    assert logs[0].steps == 1 and math.isfinite(logs[0].loss)
    assert dtypes == {torch.bfloat16 if amp else torch.float32}


# --------------------------------------------------------------------------- the report's numbers
def md_sections(md: str) -> dict[str, str]:
    return {part.split("\n", 1)[0].strip(): part.split("\n", 1)[1] for part in md.split("\n## ")[1:]}


def md_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of ``text``: (header cells, rows of cells)."""
    tables, cur = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = (cells, [])
            elif not all(set(c) <= {"-"} for c in cells):
                cur[1].append(cells)
        elif cur is not None:
            tables.append(cur)
            cur = None
    return tables


def html_tables(page: str, title: str) -> list[tuple[list[str], list[list[str]]]]:
    """The tables of the HTML section titled ``title``, cells as the Markdown prints them
    (a ``td.best`` cell as **value**)."""
    import html as html_mod

    sec = re.search(r"<section id=\"[^\"]*\"><h2>" + re.escape(html_mod.escape(title)) + r"</h2>(.*?)</section>",
                    page, re.DOTALL).group(1)
    out = []
    for tab in re.findall(r"<table>(.*?)</table>", sec, re.DOTALL):
        rows = []
        for tr in re.findall(r"<tr>(.*?)</tr>", tab, re.DOTALL):
            cells = [(f"**{html_mod.unescape(v)}**" if cls else html_mod.unescape(v))
                     for cls, v in re.findall(r"<t[hd](?: class=\"(best)\")?>(.*?)</t[hd]>", tr, re.DOTALL)]
            rows.append(cells)
        out.append((rows[0], rows[1:]))
    return out


def printed(v, digits: int = 2) -> str:
    """A metric as the report prints it: 2 decimals for floats, integers as they are."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def check_table(tab, first_header: str, columns: dict[str, str], rows: dict[str, dict], best: dict[str, str]):
    """``tab`` (header, rows) holds exactly ``rows`` (label -> metrics) in that order, column
    header -> metric key as ``columns`` says, each value printed to 2 decimals and bold exactly
    where it is the column's best (``best``: key -> max / min over the rows)."""
    header, body = tab
    assert header == [first_header, *columns], header
    assert [r[0] for r in body] == list(rows)
    marks = {}
    for key, how in best.items():
        vals = [m[key] for m in rows.values()]
        marks[key] = max(vals) if how == "max" else min(vals)
    for cells in body:
        metrics = rows[cells[0]]
        for cell, key in zip(cells[1:], columns.values()):
            want = printed(metrics[key])
            if key in marks and metrics[key] == marks[key]:
                want = f"**{want}**"
            assert cell == want, (cells[0], key, cell, want)


GROUPS = {"Many": "many", "Med.": "medium", "Few": "few", "STD": "std", "All": "all"}
GROUP_BEST = {"many": "max", "medium": "max", "few": "max", "std": "min", "all": "max"}


@pytest.fixture(scope="module")
def reported(kdup_project, tmp_path_factory):
    """A copy of the tiny KDUP chain with the cluster stages and the report run on it; returns
    (project, report.md, index.html, the metrics JSON files the report reads, with the stages' run
    records under "runs": stage -> runs/<stage>.json)."""
    p = copy_project(kdup_project, tmp_path_factory.mktemp("report") / "p")
    p.set_params({"cluster": {"tsne_samples": 20}})  # the t-SNE figure's cost; no number here reads it
    for enc in ("pretrain", "distill"):
        p.stage("cluster.py", enc)
    p.stage("report.py")
    read = lambda rel: json.loads(p.path(f"metrics/{rel}.json").read_text())
    details = lambda rel: json.loads(details_path(p.path(f"metrics/{rel}.json")).read_text())  # the whole record
    metrics = {k: read(k) for k in ("dataset", "pretrain", "distill")}
    metrics.update({k: details(k) for k in ("ood", "probe/pretrain", "probe/distill", "cluster/pretrain",
                                            "cluster/distill")})
    metrics["headline"] = {k: read(k) for k in ("ood", "probe/pretrain", "probe/distill", "cluster/pretrain",
                                                "cluster/distill")}
    metrics["runs"] = {st: json.loads(p.path(f"runs/{st.replace('@', '-')}.json").read_text()) for st in (
        "make-lt-dataset", "ood-pool", "ood-sampling", "pretrain", "distill", "linear-probe@pretrain",
        "linear-probe@distill", "cluster@pretrain", "cluster@distill")}
    return p, p.path("report/report.md").read_text(), p.path("report/index.html").read_text(), metrics


def test_the_headline_files_of_a_run_are_views_of_their_details(reported):
    """Each DVC metrics file the stages wrote is its view of the details file beside it (the report
    reads the details): the probes' groups, All and kNN, CHI / DBI, the OOD budget."""
    metrics = reported[3]
    views = {"ood": ood_headline, "probe/pretrain": probe_headline, "probe/distill": probe_headline,
             "cluster/pretrain": cluster_headline, "cluster/distill": cluster_headline}
    for rel, view in views.items():
        assert metrics["headline"][rel] == view(metrics[rel]), rel
    assert list(metrics["headline"]["probe/pretrain"]) == ["full", "few_shot", "knn"]
    assert set(metrics["headline"]["ood"]) == {"selected", "budget_per_image", "few_budget_share"}


def encoder_rows(metrics: dict) -> dict[str, str]:
    pre, dis = metrics["pretrain"], metrics["distill"]
    return {"pretrain": f"f (pre-trained): {pre['method']} + {pre['ood_strategy']} OOD",
            "distill": f"g (distilled): {dis['method']}"}


@pytest.mark.parametrize("title,proto", [("Linear probe (full)", "full"), ("Few-shot linear probe", "few_shot")])
def test_report_probe_tables_print_the_probe_metrics(reported, title, proto):
    _, md, page, metrics = reported
    names = encoder_rows(metrics)
    assert names == {"pretrain": "f (pre-trained): psd + kdup OOD", "distill": "g (distilled): kdup"}
    rows = {names[e]: metrics[f"probe/{e}"][proto] for e in ("pretrain", "distill")}
    # the two protocols differ on this run, so a swapped protocol cannot pass
    assert metrics["probe/pretrain"]["full"]["all"] != metrics["probe/pretrain"]["few_shot"]["all"]
    (tab,) = md_tables(md_sections(md)[title])
    check_table(tab, "encoder", GROUPS, rows, GROUP_BEST)
    assert html_tables(page, title) == [tab]  # the HTML page prints the same cells and marks


def test_report_knn_table(reported):
    _, md, page, metrics = reported
    names = encoder_rows(metrics)
    rows = {names[e]: metrics[f"probe/{e}"]["knn"] for e in ("pretrain", "distill")}
    assert set(rows[names["pretrain"]]) == {"k1", "k10", "k1_few", "k10_few"}
    cols = {"kNN@1": "k1", "kNN@10": "k10", "kNN@1_few": "k1_few", "kNN@10_few": "k10_few"}
    (tab,) = md_tables(md_sections(md)["kNN accuracy"])
    check_table(tab, "encoder", cols, rows, {k: "max" for k in cols.values()})
    assert html_tables(page, "kNN accuracy") == [tab]


def test_report_cluster_tables(reported):
    _, md, page, metrics = reported
    names = encoder_rows(metrics)
    cl = {names[e]: metrics[f"cluster/{e}"] for e in ("pretrain", "distill")}
    quality, geometry = md_tables(md_sections(md)["Cluster quality"])
    check_table(quality, "encoder", {"CHI": "chi", "DBI": "dbi", "NMI": "nmi", "ARI": "ari"}, cl,
                {"chi": "max", "dbi": "min", "nmi": "max", "ari": "max"})
    geo_keys = sorted(metrics["cluster/pretrain"]["geometry"])
    assert len(geo_keys) == 16
    check_table(geometry, "encoder", {k: k for k in geo_keys}, {n: c["geometry"] for n, c in cl.items()}, {})
    assert html_tables(page, "Cluster quality") == [quality, geometry]


def test_report_ood_section(reported):
    _, md, page, metrics = reported
    ood = metrics["ood"]
    diag = ood["diagnostics"]
    text = md_sections(md)["OOD sampling"]
    assert f"Strategy **kdup**: {ood['selected']} images added" in text
    assert (f"Spearman(tailness, rarity) = {diag['spearman_rarity']:.3f} "
            f"({'tracks rarity' if diag['spearman_rarity'] > 0.1 else 'does NOT track rarity'}") in text
    assert f"budget share of Few-majority clusters = {100 * diag['few_budget_share']:.2f} %" in text
    clusters, timing = md_tables(text)
    assert clusters[0] == ["cluster", "OOD budget", "ID images", "tailness", "majority class", "its group", "purity"]
    names = json.loads(reported[0].path("data/lt/manifest.json").read_text())["class_names"]
    want = [[f"c{k}", str(ood["budgets"][k]), str(ood["cluster_sizes"][k]), f"{ood['cluster_tailness'][k]:.2f}",
             names[diag["cluster_majority_class"][k]], diag["cluster_majority_group"][k],
             f"{diag['cluster_purity'][k]:.2f}"] for k in range(len(ood["budgets"]))]
    assert clusters[1] == want
    pre = metrics["runs"]["pretrain"]["timings"]  # the seconds: the run records'
    first = metrics["runs"]["ood-sampling"]["timings"]["seconds"]
    keys = ["embedding", "clustering", "tailness", "budget", "sampling", "total"]
    assert timing[0] == ["OOD update"] + [f"{k} (s)" for k in keys]
    assert timing[1] == [
        ["first update (ood-sampling)"] + [f"{first[k]:.2f}" for k in keys],
        [f"mean of {metrics['pretrain']['ood_updates']} updates in pretrain"]
        + [f"{pre[f'ood_update_{k}_s']:.2f}" for k in keys]]
    assert html_tables(page, "OOD sampling") == [clusters, timing]


def test_report_training_and_dataset_tables(reported):
    _, md, _, metrics = reported
    keys = ["epochs", "steps", "final_loss", "seconds", "seconds_per_epoch", "images_per_s"]
    (tab,) = md_tables(md_sections(md)["Training"])
    # epochs, steps, loss from the metrics; seconds and images/s from the run records
    check_table(tab, "stage", {k: k for k in keys},
                {s: {**metrics[s], **metrics["runs"][s]["timings"]} for s in ("pretrain", "distill")}, {})
    assert tab[1][0][1:3] == [str(metrics["pretrain"]["epochs"]), str(metrics["pretrain"]["steps"])] == ["2", "8"]
    (ds,) = md_tables(md_sections(md)["Dataset"])
    scalars = {k: v for k, v in metrics["dataset"].items() if not isinstance(v, dict)}
    assert ds[0] == ["dataset", "value"]
    assert ds[1] == [[k, printed(v)] for k, v in scalars.items()]


def test_report_run_card_times(reported):
    _, md, page, metrics = reported
    # the run card of each stage that ran, from its run record (the metrics files hold none)
    assert not any("run" in metrics[f] for f in metrics if f != "runs")
    runs = {st: rec["run"] for st, rec in metrics["runs"].items()}
    walls = [r["wall_s"] for r in runs.values()]
    peaks = [r["peak_rss_mb"] for r in runs.values()]
    per_stage, times = md_tables(md_sections(md)["Run card"])
    assert per_stage[0] == ["stage", "wall time (s)", "peak memory (MB)", "precision"]
    # each stage's precision decision (runtime.amp): the training and evaluation stages record one
    assert per_stage[1] == [[st, printed(r["wall_s"]), printed(r["peak_rss_mb"]),
                             printed((r.get("precision") or {}).get("precision", ""))]
                            for st, r in runs.items()] + [["total", printed(sum(walls)), printed(max(peaks)), ""]]
    assert runs["pretrain"]["precision"]["precision"] == "fp32"  # the tiny params: amp false
    pre, dis = metrics["runs"]["pretrain"]["timings"], metrics["runs"]["distill"]["timings"]
    assert times[1] == [["this run", printed(pre["seconds_per_epoch"]), printed(dis["seconds_per_epoch"])]
                        + [printed(pre[f"ood_update_{k}_s"]) for k in ("clustering", "tailness", "sampling", "total")]]
    assert html_tables(page, "Run card")[1:] == [per_stage, times]
    (machine,) = [line[len("- **machine**: "):] for line in md_sections(md)["Run card"].splitlines()
                  if line.startswith("- **machine**: ")]
    card = runs["pretrain"]
    assert machine == (f"{card['cpu']}, {card['cores']} cores, torch threads {card['torch_threads']}, GPU "
                       f"{card['gpu'] or 'none'}, torch {card['torch']}, Python {card['python']}")


def test_report_throughput_curves_from_the_run_records(reported, monkeypatch):
    """The training figure's images/s panel plots each session's per-epoch images/s of its run
    record (dvclive logs loss, lr and the loss terms only)."""
    from ltcl.report import html as html_mod

    p, _, _, metrics = reported
    seen = {}
    monkeypatch.setattr(html_mod.plots, "training_curves", lambda curves: seen.update(curves))
    html_mod.build_report(p.root, title="ltcl report")
    records = {"ood-warmup": metrics["runs"]["ood-sampling"]["timings"]["warmup"],
               "pretrain": metrics["runs"]["pretrain"]["timings"], "distill": metrics["runs"]["distill"]["timings"]}
    for session, t in records.items():
        ips = seen[session]["images_per_s"]
        assert ips["images_per_s"].tolist() == [e["images_per_s"] for e in t["per_epoch"]]
        assert ips["step"].tolist() == list(range(len(t["per_epoch"]))) == seen[session]["loss"]["step"].tolist()

"""DDP equivalence: one training step in 2 CPU processes (gloo) equals one process on the same
global batch, for the loss and for every parameter's gradient.

Two processes are spawned with ``torch.multiprocessing`` (MASTER_ADDR 127.0.0.1, a free port);
each joins the group through ``ltcl.train.distributed.init_from_env`` and runs the real loop
(``fit``: distributed sampler, ``Method.step`` through DistributedDataParallel, the methods'
all-gathers with gradients) for one global batch of 8 tiny 8x8x1 uint8 images on a
ResNet-8.  The optimiser records the gradients instead of stepping.  The same is computed in
this (single) process and compared (atol 1e-5).

To compare exactly, nothing may depend on how the batch is split:
* augmentation is a fixed per-sample transform (normalise; the second view of a pair is the
  mirror image), not SimCLR's random one;
* BatchNorm runs with its running statistics (the methods below put the encoder in eval mode
  inside the step; gradients still flow).  On CPU every rank's BatchNorm would otherwise use
  its own half-batch statistics: SyncBatchNorm, which the GPU path uses, is CUDA-only.

Cases: SimCLR with OOD images (NT-Xent + L_DD on the gathered domains), BCL-I with GH (the loss
memory and GH's moving average updated from the gathered global batch: every rank's equals the
single process's), PSD with neighbour
positives (computed on rank 0 and broadcast) and SDCLR's pruned branch (extra parameters in the
DDP module), KDUP's guided distillation (global-batch random picks, L_DL over all pairs), and
its "typical loss" variant.  A method that does not gather (TASE) must refuse to run.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fixed_augment import FixedAugment

N, GLOBAL_BATCH, WORLD = 8, 8, 2
ATOL = 1e-5


class RecordingSGD(torch.optim.SGD):
    """Keeps each step's gradients and leaves the parameters unchanged."""

    def __init__(self, params):
        self.plist = list(params)
        super().__init__(self.plist, lr=0.1)
        self.grads: list[torch.Tensor] = []

    def step(self, closure=None):
        self.grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.plist]


def _eval_bn(cls):
    """``cls`` whose step runs the encoder's BatchNorms on running statistics (see docstring)."""

    class EvalBN(cls):  # prepare() finds cls's registry entry through the MRO
        def training_step(self, idx):
            self.model.eval()
            return super().training_step(idx)

    EvalBN.__name__ = f"EvalBN{cls.__name__}"
    return EvalBN


def run_cases() -> dict:
    """Loss and gradients of one step per case (in whichever process group is current)."""
    from ltcl.methods.base import TrainSet
    from ltcl.methods.distill.guided import GuidedDistillation
    from ltcl.params import Params
    from ltcl.registry import get_method
    from ltcl.runtime import Runtime
    from ltcl.train import distributed
    from ltcl.train.loop import fit
    from ltcl.train.session import new_encoder

    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N, 8, 8, 1), dtype=np.uint8)
    params = Params.model_validate({
        "model": {"backbone": "resnet8", "proj_hidden": 32, "proj_dim": 16},
        "ood": {"strategy": "none"},
        "pretrain": {"epochs": 1, "batch_size": GLOBAL_BATCH, "warmup_epochs": 0, "psd": {"k_pos": 2}, "alpha": 0.3},
        "distill": {"epochs": 1, "batch_size": GLOBAL_BATCH, "warmup_epochs": 0, "kdup": {"k_kd": 3, "clusters": 2}},
    })

    def encoder():
        torch.manual_seed(0)
        return new_encoder(params.model, x, rt)[0]

    def data(with_ood: bool):
        d = TrainSet.from_numpy(x, np.arange(N) % 2, 2, rt.device)
        if with_ood:  # the last 3 images count as sampled OOD images (domain 1)
            d.domain[-3:] = 1
        return d

    def one_step(method, cfg) -> dict:
        opt = RecordingSGD(method.parameters())
        (log,) = fit(method, cfg, rt, optimizer=opt, seed=7)  # one epoch of one global batch
        assert log.steps == 1 and method.ddp is None  # fit unwraps DDP when it returns
        return {"loss": log.loss, "parts": log.parts, "grads": opt.grads}

    out = {}
    pre = params.pretrain
    m = _eval_bn(get_method("simclr"))(encoder(), data(True), pre, rt, FixedAugment())
    out["simclr+dd"] = one_step(m, pre)

    # BCL + GH: the memory updated at the gathered indices with the global batch's per-sample losses, GH's
    # moving average likewise, L_GH active from epoch 0 (W = 0, ramp 1); epoch 0 applies no RandAugment op
    bpre = Params.model_validate({**params.model_dump(mode="json", by_alias=True, include={"model"}),
                                  "ood": {"strategy": "none"},
                                  "pretrain": {"epochs": 1, "batch_size": GLOBAL_BATCH, "warmup_epochs": 0,
                                               "method": "bcl", "gh": {"enabled": True, "warmup_fraction": 0.0,
                                                                       "ramp_epochs": 1, "target_dim": 8}}}).pretrain
    m = _eval_bn(get_method("bcl"))(encoder(), data(False), bpre, rt, FixedAugment())
    out["bcl+gh"] = {**one_step(m, bpre), "memory": m.memory.clone(), "seen": m.seen.clone(),
                     "gh_memory": m.gh.memory.clone(), "gh_seen": m.gh.seen.clone()}

    cfg = pre.model_copy(update={"pruned_branch": True})
    m = _eval_bn(get_method("psd"))(encoder(), data(True), cfg, rt, FixedAugment())
    out["psd+sdclr"] = one_step(m, cfg)  # on_epoch_start: neighbours (rank 0, broadcast), SDCLR's masks
    assert m.neighbours is not None and m.masks is not None and m.pruned_norms is not None

    for guided in (True, False):
        dcfg = params.distill.model_copy(
            update={"kdup": params.distill.kdup.model_copy(update={"guided_sampling": guided})})
        teacher = encoder().eval()
        torch.manual_seed(1)
        for p in teacher.parameters():  # a teacher that differs from the student
            p.data.add_(0.05 * torch.randn_like(p))
        g = np.random.default_rng(1)
        m = _eval_bn(GuidedDistillation)(
            copy.deepcopy(encoder()), data(False), dcfg, rt, FixedAugment(), teacher=teacher,
            neighbours=g.integers(0, N, size=(N, 3)), clusters=np.arange(N) % 2, centroids=np.eye(2))
        out[f"distill-guided={guided}"] = one_step(m, dcfg)

    m = get_method("tase")(encoder(), data(False), pre, rt, FixedAugment())
    try:
        distributed.prepare(m, pre, rt)
        out["tase_error"] = None
    except ValueError as exc:
        out["tase_error"] = str(exc)
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from types import SimpleNamespace

    from ltcl.collectives import shutdown
    from ltcl.train import distributed

    assert distributed.init_from_env(SimpleNamespace(device="cpu")) == (rank, WORLD)
    res = run_cases()
    torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("the 2-process DDP run did not finish within 120 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_cases()
    finally:
        torch.set_num_threads(threads)
    return single, ranks


CASES = ["simclr+dd", "bcl+gh", "psd+sdclr", "distill-guided=True", "distill-guided=False"]


@pytest.mark.parametrize("case", CASES)
def test_two_processes_match_one(results, case):
    single, ranks = results
    ref = single[case]
    assert np.isfinite(ref["loss"])
    assert any(float(g.abs().max()) > 0 for g in ref["grads"])
    for r, res in enumerate(ranks):
        got = res[case]
        assert abs(got["loss"] - ref["loss"]) <= ATOL, (r, got["loss"], ref["loss"])
        assert got["parts"].keys() == ref["parts"].keys()
        for k in ref["parts"]:
            assert abs(got["parts"][k] - ref["parts"][k]) <= ATOL, (r, k)
        assert len(got["grads"]) == len(ref["grads"])
        diff = max(float((a - b).abs().max()) for a, b in zip(got["grads"], ref["grads"]))
        print(f"{case} rank {r}: |loss diff| {abs(got['loss'] - ref['loss']):.2e}, max |grad diff| {diff:.2e}")
        assert diff <= ATOL, (case, r, diff)
        for key in ("memory", "gh_memory"):  # every rank holds the single process's per-sample state
            if key in ref:
                assert torch.allclose(got[key].double(), ref[key].double(), atol=ATOL), (case, r, key)
                assert bool(got[key.replace("memory", "seen")].all()) and bool(ref[key.replace("memory", "seen")].all())
    if case == "simclr+dd":
        assert "dd" in ref["parts"]  # the domain loss is active (both domains in the batch)
    if case == "bcl+gh":
        assert "gh" in ref["parts"]


def test_unsupported_method_refuses_ddp(results):
    _, ranks = results
    for res in ranks:
        assert res["tase_error"] and "does not support DDP yet" in res["tase_error"]


def test_shard_splits_the_global_batch():
    from ltcl.train.distributed import shard

    idx = torch.arange(8)
    parts = [shard(idx, r, 2) for r in range(2)]
    assert torch.equal(torch.cat(parts), idx)
    assert torch.equal(shard(idx, 0, 1), idx)
    with pytest.raises(ValueError, match="multiple of runtime.nproc"):
        shard(torch.arange(7), 0, 2)


def test_ddp_support_is_each_entrys_own():
    """A registered subclass of a method with DDP support does not inherit it: its own entry says
    (TASE subclasses TS, GloCo SimCLR); an unregistered class has none."""
    from ltcl.methods.contrastive import SimCLR
    from ltcl.registry import PRETRAIN, entry_of, get_method

    for name in ("simclr", "psd", "sdclr", "ts", "bcl"):
        assert entry_of(get_method(name)) is PRETRAIN[name] and PRETRAIN[name].ddp, name
    for name in ("tase", "gloco", "gloco-proco"):  # subclasses that change the step
        assert issubclass(get_method(name), SimCLR) and not entry_of(get_method(name)).ddp, name
    assert not entry_of(get_method("gml")).ddp

    class Unregistered:
        pass

    assert entry_of(Unregistered) is None


def test_params_that_cannot_run_distributed_stop_before_any_work(tmp_path, monkeypatch, capsys):
    import yaml

    from ltcl.launch import maybe_torchrun
    from ltcl.params import Params
    from ltcl.train.distributed import check_stage

    def params(**sections):
        return Params.model_validate({"ood": {"strategy": "none"}, **sections})

    with pytest.raises(ValueError, match="method 'tase' does not support DDP yet"):
        check_stage("pretrain", params(pretrain={"method": "tase"}), 2)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        check_stage("pretrain", params(pretrain={"batch_size": 63}), 2)
    with pytest.raises(ValueError, match="method 'gml' does not support DDP yet"):
        check_stage("distill", params(pretrain={"method": "gml"}, distill={"method": "gml"}), 2)
    check_stage("pretrain", params(pretrain={"method": "psd", "batch_size": 64}), 2)
    check_stage("distill", params(pretrain={"method": "gml"}, distill={"enabled": False}), 2)
    check_stage("pretrain", params(pretrain={"method": "tase"}), 1)

    # the stage script's launcher refuses with exit code 2 and removes stale outputs
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"ood": {"strategy": "none"}, "pretrain": {"method": "tase"}, "runtime": {"nproc": 2}}))
    (tmp_path / "stale.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        maybe_torchrun("stages/pretrain.py", ["stale.json"], "pretrain")
    assert exc.value.code == 2 and not (tmp_path / "stale.json").exists()
    assert "does not support DDP yet" in capsys.readouterr().err

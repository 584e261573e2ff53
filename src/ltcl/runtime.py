"""Device, precision, threads and seeding: everything a training stage sets up before step one."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from ltcl.errors import UserError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = full fp32
    channels_last: bool
    compile_backend: str | None = None  # torch.compile backend for the trained model; None = eager

    def maybe_compile(self, model: torch.nn.Module) -> torch.nn.Module:
        """Compile ``model``'s forward in place (``nn.Module.compile``: parameters and state_dict
        keys stay as they are, so checkpoints and resume are unaffected) when ``runtime.compile``
        is on. The first step pays the compilation (~95 s for ResNet-8 with inductor on this
        CPU); it pays off on GPUs and long runs."""
        if self.compile_backend:
            model.compile(backend=self.compile_backend)
        return model

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 (or fp16 on GPUs without bf16) autocast; a no-op when AMP is off."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device={name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512-BF16 / AMX; ARMv8.6 "bf16"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``: ``flags`` on x86, ``Features`` on ARM);
    empty where they cannot be read (then no native bf16 is assumed)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


@dataclass(frozen=True)
class AmpDecision:
    """The precision a run trains in and why (recorded in each stage's run card)."""

    dtype: torch.dtype | None  # None = fp32
    setting: str  # runtime.amp as given
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def record(self) -> dict:
        return {"precision": self.name, "amp": self.setting, "reason": self.reason}


def amp_decision(device: torch.device, amp, *, flags: set[str] | None = None,
                 cuda_capability: tuple[int, int] | None = None) -> AmpDecision:
    """The autocast dtype for ``runtime.amp`` on ``device``.

    ``auto``: bf16 where the device computes bf16 natively - a CUDA GPU of compute capability 8.0
    or newer (Ampere, Hopper: bf16 tensor cores), a CPU with AVX-512-BF16, AMX or ARM's bf16
    instructions - and fp32 elsewhere (on an AVX2 CPU bf16 autocast runs emulated, ~10x slower
    than fp32; on older GPUs fp16 would need a loss scaler, so it is only used when asked).
    ``true``: bf16 (fp16 with a loss scaler on a CUDA GPU without bf16). ``fp16``: fp16 with a loss
    scaler (CUDA only). ``false``: fp32. ``flags`` / ``cuda_capability`` override what the
    machine reports (tests inject them).
    """
    setting = str(amp).lower()
    if setting == "false":
        return AmpDecision(None, setting, "runtime.amp: false")
    if device.type not in ("cuda", "cpu"):
        return AmpDecision(None, setting, f"no autocast on {device.type}")
    if setting == "fp16":
        if device.type != "cuda":
            raise UserError("runtime.amp: fp16 needs a CUDA device (fp16 autocast with a loss scaler)")
        return AmpDecision(torch.float16, setting, "runtime.amp: fp16 (with a loss scaler)")
    if device.type == "cuda":
        cap = cuda_capability or torch.cuda.get_device_capability(device)
        native = tuple(cap) >= (8, 0)
        if setting == "true":
            return (AmpDecision(torch.bfloat16, setting, f"runtime.amp: true; GPU compute capability {cap[0]}.{cap[1]}")
                    if native or (cuda_capability is None and torch.cuda.is_bf16_supported()) else
                    AmpDecision(torch.float16, setting, f"runtime.amp: true; GPU {cap[0]}.{cap[1]} has no bf16: fp16 "
                                                        "with a loss scaler"))
        return (AmpDecision(torch.bfloat16, setting, f"auto: GPU compute capability {cap[0]}.{cap[1]} >= 8.0 has "
                                                     "native bf16")
                if native else
                AmpDecision(None, setting, f"auto: GPU compute capability {cap[0]}.{cap[1]} < 8.0 has no native bf16"))
    if setting == "true":
        return AmpDecision(torch.bfloat16, setting, "runtime.amp: true")
    have = sorted(set(CPU_BF16_FLAGS) & (cpu_flags() if flags is None else set(flags)))
    if have:
        return AmpDecision(torch.bfloat16, setting, f"auto: the CPU has native bf16 ({', '.join(have)})")
    return AmpDecision(None, setting, "auto: the CPU has no native bf16 (no avx512_bf16 / amx_bf16 / bf16 flag): "
                                      "bf16 autocast would run emulated, slower than fp32")


_LAST: list[AmpDecision] = []  # the decision of this process's run, for the stage's run card


def amp_dtype_for(device: torch.device, amp) -> torch.dtype | None:
    """The autocast dtype of :func:`amp_decision` (recorded for the run card)."""
    decision = amp_decision(device, amp)
    _LAST[:] = [decision]
    return decision.dtype


def last_precision() -> dict | None:
    """The precision decision of this process's last runtime set-up (None before any)."""
    return _LAST[0].record() if _LAST else None


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this for deterministic matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def setup_runtime(cfg, seed: int) -> Runtime:
    """Build a Runtime from a ``RuntimeParams`` section and seed every RNG."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(seed, cfg.deterministic)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True
    return Runtime(device=device, amp_dtype=amp_dtype_for(device, cfg.amp), channels_last=cfg.channels_last,
                   compile_backend=cfg.compile_backend if cfg.compile else None)


# ------------------------------------------------------------------ what the numbers depend on
FACTS_FILE = "data/runtime.json"  # written by the `runtime` stage; every torch stage depends on it


def runtime_facts(cfg) -> dict:
    """The resolved runtime a ``runtime`` params section gives on this machine, beyond the params
    themselves: the device (a GPU by name: kernels differ between models), the precision
    ``runtime.amp`` resolves to (``auto`` picks bf16 or fp32 from the CPU's flags or the GPU's
    compute capability) and the intra-op thread count (float reductions split differently).
    Each of them changes the numbers a stage computes, and none of them is visible to DVC in
    params.yaml; the ``runtime`` stage (always run) writes them to :data:`FACTS_FILE`, which every
    torch stage depends on, so DVC reruns exactly the stages whose numbers this machine would
    not reproduce.  Under torchrun (``runtime.nproc`` > 1) each process runs torchrun's
    ``OMP_NUM_THREADS`` threads (1 unless set) when ``runtime.threads`` is 0."""
    device = resolve_device(cfg.device)
    name = device.type
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = f"cuda: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    if cfg.threads:
        threads = int(cfg.threads)
    elif int(cfg.nproc) > 1:
        threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    else:
        threads = torch.get_num_threads()
    return {"device": name, "precision": amp_decision(device, cfg.amp).name, "threads": threads}


def check_recorded_facts(cfg, path: str = FACTS_FILE) -> None:
    """Refuse to run a stage on a machine whose resolved runtime differs from the one recorded in
    ``path`` (DVC's lock would then hold numbers this process does not make).  Nothing to check
    where the file is absent (a stage script run by hand outside a DVC project)."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return
    recorded, here = json.loads(p.read_text()), runtime_facts(cfg)
    if recorded != here:
        diff = ", ".join(f"{k} {recorded.get(k)!r} there, {here.get(k)!r} here"
                         for k in sorted(set(recorded) | set(here)) if recorded.get(k) != here.get(k))
        raise UserError(f"{path} (the runtime stage's record of this machine) disagrees with this process: {diff}; "
                        "run `dvc repro` (it reruns the runtime stage first, then exactly the stages whose "
                        "numbers depend on it)")

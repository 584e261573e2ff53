"""Resumable training: a checkpoint every ``checkpoint_every`` epochs, written atomically to
``data/checkpoints/<stage>.pt`` (:func:`resume_file`), holding everything the next epoch depends on: model, optimiser (and grad scaler), the method's own state and random generators,
the OOD sampler and current selection, the RNG states of torch / numpy / python, the epoch, and
the logs so far.  Rerunning a killed stage continues from the last checkpoint and ends with the
same weights as an uninterrupted run (bit for bit on CPU in deterministic mode: tested).

A checkpoint is used only when its *fingerprint* matches the current run (the stage, its params,
the library's source and the hashes of its inputs); otherwise it is ignored with a message and training starts over.
Checkpoints load with ``torch.load(weights_only=True)``: numpy / python RNG states are stored
as tensors and lists, never as pickled objects.

The resume state is not a DVC output: DVC neither hashes nor caches it (``data/checkpoints/`` is
gitignored and named nowhere in dvc.yaml), so a teammate's ``dvc pull`` is complete without it,
``dvc exp apply`` leaves nothing behind and DVC's run cache serves the training stages (DVC skips
the run cache for any stage with a persistent output).  The stage finds it by convention
(:func:`resume_file`) and ``ltcl.stage.run_stage`` removes it once the outputs are written; a killed
run leaves it, and the rerun DVC starts resumes from it.  ``LTCL_KEEP_CHECKPOINTS=1`` keeps it
after success (to inspect it).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ltcl.io import load_checkpoint, save_checkpoint, sha256_file

RESUME_DIR = Path("data/checkpoints")  # relative to the project root (a stage's working directory)


def resume_file(stage: str) -> Path:
    """Where ``stage`` (``ood-warmup``, ``pretrain``, ``distill``) keeps its resume state."""
    return RESUME_DIR / f"{stage}.pt"


def code_hash() -> str:
    """sha256 over the ltcl package's source files: a checkpoint made by other code (DVC reruns
    a stage when its code changed) must not be resumed."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def fingerprint(stage: str, params: dict, inputs: list[str | Path] = ()) -> str:
    """What a checkpoint must match to be resumed: stage name, params, library code, input file hashes."""
    h = hashlib.sha256(stage.encode())
    h.update(code_hash().encode())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for p in inputs:
        p = Path(p)
        h.update(str(p).encode())
        h.update(sha256_file(p).encode() if p.is_file() else b"missing")
    return h.hexdigest()


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def method_state(method) -> dict:
    """The method's own state plus every random generator and extra module / parameter it
    holds beside the encoder (SDCLR's pruned-branch norms, GML's classifier and tau_g)."""
    skip = {"model", "teacher", "augment"}
    gens, modules, params = {}, {}, {}
    for name, v in vars(method).items():
        if name in skip:
            continue
        if isinstance(v, torch.Generator):
            gens[name] = v.get_state()
        elif isinstance(v, torch.nn.Parameter):
            params[name] = v.detach().cpu().clone()
        elif isinstance(v, torch.nn.Module):
            modules[name] = {k: t.detach().cpu() for k, t in v.state_dict().items()}
    return {"own": method.state_dict(), "generators": gens, "modules": modules, "parameters": params}


def load_method_state(method, s: dict) -> None:
    method.load_state_dict(s["own"])
    for name, st in s["generators"].items():
        getattr(method, name).set_state(st)
    for name, st in s["modules"].items():
        getattr(method, name).load_state_dict(st)
    for name, t in s["parameters"].items():
        with torch.no_grad():
            getattr(method, name).copy_(t)


class Resumer:
    """Saves and restores the training state of one stage.

    ``extra`` returns stage-specific state (OOD sampler, current selection, update log) to
    store with each checkpoint; the stage restores it from :meth:`load`'s result.
    """

    def __init__(self, path: str | Path | None, fp: str, every: int,
                 extra: Optional[Callable[[], dict]] = None):
        self.path = None if path is None else Path(path)
        self.fp = fp
        self.every = max(1, int(every))
        self.extra = extra

    def load(self) -> Optional[dict]:
        if self.path is None or not self.path.exists():
            return None
        try:
            ck = load_checkpoint(self.path)
        except Exception as exc:  # a torn or foreign file: start over, do not crash
            print(f"ltcl: ignoring unreadable checkpoint {self.path}: {exc}", file=sys.stderr)
            return None
        if not isinstance(ck, dict) or ck.get("fingerprint") != self.fp:
            print(f"ltcl: {self.path} was made with other params or inputs; starting from scratch", file=sys.stderr)
            return None
        print(f"ltcl: resuming from {self.path} after epoch {ck['epoch']}", file=sys.stderr)
        return ck

    def restore(self, ck: dict, method, optimizer, scaler=None) -> None:
        method.model.load_state_dict(ck["model"])
        load_method_state(method, ck["method"])
        optimizer.load_state_dict(ck["optimizer"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])

    def save(self, epoch: int, method, optimizer, logs: list[dict], scaler=None, force: bool = False) -> None:
        """After ``epoch`` epochs (counted from 0 of the stage's schedule)."""
        if self.path is None or (not force and epoch % self.every):
            return
        state: dict[str, Any] = {
            "fingerprint": self.fp, "epoch": int(epoch),
            "model": {k: v.detach().cpu() for k, v in method.model.state_dict().items()},
            "method": method_state(method), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(), "logs": logs,
        }
        if self.extra is not None:
            state["extra"] = self.extra()
        save_checkpoint(self.path, state)

"""Distributed launch of a stage script: pretrain and distill rerun themselves under torchrun
when ``runtime.nproc`` > 1, so that ``dvc repro`` needs no other command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from ltcl.errors import UserError
from ltcl.runrecord import run_record_path
from ltcl.stage import remove_outputs


def maybe_torchrun(script: str | Path, outputs: Iterable[str | Path] = (), stage: str = "") -> None:
    """With ``runtime.nproc`` > 1 and not already under torchrun, run ``script`` again as
    ``python -m torch.distributed.run --standalone --nproc_per_node N script`` and exit with its
    status (removing ``outputs`` and the stage's run record if it failed).  Otherwise return and let the caller run.

    Params that cannot run distributed (``ltcl.train.distributed.check_stage``) stop here with one
    message and exit code 2, as a stage does on bad params; unreadable params are left to the stage."""
    from ltcl.collectives import env_world_size

    if env_world_size() > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        return
    from ltcl.params import load_params

    try:
        params = load_params()
    except UserError:  # reported by the stage proper
        return
    n = int(params.runtime.nproc)
    if n <= 1:
        return
    from ltcl.train.distributed import check_stage

    try:
        check_stage(stage, params, n)
    except UserError as exc:
        remove_outputs(outputs)
        print(f"ltcl {stage}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", str(script),
           *sys.argv[1:]]
    print(f"ltcl: runtime.nproc={n}: {' '.join(cmd)}", file=sys.stderr)
    rc = subprocess.call(cmd)
    if rc != 0:  # rank 0 writes the run record on success only; a killed torchrun leaves the old one
        remove_outputs([*outputs, run_record_path(stage)])
    sys.exit(rc)

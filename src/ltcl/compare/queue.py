"""Paper tables as queues of DVC experiments (``ltcl queue <preset>``).

Each preset is a list of (row name, params overrides) applied on top of the workspace's
params.yaml with ``dvc exp run --queue -n <name> -S key=value ...``; ``--seeds N`` repeats every
row with N seeds (each seed also permutes which class gets which count, ``data.split_seed``; on
SDCLR's community CIFAR splits repeat k also takes split ``data.split_index`` = k + 1, at most 5).
``dvc exp run --run-all`` (or ``dvc queue start``) runs them, ``ltcl compare`` tabulates them.

Every row sets the projection head its authors' code builds (``model.proj_layers``: 3 for SDCLR's
rows, 2 for the others; ``ltcl.released_code``), and the TS row TS's published protocol
(``pretrain.ts.period_fraction`` 0.2, tau 0.1 .. 1.0).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ltcl.errors import UserError
from ltcl.released_code import GH_PROTOCOL, TS_PROTOCOL, authors_proj_layers, mak_protocol

COLT_LOSS = {"pretrain.domain_loss": "colt"}  # COLT's rows: its domain loss as its released code computes it
T2 = [
    ("simclr", {"pretrain.method": "simclr", "ood.strategy": "none", "distill.enabled": False}),
    ("simclr-colt", {"pretrain.method": "simclr", "ood.strategy": "colt", "distill.enabled": False, **COLT_LOSS}),
    ("simclr-kdup", {"pretrain.method": "psd", "pretrain.pruned_branch": False, "ood.strategy": "kdup",
                     "distill.enabled": True}),
    ("sdclr", {"pretrain.method": "sdclr", "ood.strategy": "none", "distill.enabled": False}),
    ("sdclr-colt", {"pretrain.method": "sdclr", "ood.strategy": "colt", "distill.enabled": False, **COLT_LOSS}),
    ("sdclr-kdup", {"pretrain.method": "psd", "pretrain.pruned_branch": True, "ood.strategy": "kdup",
                    "distill.enabled": True}),
]
KDUP = {"pretrain.method": "psd", "ood.strategy": "kdup", "distill.enabled": True}
NO_OOD = {"ood.strategy": "none", "distill.enabled": False}
BCL_D = {"pretrain.method": "bcl", "pretrain.pruned_branch": True, "pretrain.bcl.rand_k": 2, **NO_OOD}  # BCL README.md:117
# paper 000 Table 2 (CIFAR-100-LT, SDCLR's split), the self-supervised rows ltcl runs (FASSL has no released code)
TABLE000 = [
    ("t000-simclr", {"pretrain.method": "simclr", **NO_OOD}),
    ("t000-sdclr", {"pretrain.method": "sdclr", **NO_OOD}),
    ("t000-ts", {"pretrain.method": "ts", **NO_OOD, **TS_PROTOCOL}),
    ("t000-gh", {"pretrain.method": "simclr", **NO_OOD, **GH_PROTOCOL}),
    ("t000-bcl", {"pretrain.method": "bcl", **NO_OOD}),
    ("t000-tase", {"pretrain.method": "tase", **NO_OOD}),
]
# the supervised methods train on the labelled split alone and take no pruned branch (the schema refuses both)
SUPERVISED_ROW = {"ood.strategy": "none", "pretrain.pruned_branch": False}


def _grid(name: str, key: str, values: list, base: dict | None = None) -> list[tuple[str, dict]]:
    return [(f"{name}-{v}", {**(base or KDUP), key: v}) for v in values]


def merged(params: dict, overrides: dict[str, Any]) -> dict:
    """``params`` (nested) with flat overrides applied; unknown sections are created (and then
    refused by validation)."""
    import copy

    out = copy.deepcopy(params)
    for key, v in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def _effective(params: dict, over: dict[str, Any]):
    """The validated params a row runs with: ``params`` (nested) with the row's flat overrides."""
    from ltcl.params import validate

    return validate(merged(params, over), path="params.yaml with the row's overrides")


def with_authors_head(params: dict, rows: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Each row with ``model.proj_layers`` set to the head its authors' code builds for the method
    and pruned branch the row runs (its own keys, else ``params``')."""
    out = []
    for name, over in rows:
        pre = _effective(params, over).pretrain
        out.append((name, {**over, "model.proj_layers": authors_proj_layers(pre.method, pre.pruned_branch)}))
    return out


def presets(params: dict, n_id: int | None = None) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every preset for the current params (grids are centred on the current values); every row
    sets the head its authors' code builds (:func:`with_authors_head`).  ``n_id``: the size of the
    long-tailed split for the compute-matched row (None: read from metrics/dataset.json)."""
    eff = _effective(params, {})
    nb, t = int(eff.ood.budget), int(eff.ood.interval)
    # MAK's own protocol (SimCLR retrained on ID + its selection, no distillation), beside the KDUP
    # framework with the other samplers (paper 003 Table 3 compares the samplers on top of SimCLR)
    mak = {"pretrain.method": "simclr", "distill.enabled": False, **mak_protocol(eff.pretrain.epochs)}
    table = {
        "table2": T2,
        "table3": [(f"sampling-{s}", {**KDUP, "ood.strategy": s}) for s in ("random", "colt", "kdup")]
        + [("sampling-mak", mak)],
        "table5": [
            ("ablation-strong-baseline", {"pretrain.method": "simclr", "ood.strategy": "kdup", "distill.enabled": False}),
            ("ablation-psd", {**KDUP, "distill.enabled": False}),
            ("ablation-psd-kd", KDUP),
        ],
        "table6": [
            ("distill-guided", {**KDUP, "distill.kdup.guided_sampling": True, "distill.kdup.guided_weighting": True}),
            ("distill-no-weighting", {**KDUP, "distill.kdup.guided_sampling": True,
                                      "distill.kdup.guided_weighting": False}),
            ("distill-no-sampling", {**KDUP, "distill.kdup.guided_sampling": False,
                                     "distill.kdup.guided_weighting": True}),
            ("distill-typical", {**KDUP, "distill.kdup.guided_sampling": False,
                                 "distill.kdup.guided_weighting": False}),
        ],
        "table8": [(f"alpha{a}-beta{b}", {**KDUP, "pretrain.alpha": a, "distill.kdup.beta": b})
                   for a in (0.1, 0.3, 0.5) for b in (0.2, 0.4, 0.6)],
        "table9": _grid("budget", "ood.budget", sorted({max(1, nb // 2), nb, 2 * nb})),
        "table10": _grid("interval", "ood.interval", sorted({max(1, t // 2), t, 2 * t})),
        "table11": [("momentum-on", {**KDUP, "ood.momentum": 0.9}), ("momentum-off", {**KDUP, "ood.momentum": 0.0})],
        "methods": [
            ("m-simclr", T2[0][1]), ("m-sdclr", T2[3][1]),
            ("m-ts", {"pretrain.method": "ts", "ood.strategy": "none", "distill.enabled": False, **TS_PROTOCOL}),
            ("m-tase", {"pretrain.method": "tase", "ood.strategy": "none", "distill.enabled": False}),
            ("m-bcl", {"pretrain.method": "bcl", **NO_OOD}), ("m-bcl-d", BCL_D),
            ("m-gh", {"pretrain.method": "simclr", **NO_OOD, **GH_PROTOCOL}),
            ("m-colt", T2[1][1]), ("m-mak", mak), ("m-kdup", KDUP),
            ("m-gloco", {**SUPERVISED_ROW, "pretrain.method": "gloco", "distill.enabled": False}),
            ("m-gloco-proco", {**SUPERVISED_ROW, "pretrain.method": "gloco-proco", "distill.enabled": False}),
            ("m-gml", {**SUPERVISED_ROW, "pretrain.method": "gml", "distill.enabled": True, "distill.method": "gml"}),
        ],
        "table000": TABLE000,
        "honest": [
            ("honest-simclr", T2[0][1]),
            ("honest-simclr-balanced", {**T2[0][1], "data.subset": "balanced-subset"}),
            ("honest-kdup", KDUP),
            ("honest-kdup-balanced", {**KDUP, "data.subset": "balanced-subset"}),
            ("honest-simclr-matched", {**T2[0][1], "pretrain.epochs": compute_matched_epochs(params, n_id)}),
        ],
    }
    return {preset: with_authors_head(params, rows) for preset, rows in table.items()}


def compute_matched_epochs(params: dict, n_id: int | None = None) -> int:
    """Epochs of ID-only SimCLR with as many optimisation steps as the KDUP pre-training:
    warm-up W epochs on N_id images, then E - W epochs on N_id + N_b (paper 003 Sec. 3.1)."""
    ood, pre = params.get("ood", {}), params.get("pretrain", {})
    if n_id is None:
        ds = Path("metrics/dataset.json")
        if not ds.exists():
            raise UserError("metrics/dataset.json is missing: run `dvc repro make-lt-dataset` first "
                             "(the compute-matched baseline needs the size of the long-tailed split)")
        n_id = int(json.loads(ds.read_text())["size_lt"])
    b, e, w, nb = int(pre["batch_size"]), int(pre["epochs"]), int(ood["warmup_epochs"]), int(ood["budget"])
    steps = w * math.ceil(n_id / b) + (e - w) * math.ceil((n_id + nb) / b)
    return math.ceil(steps / math.ceil(n_id / b))


HYDRA_SPECIAL = set("()[]{}:=,'\"\\")  # characters DVC's -S parser (Hydra's override grammar) refuses unquoted


def _value(v: Any) -> str:
    """``v`` as DVC's ``-S key=value`` reads it: YAML flow style, strings with Hydra's special
    characters single-quoted (e.g. a report.title with parentheses)."""
    if isinstance(v, str) and (set(v) & HYDRA_SPECIAL or v != v.strip()):
        return "'" + v.replace("'", "\\'") + "'"
    return yaml.safe_dump(v, default_flow_style=True, width=float("inf")).strip().removesuffix("...").strip()


def set_param_args(overrides: dict[str, Any]) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["-S", f"{k}={_value(v)}"]
    return out


COMMUNITY_SPLITS = 5  # SDCLR published five CIFAR-LT splits (data.split_index 1..5)


def community_cifar(params: dict) -> bool:
    """True when ``params`` (nested) train on SDCLR's published CIFAR-LT splits."""
    data = params.get("data") or {}
    return data.get("split") == "community" and data.get("source") in ("cifar10", "cifar100")


def check_seeds(seeds: int, params: dict) -> None:
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if seeds > COMMUNITY_SPLITS and community_cifar(params):
        raise UserError(f"--seeds {seeds}: data.split: community has SDCLR's {COMMUNITY_SPLITS} published CIFAR-LT "
                        f"splits (data.split_index 1..{COMMUNITY_SPLITS}), one experiment each; use --seeds "
                        f"{COMMUNITY_SPLITS} or fewer (or data.split: generated for more seeds)")


def seed_overrides(seed: int, community: bool = False) -> dict[str, int]:
    """The overrides of repeat ``seed`` (0-based): every stage seed and data.split_seed; on SDCLR's
    community CIFAR splits also the split itself, data.split_index = seed + 1."""
    out = {"data.split_seed": seed, "pretrain.seed": seed, "distill.seed": seed, "ood.seed": seed,
           "probe.seed": seed}
    return {**out, "data.split_index": seed + 1} if community else out


def repeats(params: dict, seeds: int) -> list[dict[str, int]]:
    """The overrides of each of ``seeds`` repeats of a row under ``params`` (nested): repeat s
    gets :func:`seed_overrides` (s); refused beyond SDCLR's five splits on community CIFAR."""
    check_seeds(seeds, params)
    community = community_cifar(params)
    return [seed_overrides(s, community) for s in range(seeds)]


def queue_commands(preset: str, params: dict, seeds: int = 1, n_id: int | None = None) -> list[list[str]]:
    table = presets(params, n_id)
    if preset not in table:
        raise UserError(f"unknown preset {preset!r}; known: {', '.join(table)}")
    reps = repeats(params, seeds) if seeds != 1 else [{}]
    cmds = []
    for name, over in table[preset]:
        for s, rep in enumerate(reps):
            exp = f"{name}-s{s}" if seeds > 1 else name
            cmds.append(["dvc", "exp", "run", "--queue", "-n", exp, *set_param_args({**over, **rep})])
    return cmds


def run_commands(cmds: list[list[str]]) -> None:
    """Run each command (an argv list, no shell) in turn; stop at the first failure."""
    for c in cmds:
        subprocess.run(c, check=True)


def queue(preset: str, seeds: int = 1, dry_run: bool = False, params_file: str = "params.yaml") -> list[list[str]]:
    params = yaml.safe_load(Path(params_file).read_text())
    cmds = queue_commands(preset, params, seeds)
    if not dry_run:
        run_commands(cmds)
    return cmds

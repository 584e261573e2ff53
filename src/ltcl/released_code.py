"""What the methods' authors ran in their released code, where ltcl has a param for it, and a
one-line account of a run's settings against it.

* :func:`authors_proj_layers` - the projection head's Linear count of a row (``model.proj_layers``):
  3 for SDCLR's rows (VITA-Group/SDCLR@f1490fc: every SDCLR run of cmds/execute_hist/camera_ready.sh
  passes ``--prune_dual_bn``, for which train_simCLR.py:197-199 builds models/resnet_prune_multibn.py's
  ``proj_head``, three Linears, ``twoLayerProj=False`` at line 192), 2 for every other row (the
  ``proj_head`` of models/utils.py in SDCLR's SimCLR runs, in COLT, train_simCLR.py:130-131, and in TS,
  train_simCLR.py:146-148; paper 003 follows COLT; paper 000 names no head).
* :data:`TS_PROTOCOL` - TS's published runs (annusha/temperature_schedules@3ac1db6 README.md:53-60):
  tau 0.1 .. 1.0, t_max 200 in 2,000 epochs, i.e. ``pretrain.ts.period_fraction`` 0.2.
* :data:`GH_PROTOCOL` - GH's CIFAR-100-LT runs: L_GH after 500 of 1,000 epochs, its two-stage cosine.
* :func:`mak_protocol` - MAK's runs (VITA-Group/MAK@75d2b9f): the sampling model trained as long as
  the final one (1,000 epochs both, cmds/shell_scrips/imagenet-100-add-data.sh:28, sampling.sh).
* :func:`describe` - what a run's params make of those settings (method, head, TS's period, TASE's
  schedule, the pruned branch, COLT's domain term); ``ltcl preset run`` prints it for every
  experiment, and adds a note where a setting differs from the authors' code.

docs/deviations.md tabulates every remaining difference from the released code.  No torch (the
preset commands import it).
"""

from __future__ import annotations

SDCLR_HEAD_LAYERS = 3  # models/resnet_prune_multibn.py proj_head (--prune_dual_bn)
SIMCLR_HEAD_LAYERS = 2  # models/utils.py proj_head (SDCLR's SimCLR runs, COLT, TS)
# TS's published runs (README.md:53-60, 77-84): -S keys of a TS row
TS_PROTOCOL = {"pretrain.ts.tau_min": 0.1, "pretrain.ts.tau_max": 1.0, "pretrain.ts.period_fraction": 200 * 2 / 2000}
# GH's CIFAR-100-LT runs (Geometric-Harmonization@9f7057c README.md "SimCLR + GH": --warm_up 500 of
# --epochs 1000, lr_scheduler_warm with --lr 0.5, --lr_min_stage1 0.3, --lr_max_stage2 0.3)
GH_PROTOCOL = {"pretrain.gh.enabled": True, "pretrain.gh.warmup_fraction": 500 / 1000,
               "pretrain.lr_schedule": "two-stage", "pretrain.lr_split": 500 / 1000,
               "pretrain.lr_stage1_min": 0.3 / 0.5, "pretrain.lr_stage2_max": 0.3 / 0.5}


def mak_protocol(pretrain_epochs: int) -> dict:
    """The -S keys of a MAK row: ``ood.strategy: mak`` with its sampling model (the ood-sampling
    warm-up) trained for the final encoder's ``pretrain.epochs``, as MAK's scripts do."""
    return {"ood.strategy": "mak", "ood.warmup_epochs": int(pretrain_epochs)}


HEAD_LAYOUT = {
    2: "Linear-BN-ReLU-Linear-BN (models/utils.py proj_head of SDCLR / COLT / TS)",
    3: "Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN (SDCLR's dual-BN proj_head, models/resnet_prune_multibn.py)",
}


def uses_pruned_branch(method: str, pruned_branch: bool) -> bool:
    """Whether the row trains SDCLR's pruned branch (``pretrain.method: sdclr`` or ``pretrain.pruned_branch``)."""
    return method == "sdclr" or bool(pruned_branch)


def authors_proj_layers(method: str, pruned_branch: bool) -> int:
    """``model.proj_layers`` of the row as its authors' code builds the head: 3 with SDCLR's pruned
    branch (SDCLR, SDCLR + COLT, SDCLR + KDUP), else 2."""
    return SDCLR_HEAD_LAYERS if uses_pruned_branch(method, pruned_branch) else SIMCLR_HEAD_LAYERS


def describe(params) -> str:
    """One line: the row, its projection head, and TS's period / TASE's schedule / the pruned branch /
    COLT's domain term where the row runs them, with a note where a setting is not the authors'
    (``params``: a validated ``ltcl.params.Params``)."""
    from ltcl.compare.experiments import flatten, method_label

    pre, model, ood = params.pretrain, params.model, params.ood
    parts = [method_label(flatten(params.model_dump(mode="json", by_alias=True))),
             f"head model.proj_layers {model.proj_layers} = {HEAD_LAYOUT[model.proj_layers]}, "
             f"hidden {model.proj_hidden}, out {model.proj_dim}"]
    notes = []
    want = authors_proj_layers(pre.method, pre.pruned_branch)
    if model.proj_layers != want:
        notes.append(f"the authors' code runs this row with model.proj_layers {want}")
    if pre.method == "ts":
        ts = pre.ts
        period = ts.period_fraction * pre.epochs
        parts.append(f"TS period T = {period:g} epochs = pretrain.ts.period_fraction {ts.period_fraction:g} x "
                     f"pretrain.epochs {pre.epochs} (TS's t_max = {period / 2:g}), "
                     f"tau {ts.tau_min:g} .. {ts.tau_max:g}")
        for key, value in TS_PROTOCOL.items():
            have = getattr(ts, key.rsplit(".", 1)[1])
            if abs(have - value) > 1e-12:
                notes.append(f"TS's published runs use {key} {value:g} (this run: {have:g})")
    if pre.method == "tase":
        t = pre.tase
        parts.append(f"TASE B {t.warmup} / F {t.refresh} / S {t.full} epochs, tau {t.tau_min:g} .. {t.tau_max:g}, "
                     "no period (paper 000 Alg. 1 has no cosine schedule)")
    if uses_pruned_branch(pre.method, pre.pruned_branch):
        parts.append(f"pruned branch prune_ratio {pre.prune_ratio:g} with its own BatchNorms")
    if pre.gh.enabled:
        g = pre.gh
        parts.append(f"GH from epoch {pre.gh_start_epoch} (K {g.target_dim}), lr {pre.lr_schedule}")
        if pre.lr_schedule != "two-stage" or abs(pre.lr_split - g.warmup_fraction) > 1e-12:
            notes.append("GH's released runs use pretrain.lr_schedule two-stage with lr_split = gh.warmup_fraction")
    if ood.strategy == "mak":
        parts.append(f"MAK: sampling model {ood.warmup_epochs} epochs (ood.warmup_epochs), then a new encoder for "
                     f"{pre.epochs} epochs on ID + {ood.budget} selected, no L_DD")
        if ood.warmup_epochs != pre.epochs:
            notes.append("MAK's released runs train the sampling model as long as the final one "
                         "(ood.warmup_epochs = pretrain.epochs)")
    elif ood.strategy != "none" and params.pretrain.alpha > 0:
        parts.append(f"L_DD pretrain.domain_loss {pre.domain_loss}, alpha {pre.alpha:g}")
        if ood.strategy == "colt" and pre.domain_loss != "colt":
            notes.append("COLT's released code computes L_DD as pretrain.domain_loss colt")
    line = "; ".join(parts)
    return line + (" -- NOTE: " + "; ".join(notes) if notes else "")

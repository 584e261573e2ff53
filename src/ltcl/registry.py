"""The one registry of training methods: params name -> ``module:Class``.

``pretrain.method`` picks a pre-training method, ``distill.method`` a distillation; each name is
also the name of the method's own params subsection (``pretrain.<name>``, ``ltcl.method_params``).  The table
holds import paths, not classes, so that validating params imports no torch and a stage imports
only the module of the method it runs: DVC's cache then reruns a stage only when the code of the
configured method changes (``dvc.yaml`` lists each method's own files under
``deps/<section>.method/<name>/``; ``ltcl deps --check`` keeps them exact).
"""

from __future__ import annotations

from importlib import import_module

from ltcl.errors import UserError

PRETRAIN = {
    "simclr": "ltcl.methods.contrastive:SimCLR",
    "sdclr": "ltcl.methods.contrastive:SDCLR",
    "psd": "ltcl.methods.contrastive:PseudoSemanticDiscrimination",  # KDUP's pre-training (PSD)
    "ts": "ltcl.methods.temperature:TemperatureSchedule",
    "tase": "ltcl.methods.temperature:TASE",
    "gloco": "ltcl.methods.gloco:GloCo",
    "gloco-proco": "ltcl.methods.gloco:GloCoProCo",  # a DVC -S key names it (pretrain.gloco-proco.k): no '+'
    "gml": "ltcl.methods.gml:GMLTeacher",
}
DISTILL = {
    "kdup": "ltcl.methods.distill.guided:GuidedDistillation",  # KDUP's guided distillation
    "gml": "ltcl.methods.distill.gml:GMLStudent",
}
# pre-training methods that read the long-tailed split's labels (need ood.strategy: none)
SUPERVISED = ("gloco", "gloco-proco", "gml")
TABLES = {"pretrain": PRETRAIN, "distill": DISTILL}


def module_of(section: str, name: str) -> str:
    """The module that holds method ``name`` of ``section`` ("pretrain" or "distill")."""
    return TABLES[section][name].split(":")[0]


def get_method(name: str, section: str = "pretrain"):
    """The method class registered as ``name`` (imports its module on first use)."""
    table = TABLES[section]
    if name not in table:
        raise UserError(f"unknown {section} method {name!r}; known: {', '.join(table)}")
    module, cls = table[name].split(":")
    return getattr(import_module(module), cls)

"""The registries: every training method and every OOD sampling strategy, one entry each.

An entry carries everything about its method (strategy): where its code is, its own params model
(the subsection ``pretrain.<name>``, ``distill.<name>`` or ``ood.<name>`` of params.yaml,
:mod:`ltcl.method_params`), the name the comparison tables and the report print, and what it needs.
Params validation, the stages, ``ltcl compare``, the report, the queue and the presets read these
tables; nothing restates them.  Adding a method is one module plus one entry here (README "Add a
method"); adding a sampling strategy likewise (README "Add a sampling strategy").

The tables hold import paths, not classes, so that validating params imports no torch and a stage
imports only the code of the method (strategy) it runs: DVC then reruns a stage only when the code
of the configured one changes (dvc.yaml depends on ``deps/<section>.<choice>/${...}``, the links
to each entry's own import closure; ``ltcl deps --check`` keeps them exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from ltcl.errors import UserError
from ltcl.method_params import (
    BCLParams,
    COLTParams,
    GloCoParams,
    GloCoProCoParams,
    GMLStudentParams,
    GMLTeacherParams,
    GuidedDistillParams,
    MAKParams,
    NoKeys,
    PSDParams,
    Subsection,
    TASEParams,
    TSParams,
)


@dataclass(frozen=True)
class MethodEntry:
    """One training method of ``pretrain.method`` or ``distill.method``."""

    target: str  # "module:Class", a ltcl.methods.base.Method
    params: type[Subsection]  # its own keys: the subsection pretrain.<name> / distill.<name>
    display: str  # its name in comparison tables and the report ("SimCLR", "GloCo + ProCo")
    about: str  # one line: what it is and its paper (params reference, `ltcl queue methods`)
    supervised: bool = False  # reads the long-tailed split's labels (so: no OOD images, no unlabeled data)
    ddp: bool = False  # its step computes the global batch's loss under torchrun (gathered embeddings)
    teacher: bool = False  # distillation: trains from the frozen pre-trained encoder f
    classifier: bool = False  # has its own classifier, whose test accuracy the stage reports
    gh: bool = False  # composes with Geometric Harmonization (pretrain.gh, ltcl.methods.gh) as GH's code composes it


@dataclass(frozen=True)
class StrategyEntry:
    """One OOD sampling strategy of ``ood.strategy``."""

    target: str  # "module:Class", a ltcl.sampling.strategies.base.Strategy
    params: type[Subsection]  # its own keys: the subsection ood.<name>
    display: str  # how a comparison row names it ("SimCLR + COLT"); "" for none
    about: str
    reads_pool: bool = False  # selects from the OOD pool (ood-pool's pool.npy)
    reads_embeddings: bool = False  # embeds the ID images (and the pool) with the current encoder
    picks: str = ""  # the report: what the update's thumbnails of its selection show
    tailness: str = "paper 003 Eq. 4"  # the report: the tailness its update's histogram shows
    # MAK's protocol: sample once from the ood-sampling warm-up, then pretrain trains a fresh encoder from epoch 0
    # on ID + the selection as one data set (no domain label: no L_DD) and re-samples nothing
    retrain: bool = False


PRETRAIN: dict[str, MethodEntry] = {
    "simclr": MethodEntry("ltcl.methods.contrastive:SimCLR", NoKeys, "SimCLR",
                          "SimCLR (Chen et al. 2020): NT-Xent on two views", ddp=True, gh=True),
    "sdclr": MethodEntry("ltcl.methods.contrastive:SDCLR", NoKeys, "SDCLR",
                         "SDCLR (Jiang et al. 2021): SimCLR against its pruned self", ddp=True, gh=True),
    # KDUP's pre-training: a SimCLR row of paper 003 ("SimCLR + KDUP")
    "psd": MethodEntry("ltcl.methods.contrastive:PseudoSemanticDiscrimination", PSDParams, "SimCLR",
                       "KDUP's pseudo semantic discrimination (paper 003 Sec. 3.1.2)", ddp=True),
    "bcl": MethodEntry("ltcl.methods.bcl:BCL", BCLParams, "BCL-I",
                       "BCL-I (Zhou et al. 2022): SimCLR with RandAugment boosted by a per-sample loss memory",
                       ddp=True, gh=True),
    "ts": MethodEntry("ltcl.methods.temperature:TemperatureSchedule", TSParams, "TS",
                      "TS (Kukleva et al. 2023): SimCLR with a cosine temperature schedule", ddp=True),
    "tase": MethodEntry("ltcl.methods.temperature:TASE", TASEParams, "TASE",
                        "TASE (paper 000): temperatures from pseudo-class sizes"),
    "gloco": MethodEntry("ltcl.methods.gloco:GloCo", GloCoParams, "GloCo",
                         "GloCo (paper 001 Sec. 3.1-3.2), supervised", supervised=True),
    # a DVC -S key names it (pretrain.gloco-proco.k): no '+'
    "gloco-proco": MethodEntry("ltcl.methods.gloco:GloCoProCo", GloCoProCoParams, "GloCo + ProCo",
                               "GloCo + ProCo (paper 001 Sec. 3.3), supervised", supervised=True),
    "gml": MethodEntry("ltcl.methods.gml:GMLTeacher", GMLTeacherParams, "GML",
                       "GML's teacher (paper 002), supervised", supervised=True, classifier=True),
}
DISTILL: dict[str, MethodEntry] = {
    "kdup": MethodEntry("ltcl.methods.distill.guided:GuidedDistillation", GuidedDistillParams, "KDUP",
                        "KDUP's guided distillation (paper 003 Sec. 3.2)", ddp=True, teacher=True),
    "gml": MethodEntry("ltcl.methods.distill.gml:GMLStudent", GMLStudentParams, "GML",
                       "GML's student (paper 002 Sec. 3.3), supervised", supervised=True, teacher=True,
                       classifier=True),
}
_NEAREST = "pool images selected for the cluster (nearest the centre first)"
STRATEGIES: dict[str, StrategyEntry] = {
    "kdup": StrategyEntry("ltcl.sampling.strategies.kdup:KDUP", NoKeys, "KDUP",
                          "KDUP's sampling (paper 003 Sec. 3.1.1): its keys are the ood section's",
                          reads_pool=True, reads_embeddings=True, picks=_NEAREST),
    "colt": StrategyEntry("ltcl.sampling.strategies.colt:COLT", COLTParams, "COLT",
                          "COLT's sampling (Bai et al. 2023)", reads_pool=True, reads_embeddings=True,
                          picks=_NEAREST, tailness="COLT's in-batch tailness"),
    "random": StrategyEntry("ltcl.sampling.strategies.random:Random", NoKeys, "random OOD",
                            "ood.budget pool images drawn uniformly", reads_pool=True,
                            picks="pool images of the seeded uniform draw (its first 16)"),
    "augment": StrategyEntry("ltcl.sampling.strategies.augment:Augment", NoKeys, "augmented ID",
                             "augmented ID copies by KDUP's budgets (paper 003 Table 12)", reads_embeddings=True,
                             picks="ID images drawn to be augmented copies (seeded draw, before augmentation)"),
    "mak": StrategyEntry("ltcl.sampling.strategies.mak:MAK", MAKParams, "MAK",
                         "MAK's sampling (Jiang et al. 2021): ECLE tailness, proximity, K-center; then retrains",
                         reads_pool=True, reads_embeddings=True, retrain=True,
                         picks="pool images MAK selected, in its K-center order (each the farthest from the ID "
                               "set and the earlier picks)", tailness=""),
    "none": StrategyEntry("ltcl.sampling.strategies.none:NoOOD", NoKeys, "", "no OOD images"),
}
# params section -> (the key that chooses, its table)
TABLES: dict[str, dict] = {"pretrain": PRETRAIN, "distill": DISTILL, "ood": STRATEGIES}
CHOICE = {"pretrain": "method", "distill": "method", "ood": "strategy"}
SUPERVISED = tuple(n for n, e in PRETRAIN.items() if e.supervised)  # pre-training methods that read labels


def entry(section: str, name: str) -> MethodEntry | StrategyEntry:
    """The entry of ``name`` in ``section`` ("pretrain", "distill" or "ood")."""
    table = TABLES[section]
    if name not in table:
        raise UserError(f"unknown {section}.{CHOICE[section]} {name!r}; known: {', '.join(table)}")
    return table[name]


def module_of(section: str, name: str) -> str:
    """The module that holds method (strategy) ``name`` of ``section``."""
    return entry(section, name).target.split(":")[0]


def load(section: str, name: str):
    """The class registered as ``name`` in ``section`` (imports its module on first use)."""
    module, cls = entry(section, name).target.split(":")
    return getattr(import_module(module), cls)


def entry_of(cls) -> MethodEntry | None:
    """The entry that registers method class ``cls``, or the nearest registered class it derives
    from (None: no registered method).  The stages build only registered classes, so each states
    its flags (``ddp``: False unless its entry says so) in its own entry."""
    targets = {e.target: e for table in (PRETRAIN, DISTILL) for e in table.values()}
    for c in cls.__mro__:
        e = targets.get(f"{c.__module__}:{c.__qualname__}")
        if e is not None:
            return e
    return None


def get_method(name: str, section: str = "pretrain"):
    """The method class registered as ``name`` (imports its module on first use)."""
    return load(section, name)

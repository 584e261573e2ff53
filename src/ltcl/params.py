"""One pydantic schema for params.yaml.

Each DVC stage lists only the sections and keys it reads (dvc.yaml; for the training stages
:data:`STAGE_PARAMS`), so a change to the probe's parameters never invalidates the pre-training
stage.  Each method's and OOD strategy's own keys sit in its subsection (``pretrain.<method>``,
``distill.<method>``, ``ood.<strategy>``; :mod:`ltcl.method_params`), of which a stage lists the
configured one (``pretrain.${pretrain.method}``): another method's key reruns nothing.  Validation
happens before any work: an unknown key, a wrong type or an out-of-range value stops the
stage with one message that names the key and what is allowed, and nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ltcl.errors import UserError
from ltcl.method_params import Subsection
from ltcl.moved_keys import moved_messages
from ltcl.registry import DISTILL, PRETRAIN, STRATEGIES, SUPERVISED

PARAMS_FILE = "params.yaml"


def _known(v: str, names, what: str) -> str:
    """``v`` if it is one of ``names``, else the error a validator raises: what is allowed."""
    if v not in names:
        raise ValueError(f"unknown {what} {v!r}; known: {', '.join(names)}")
    return v


class ParamsError(UserError):
    """A params.yaml problem, phrased for the user (key, value, what is allowed)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data
DATA_SOURCES = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "folder", "npz", "list")  # = ltcl.data.sources.SOURCES
# data sources whose images carry no labels (ltcl.data.collection): every image is the training split
UNLABELED_SOURCES = ("images",)
# labeled sources a user brings (their class counts are their own): kept whole unless data.longtail: draw
USER_SOURCES = ("folder", "npz")
# the list bundles shipped in ltcl/data/lists (ltcl.data.lists.BUNDLES)
LIST_BUNDLES = ("imagenet100-lt", "places-lt")


class LabeledParams(_Section):
    """``data.labeled``: a small labeled evaluation set beside an unlabeled collection (``data.source: images``).

    It gives the probes' training, validation and test splits and the class names; the collection
    itself stays unlabeled and is never cut."""

    root: str = Field(description="the labeled set's folder: class sub-folders (layout classes), train/<class>/ "
                      "and test/<class>/ (layout train-test), or the folder list paths are relative to (layout lists)")
    layout: Literal["classes", "train-test", "lists"] = Field(
        "classes", description="classes: one folder of class sub-folders that ltcl splits (seeded by "
        "data.split_seed, stratified) into probe-train / val / test; train-test: separate train/ and test/ "
        "folders (val drawn from train); lists: list files of '<relative path> <label>' lines")
    lists: Optional[dict[str, str]] = Field(
        None, description="layout lists: {train, test[, val]} list files (val drawn from train when absent)")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of each class (layout classes) or of "
                                "each class's training images (train-test, lists without val) held out for val")
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="layout classes: share of each class held out "
                                 "for test")
    groups: Literal["none", "sample", "counts"] = Field(
        "none", description="where Many / Medium / Few come from: none (absent: the labeled set says nothing about "
        "the collection's tail), sample (the labeled set is a random sample of the collection, so its class "
        "counts follow the collection's), counts (counts_file gives each class's count in the collection)")
    counts_file: Optional[str] = Field(None, description="groups counts: a CSV of 'class,count' lines (class by "
                                       "name) with every class of the labeled set")

    @model_validator(mode="after")
    def _layout(self) -> "LabeledParams":
        if self.layout == "lists":
            missing = [r for r in ("train", "test") if not (self.lists or {}).get(r)]
            if missing:
                raise ValueError(f"data.labeled.layout: lists needs data.labeled.lists with {' and '.join(missing)}")
            unknown = sorted(set(self.lists) - {"train", "val", "test"})
            if unknown:
                raise ValueError(f"data.labeled.lists: unknown roles {unknown}; allowed: train, val, test")
        elif self.lists is not None:
            raise ValueError(f"data.labeled.lists is only read by layout: lists (layout is {self.layout!r})")
        if self.layout == "classes" and self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"data.labeled.val_fraction + test_fraction ({self.val_fraction} + "
                             f"{self.test_fraction}) must leave images for the probe's training split (< 1)")
        if (self.groups == "counts") != (self.counts_file is not None):
            raise ValueError("data.labeled.groups: counts needs data.labeled.counts_file (and counts_file is only "
                             "read with groups: counts)")
        return self


class DataParams(_Section):
    source: Literal["digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "folder", "npz", "list",
                    "images"] = Field("digits", description="images: an unlabeled collection (every image file "
                                      "under data.root, any depth, or the paths of data.images)")
    root: str = Field("data/raw", description="folder the source is read from (and downloaded into); source images: "
                      "the collection; source list: the folder the list paths are relative to")
    images: Optional[str] = Field(None, description="source images: a text file of image paths (one per line, "
                                  "relative to data.root); null = every image file under data.root")
    labeled: Optional[LabeledParams] = Field(None, description="source images: the optional labeled evaluation "
                                             "set (probes, class names, groups)")
    longtail: Literal["auto", "draw", "as-is"] = Field(
        "auto", description="draw: cut a long tail from a labeled source (imbalance_ratio, max_per_class; what "
        "is left out of pre-training is printed and recorded); as-is: every training image is pre-trained on "
        "(val held out); auto: draw for the benchmark sources, as-is for a user's own folder / npz")
    split: Literal["generated", "community"] = Field(
        "generated", description="generated: ltcl draws the splits; community: the published list files "
        "(SDCLR's CIFAR index lists split_index 1..5; source list: the lists of data.lists)")
    split_index: int = Field(1, ge=1, le=5, description="which of SDCLR's five CIFAR-LT splits (split: community)")
    lists: Optional[str | dict[str, Optional[str]]] = Field(
        None, description="source list: a shipped bundle (imagenet100-lt | places-lt) or a mapping "
        "{train, val, test, few_shot, balanced, probe_full} of list files of '<relative path> <label>' lines")
    download: bool = Field(False, description="download the source's files into data.root when missing (torchvision: "
                           "mnist, fashion-mnist, cifar10, cifar100)")
    image_size: Optional[int] = Field(None, ge=8, le=1024, description="resize every image to this side (px); null = "
                                      "the source's own size; source images and list: the stored size (required)")
    profile: Literal["exp", "pareto"] = Field(
        "exp", description="long-tail profile of the class counts: exp (Cui et al. 2019, as SDCLR's split code) or "
        "pareto (ImageNet-LT style, n_max down to pareto_min)")
    imbalance_ratio: float = Field(100.0, ge=1.0, description="n_max / n_min of the exp profile")
    val_per_class: int = Field(500, ge=0, description="validation images held out per class before anything else")
    max_per_class: Optional[int] = Field(None, ge=1, description="n_max, the head class's count; null = the smallest "
                                         "per-class remainder after val")
    pareto_min: int = Field(5, ge=1, description="smallest class count of the pareto profile")
    max_test_per_class: Optional[int] = Field(None, ge=1, description="cap on test images per class (a seeded draw, "
                                              "for quick runs); null = the whole test set")
    class_order: Literal["permuted", "given"] = Field(
        "permuted", description="which class gets which long-tail count: permuted (random by split_seed) or given "
        "(class 0 is the head)")
    subset: Literal["longtail", "balanced-subset"] = Field(
        "longtail", description="the pre-training split: longtail (D_i) or balanced-subset (SDCLR's D_b: "
        "class-balanced, the same total size)")
    split_seed: int = Field(0, ge=0, description="seed of every random choice of the splits (val, class order, "
                            "long tail, few-shot, MS, test)")
    few_shot_fraction: float = Field(0.01, gt=0.0, le=1.0, description="share of probe_full in the class-balanced "
                                     "few-shot probe split (SDCLR's 1%)")
    group_rule: Literal["thirds", "thresholds"] = Field(
        "thirds", description="Many / Medium / Few by training count: thirds of the classes (smallest third few) "
        "or thresholds (> 100 many, < 20 few)")
    on_bad_image: Literal["error", "skip"] = Field(
        "error", description="an image file that cannot be decoded: error (stop, nothing written) or skip (log it, "
        "leave it out)")

    @property
    def unlabeled(self) -> bool:
        """The training images carry no labels (``data.source: images``)."""
        return self.source in UNLABELED_SOURCES

    @property
    def draws_longtail(self) -> bool:
        """Whether make-lt-dataset cuts a long tail from the source (``longtail`` with ``auto`` resolved)."""
        if self.longtail == "auto":
            return self.source not in USER_SOURCES
        return self.longtail == "draw"

    @model_validator(mode="after")
    def _split(self) -> "DataParams":
        if self.unlabeled:
            if self.image_size is None:
                raise ValueError("data.source: images needs data.image_size (the stored resolution: the collection's "
                                 "images may differ in size; `ltcl init` picks one from the images)")
            if self.split != "generated" or self.subset != "longtail":
                raise ValueError("data.source: images is used as it is: data.split must be generated and "
                                 "data.subset longtail")
            if self.longtail == "draw":
                raise ValueError("data.longtail: draw needs labels; data.source: images has none (every image is "
                                 "pre-trained on)")
        else:
            if self.labeled is not None:
                raise ValueError(f"data.labeled is only read by data.source: images (source is {self.source!r}: "
                                 "its own labels give the evaluation splits)")
            if self.images is not None:
                raise ValueError(f"data.images is only read by data.source: images (source is {self.source!r})")
        if self.split == "community" and self.source not in ("cifar10", "cifar100", "list"):
            raise ValueError(f"data.split: community exists for cifar10, cifar100 (SDCLR's lists) and source list, "
                             f"not for data.source {self.source!r}")
        if self.source == "list":
            if self.lists is None:
                raise ValueError("data.source: list needs data.lists (a shipped bundle: "
                                 f"{', '.join(LIST_BUNDLES)}; or a mapping of list files)")
            if self.split != "community":
                raise ValueError("data.source: list takes its splits from the list files: set data.split: community")
            if self.max_test_per_class is not None:
                raise ValueError("data.max_test_per_class does not apply to data.source: list (the test list is the "
                                 "protocol): set it to null, or give a shorter test list")
            if isinstance(self.lists, str) and self.lists not in LIST_BUNDLES:
                raise ValueError(f"data.lists: unknown bundle {self.lists!r}; shipped: {', '.join(LIST_BUNDLES)} "
                                 "(or give a mapping of list files)")
            if isinstance(self.lists, dict):
                roles = ("train", "val", "test", "few_shot", "balanced", "probe_full")
                unknown = sorted(set(self.lists) - set(roles))
                if unknown:
                    raise ValueError(f"data.lists: unknown roles {unknown}; allowed: {', '.join(roles)}")
                missing = [r for r in ("train", "test") if not self.lists.get(r)]
                if missing:
                    raise ValueError(f"data.lists needs {' and '.join(missing)}")
        elif self.lists is not None:
            raise ValueError(f"data.lists is only read by data.source: list (source is {self.source!r})")
        return self


# --------------------------------------------------------------------------- model / runtime
class ModelParams(_Section):
    backbone: Literal["resnet8", "resnet10", "resnet20", "resnet32", "resnet18", "resnet50"] = Field(
        "resnet18", description="the encoder's ResNet (ltcl.models.resnet): resnet10 / 18 / 50 torchvision's "
        "(resnet10: SDCLR's res10), resnet8 / 20 / 32 the small CIFAR ResNets of He et al. 2016")
    width: float = Field(1.0, gt=0.0, le=8.0, description="channel multiplier of every stage (1.0 = the published "
                         "widths)")
    stem: Literal["auto", "cifar", "imagenet"] = Field(
        "auto", description="cifar: 3x3 stride-1 conv, no max-pool; imagenet: 7x7 stride-2 conv and max-pool; "
        "auto: cifar for images of side <= 64")
    proj_hidden: int = Field(512, ge=1, description="hidden width of the projection head")
    proj_dim: int = Field(128, ge=1, description="output dimension of the projection head (z, what the contrastive "
                          "losses consume)")
    proj_layers: Literal[2, 3] = Field(
        2, description="Linear layers of the projection head (ltcl.models.heads): 2 = Linear-BN-ReLU-Linear-BN, "
        "the head of SimCLR's rows in SDCLR's, COLT's and TS's released code (models/utils.py proj_head); 3 = "
        "Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN, SDCLR's dual-BN head (models/resnet_prune_multibn.py, "
        "--prune_dual_bn), which its SDCLR runs use")


class RuntimeParams(_Section):
    device: str = Field("auto", description="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    amp: Literal["auto", True, False, "fp16"] = Field(
        "auto", description="auto: bf16 where the device computes it natively, else fp32; true: bf16; "
        "fp16: fp16 + loss scaler (CUDA); false: fp32")
    channels_last: bool = Field(True, description="memory format of the trained models (and a distillation's "
                                "teacher): channels_last, else contiguous")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch's default")
    deterministic: bool = Field(True, description="torch deterministic algorithms (warn only), no cuDNN benchmark; "
                                "false lets cuDNN autotune on CUDA")
    compile: bool = Field(False, description="torch.compile the trained model (pretrain, warm-up, distill)")
    compile_backend: str = Field("inductor", description="torch.compile backend, e.g. inductor, aot_eager, cudagraphs")
    nproc: int = Field(1, ge=1, description="processes of a training stage: > 1 reruns it under torchrun "
                       "(DDP; on CUDA each rank takes the GPU of its LOCAL_RANK)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda", "mps") and not v.startswith("cuda:"):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
        return v


class AugmentParams(_Section):
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="area range [lo, hi] of RandomResizedCrop "
                                            "(aspect ratio 3/4 to 4/3)")
    flip: bool = Field(True, description="random horizontal flip (p = 0.5)")
    jitter: tuple[float, float, float, float] = Field(
        (0.4, 0.4, 0.4, 0.1), description="colour jitter strengths (brightness, contrast, saturation, hue); data "
        "without 3 channels uses brightness and contrast only")
    jitter_p: float = Field(0.8, ge=0.0, le=1.0, description="probability of the colour jitter")
    gray_p: float = Field(0.2, ge=0.0, le=1.0, description="probability of random grayscale (3-channel data only)")

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 < v[0] <= v[1] <= 1.0):
            raise ValueError("must be [lo, hi] with 0 < lo <= hi <= 1")
        return v


class OptimParams(_Section):
    """Shared shape of the optimiser settings of every training stage."""

    epochs: int = Field(200, ge=1, description="training epochs (the learning-rate schedule spans them)")
    batch_size: int = Field(512, ge=2, description="images per SGD step, across all runtime.nproc ranks (the last "
                            "incomplete batch of an epoch is dropped)")
    lr: float = Field(0.5, gt=0.0, description="peak SGD learning rate: linear warm-up, then cosine decay to 0 at "
                      "epochs")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0.0, description="SGD weight decay")
    warmup_epochs: int = Field(10, ge=0, description="epochs of linear learning-rate warm-up before the cosine decay")
    lr_schedule: Literal["cosine", "two-stage"] = Field(
        "cosine", description="after the warm-up: cosine (one cosine decay from lr to 0 at epochs) or two-stage "
        "(GH's lr_scheduler_warm, Geometric-Harmonization utils.py:432-443: a cosine from lr to lr_stage1_min x lr "
        "until lr_split x epochs, then a cosine from lr_stage2_max x lr to 0)")
    lr_split: float = Field(0.5, gt=0.0, lt=1.0, description="two-stage: where the second cosine starts, as a "
                            "fraction of epochs (GH: --warm_up 500 of 1000 epochs)")
    lr_stage1_min: float = Field(0.6, ge=0.0, le=1.0, description="two-stage: the first cosine's end, a fraction "
                                 "of lr (GH: --lr_min_stage1 0.3 of --lr 0.5)")
    lr_stage2_max: float = Field(0.6, ge=0.0, le=1.0, description="two-stage: the second cosine's start, a "
                                 "fraction of lr (GH: --lr_max_stage2 0.3 of --lr 0.5)")
    seed: int = Field(0, ge=0, description="seed of the stage's RNGs (torch, numpy, python), each epoch's batch "
                      "order and the method's own draws")
    checkpoint_every: int = Field(10, ge=1, description="write the resume checkpoint (data/checkpoints/<stage>.pt) "
                                  "every this many epochs and at the end")


# --------------------------------------------------------------------------- pretrain
PRETRAIN_METHODS = tuple(PRETRAIN)  # the methods registry (ltcl.registry) is the one list
SUPERVISED_METHODS = SUPERVISED  # read the long-tailed split's labels


class _Subsectioned(_Section):
    """A section with one subsection per method (or OOD strategy), named as the value of the key
    ``CHOICE`` names; keys several methods read sit beside the subsections.  Old flat keys
    (``ltcl.moved_keys``) are refused with the key that replaced them."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, serialize_by_alias=True)
    SECTION: ClassVar[str]
    CHOICE: ClassVar[str]

    @classmethod
    def subsections(cls) -> dict[str, str]:
        """params.yaml name of each subsection -> its field name (``gloco-proco`` -> ``gloco_proco``)."""
        return {f.alias or name: name for name, f in cls.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, Subsection)}

    @property
    def own(self) -> Subsection:
        """The configured method's (strategy's) own subsection: what the method reads its keys from."""
        return getattr(self, self.subsections()[getattr(self, self.CHOICE)])

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        lines = moved_messages(cls.SECTION, data)
        if lines:
            raise ValueError("\n  ".join(lines))
        return data


def _with_subsections(base: type[_Subsectioned], table: dict, name: str) -> type[_Subsectioned]:
    """``base`` (a section's shared keys) plus one subsection per entry of its registry ``table``
    (``ltcl.registry``): field ``<name>`` (``gloco-proco`` -> ``gloco_proco``, aliased) of the entry's
    params model, described by the entry's ``about``.  A method's keys are stated once, in its
    params model; its entry puts them in params.yaml."""
    fields = {n.replace("-", "_"): (e.params, Field(default_factory=e.params, description=e.about,
                                                     alias=n if "-" in n else None))
              for n, e in table.items()}
    return create_model(name, __base__=base, __module__=__name__, __doc__=base.__doc__, **fields)


class GHParams(_Section):
    """``pretrain.gh``: Geometric Harmonization (Zhou et al. 2023, MediaBrain-SJTU/Geometric-Harmonization@9f7057c)
    on top of the method's contrastive loss (:mod:`ltcl.methods.gh`, :mod:`ltcl.losses.gh`).  Not a method
    of its own: it composes with the methods whose registry entry says ``gh=True``."""

    enabled: bool = Field(False, description="add L_GH to the method's loss (-S pretrain.gh=true is short for "
                          "pretrain.gh.enabled=true)")
    warmup_fraction: float = Field(0.5, ge=0.0, lt=1.0, description="W / pretrain.epochs: the epochs of the plain "
                                   "contrastive loss before L_GH starts (--warm_up 500 of 1000, README.md)")
    ramp_epochs: int = Field(10, ge=1, description="epochs over which L_GH's weight grows linearly to 1 after W "
                             "(--GH_warm_up, train_cifar.py:36)")
    target_dim: int = Field(100, ge=2, description="K, the simplex-ETF target directions (--target_dim; at most "
                            "model.proj_dim)")
    beta: float = Field(0.999, ge=0.0, le=1.0, description="momentum of the per-sample target-logit average "
                        "after W (--beta, train_cifar.py:39)")
    beta_warmup: float = Field(0.9, ge=0.0, le=1.0, description="its momentum until W (train_cifar.py:125)")
    prior_every: int = Field(20, ge=1, description="epochs between refreshes of the class prior pi "
                             "(train_cifar.py:285)")
    sinkhorn_iters: int = Field(300, ge=1, description="Sinkhorn-Knopp iterations (--sinkhorn_iter)")
    sinkhorn_eps: float = Field(0.05, gt=0.0, description="Sinkhorn's entropic regularisation (train_cifar.py:107)")
    gamma: float = Field(0.1, gt=0.0, description="temperature of L_GH's log-softmax (utils.py:21)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {"enabled": v} if isinstance(v, bool) else v


class _PretrainShared(OptimParams, _Subsectioned):
    """``pretrain``: the keys several methods read; each method's own keys are its subsection
    ``pretrain.<method>`` (:data:`PretrainParams`)."""

    SECTION: ClassVar[str] = "pretrain"
    CHOICE: ClassVar[str] = "method"
    method: str = Field("psd", description="the pre-training method: a name of ltcl.registry.PRETRAIN")
    temperature: float = Field(0.2, gt=0.0, description="temperature of the contrastive losses (NT-Xent, PSD, L_DD, "
                               "GloCo); TS replaces it by its schedule (pretrain.ts)")
    # SDCLR (Jiang et al. 2021)
    pruned_branch: bool = Field(False, description="add SDCLR's pruned branch to the method's loss")
    prune_ratio: float = Field(0.9, gt=0.0, lt=1.0, description="fraction of the backbone's prunable weights (the "
                               "smallest |w|, one global threshold) zeroed in the pruned branch, re-pruned each epoch")
    # KDUP (paper 003, Sec. 3.1.2): read by every method whose training set holds OOD images
    alpha: float = Field(0.3, ge=0.0, description="weight of L_DD added to the method's loss where a batch holds ID "
                         "and OOD images (Eq. 10: L_CPT = L_PSD + alpha L_DD); 0 = no L_DD")
    domain_loss: Literal["eq9", "colt"] = Field(
        "eq9", description="L_DD as paper 003 writes it (Eq. 9) or as COLT's released code computes it")
    gh: GHParams = Field(default_factory=GHParams, description="Geometric Harmonization added to the method's loss "
                         "(Zhou et al. 2023)")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _known(v, PRETRAIN_METHODS, "method")

    @property
    def gh_start_epoch(self) -> int:
        """W, GH's warm-up: the first epoch (0-indexed) whose step may add L_GH."""
        return int(self.gh.warmup_fraction * self.epochs)

    @model_validator(mode="after")
    def _compositions(self) -> "_PretrainShared":
        if self.pruned_branch and self.method in SUPERVISED_METHODS:
            raise ValueError(f"pretrain.pruned_branch: true is not supported with pretrain.method={self.method}")
        if self.gh.enabled and not PRETRAIN[self.method].gh:
            raise ValueError(f"pretrain.gh: GH composes with {', '.join(n for n, e in PRETRAIN.items() if e.gh)} "
                             f"(its released code's methods), not with pretrain.method={self.method}")
        return self


PretrainParams = _with_subsections(_PretrainShared, PRETRAIN, "PretrainParams")


# --------------------------------------------------------------------------- OOD sampling
class _OODShared(_Subsectioned):
    """Paper 003 Sec. 3.1.1 (KDUP) and its baselines.  The clustering, tailness and budget keys are
    read by kdup and augment (KDUP's selection with augmented ID copies, Table 12), N_c and tau of
    Eq. 7 by colt too: they stay at the top; only COLT's tailness has keys of its own."""

    SECTION: ClassVar[str] = "ood"
    CHOICE: ClassVar[str] = "strategy"
    strategy: str = Field("kdup", description="the sampling strategy: a name of ltcl.registry.STRATEGIES")
    # pool
    source: Literal["bundled", "folder", "npy", "source", "list"] = Field(
        "bundled", description="the pool: bundled (crops of the photos in the scikit-image / scikit-learn wheels), "
        "folder (crops of the photos under ood.path), npy (an existing array), source (the train images of "
        "ood.pool_source), list (the images of a list file)")
    path: Optional[str] = Field(None, description="folder or .npy file for source folder/npy; for source list a "
                                "list file of '<relative path> [label]' lines or a shipped list (imagenet-r)")
    root: Optional[str] = Field(None, description="source list: the folder the list's paths are relative to")
    pool_source: Optional[str] = Field(None, description="make-lt-dataset source name for source=source")
    pool_size: int = Field(300_000, ge=1, description="images in the pool: crops of the bundled photos or of "
                           "the photos under ood.path (source folder), or images drawn from a source / list")
    pool_seed: int = Field(0, ge=0, description="seed of the pool's random crops and draws")
    crop_scale: tuple[float, float] = Field(
        (0.1, 0.6), description="bundled and folder pools: side of each square crop as a fraction of its "
        "photo's short side, uniform in [lo, hi]")
    # schedule
    warmup_epochs: int = Field(100, ge=0, description="epochs of SimCLR (SDCLR with the pruned branch) on the ID "
                               "data before the first sampling update")
    interval: int = Field(25, ge=1, description="T: re-sample every T epochs (Eq. 5)")
    # clustering + tailness + budget
    budget: int = Field(10_000, ge=0, description="N_b (Eq. 7)")
    clusters: int = Field(10, ge=1, description="N_c")
    cluster_tol: float = Field(0.001, ge=0.0, le=1.0, description="the KL refinement stops at the first iteration "
                               "that changes fewer than this fraction of the assignments")
    cluster_max_iter: int = Field(200, ge=1, description="most iterations of the KL refinement")
    cluster_lr: float = Field(0.001, gt=0.0, description="Adam step of the KL refinement (Eq. 3)")
    cluster_patience: int = Field(3, ge=0, description="halve the KL refinement's step size after this many "
                                  "iterations without fewer changed assignments; 0 = constant step")
    refine: bool = Field(True, description="KL refinement of the k-means centroids (Eq. 1-3)")
    knn_k: int = Field(10, ge=1, description="K of the tailness score (Eq. 4)")
    knn_exact_max: int = Field(100_000, ge=2, description="exact kNN for Eq. 4 up to this many ID images, "
                               "faiss IVF above")
    knn_nprobe: int = Field(32, ge=1, description="IVF lists searched per query above knn_exact_max")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="rho (Eq. 5); 0 = no momentum")
    budget_temperature: float = Field(1.0, gt=0.0, description="tau of Eq. 7")
    embedding: Literal["backbone", "projection"] = Field(
        "backbone", description="space of clustering, tailness and pool selection (see sampling/refresh.py)")
    embed_batch_size: int = Field(1024, ge=1, description="batch size of embedding the ID images and the pool")
    seed: int = Field(0, ge=0, description="seed of each update's random draws (k-means init, random pick, COLT's "
                      "batch shuffle, augment's copies)")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return _known(v, STRATEGIES, "ood.strategy")

    @field_validator("pool_source")
    @classmethod
    def _pool_source(cls, v: Optional[str]) -> Optional[str]:
        return v if v is None else _known(v, DATA_SOURCES, "data source")

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 < v[0] <= v[1] <= 1.0):
            raise ValueError("must be [lo, hi] with 0 < lo <= hi <= 1 (the crop side as a fraction of the "
                             "photo's short side)")
        return v

    @model_validator(mode="after")
    def _budget(self) -> "_OODShared":
        if self.strategy != "none" and self.budget == 0:
            raise ValueError(f"ood.budget is 0 but ood.strategy is {self.strategy!r}; "
                             "use strategy: none to train without OOD data")
        # bundled / folder / source pools hold exactly pool_size images (an npy pool: its rows,
        # checked when the pool is opened); kdup, colt and random draw the budget from the pool
        if (STRATEGIES[self.strategy].reads_pool and self.source != "npy"
                and self.pool_size < self.budget):
            raise ValueError(f"ood.pool_size ({self.pool_size}) is smaller than ood.budget ({self.budget}): "
                             f"strategy {self.strategy!r} selects ood.budget distinct pool images; "
                             "raise ood.pool_size or lower ood.budget")
        if self.source in ("folder", "npy", "list") and not self.path:
            raise ValueError(f"ood.source={self.source!r} needs ood.path")
        if self.source == "list" and not self.root:
            raise ValueError("ood.source='list' needs ood.root (the folder the list's paths are relative to)")
        if self.source == "source" and not self.pool_source:
            raise ValueError("ood.source='source' needs ood.pool_source (a make-lt-dataset source name)")
        return self


OODParams = _with_subsections(_OODShared, STRATEGIES, "OODParams")  # ood.<strategy>: ltcl.registry.STRATEGIES


# --------------------------------------------------------------------------- distill
class _DistillShared(OptimParams, _Subsectioned):
    """Paper 003 Sec. 3.2: a new encoder g trained from the frozen f (``method``)."""

    SECTION: ClassVar[str] = "distill"
    CHOICE: ClassVar[str] = "method"
    epochs: int = Field(500, ge=1, description="training epochs (the learning-rate schedule spans them)")
    lr: float = Field(0.05, gt=0.0, description="peak SGD learning rate: linear warm-up, then cosine decay to 0 at "
                      "epochs")
    enabled: bool = Field(True, description="train g from f; false: g is f itself (Table 5 \"w/o KD\")")
    method: str = Field("kdup", description="the distillation method: a name of ltcl.registry.DISTILL "
                        "(kdup: KDUP's guided distillation; gml: GML's student, after pretrain.method gml)")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _known(v, DISTILL, "distill.method")


DistillParams = _with_subsections(_DistillShared, DISTILL, "DistillParams")


# --------------------------------------------------------------------------- cluster
class ClusterParams(_Section):
    tsne_samples: int = Field(1000, ge=10, description="the t-SNE map shows at most this many images (a "
                              "class-stratified sample where labels exist)")
    l2_normalize: bool = Field(False, description="L2-normalise the features before the k-means and the cluster "
                               "metrics (the paper does not say; false = raw)")
    seed: int = Field(0, ge=0, description="seed of the k-means, the training-image sample and the t-SNE")
    clusters: int = Field(10, ge=2, description="k of the k-means of the training split's features whose cluster "
                          "sizes show the tail the encoder sees (needs no labels)")
    kmeans_samples: int = Field(20_000, ge=10, description="that k-means clusters at most this many training "
                                "images (a seeded uniform sample), so the stage stays bounded on 100,000+ images")

    @model_validator(mode="after")
    def _k(self) -> "ClusterParams":
        if self.clusters > self.kmeans_samples:
            raise ValueError(f"cluster.clusters ({self.clusters}) must be <= cluster.kmeans_samples "
                             f"({self.kmeans_samples})")
        return self


# --------------------------------------------------------------------------- probe
class ProbeParams(_Section):
    protocols: list[Literal["full", "few_shot", "ms", "lt", "one_percent"]] = Field(
        ["full", "few_shot"], description="linear probes, each trained on its split: full (probe_full), few_shot "
        "(SDCLR's), ms (TASE's MS LP), lt (the long-tailed split), one_percent (TASE's 1%S LP)")
    epochs: int = Field(30, ge=1, description="epochs of the full protocol's probe")
    milestones: list[int] = Field([10, 20], description="epochs at which the full probe's learning rate is "
                                  "multiplied by 0.1 (MultiStepLR)")
    few_shot_epochs: int = Field(100, ge=1, description="epochs of every other protocol's probe")
    few_shot_milestones: list[int] = Field([40, 60], description="learning-rate milestones (x 0.1) of every other "
                                           "protocol's probe")
    lr: float = Field(30.0, gt=0.0, description="SGD learning rate of the linear probe")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum of the linear probe")
    weight_decay: float = Field(0.0, ge=0.0, description="SGD weight decay of the linear probe")
    batch_size: int = Field(128, ge=1, description="batch size of the linear probe")
    feature_norm: Literal["none", "l2", "standardize"] = Field(
        "none", description="before the probe: none, l2 (each row to unit norm) or standardize (per dimension, "
        "with the probe's training split's mean and std)")
    knn_k: list[int] = Field([1, 10], description="k of each cosine kNN classifier (from probe_full, on test)")
    seed: int = Field(0, ge=0, description="seed of the probe's initialisation and batch order")

    @field_validator("knn_k")
    @classmethod
    def _knn(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError("every k must be >= 1")
        return v


class ReportParams(_Section):
    title: str = Field("ltcl report", description="title of the HTML report")


# --------------------------------------------------------------------------- external encoders
EXTERNAL_FORMATS = ("ltcl-export", "torchvision", "sdclr", "colt")  # = ltcl.models.external.FORMATS


class ExternalEncoderParams(_Section):
    """An encoder trained outside this pipeline, evaluated by the probe and cluster stages like f and g."""

    path: str = Field(description="checkpoint file (ltcl export .safetensors, torchvision state_dict, "
                      "SDCLR / COLT checkpoint)")
    format: Literal["ltcl-export", "torchvision", "sdclr", "colt"] = Field(
        description="ltcl-export (ltcl export .safetensors), torchvision (a ResNet state dict), sdclr / colt "
        "(their pre-training checkpoints)")
    backbone: Literal["resnet8", "resnet10", "resnet20", "resnet32", "resnet18", "resnet50"] = Field(
        "resnet18", description="ltcl's backbone the checkpoint is loaded into (strictly: another architecture is "
        "refused)")
    stem: Literal["auto", "cifar", "imagenet"] = Field("auto", description="that backbone's stem (as model.stem)")
    width: float = Field(1.0, gt=0.0, le=8.0, description="that backbone's channel multiplier (as model.width)")
    mean: Optional[list[float]] = Field(None, description="input normalisation (0..1 scale); null: the "
                                        "export's own, or the checkpoint's (SDCLR / COLT: ImageNet's), else the data's")
    std: Optional[list[float]] = Field(None, description="input normalisation std (0..1 scale), given with mean")

    @model_validator(mode="after")
    def _norm(self) -> "ExternalEncoderParams":
        if (self.mean is None) != (self.std is None):
            raise ValueError("external encoder: give both mean and std, or neither")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ValueError("external encoder: std values must be > 0")
        return self


SECTIONS: dict[str, type[_Section]] = {
    "data": DataParams,
    "model": ModelParams,
    "runtime": RuntimeParams,
    "augment": AugmentParams,
    "ood": OODParams,
    "pretrain": PretrainParams,
    "distill": DistillParams,
    "probe": ProbeParams,
    "cluster": ClusterParams,
    "report": ReportParams,
}


class Params(BaseModel):
    """The whole params.yaml (every section optional; defaults as above)."""

    model_config = ConfigDict(extra="forbid")
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    runtime: RuntimeParams = RuntimeParams()
    augment: AugmentParams = AugmentParams()
    ood: OODParams = OODParams()
    pretrain: PretrainParams = PretrainParams()
    distill: DistillParams = DistillParams()
    probe: ProbeParams = ProbeParams()
    cluster: ClusterParams = ClusterParams()
    report: ReportParams = ReportParams()
    external: dict[str, ExternalEncoderParams] = Field(
        default_factory=dict, description="name -> encoder from outside ltcl, evaluated as ext-<name>")

    @field_validator("external")
    @classmethod
    def _external_names(cls, v: dict) -> dict:
        import re

        bad = [k for k in v if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,40}", k)]
        if bad:
            raise ValueError(f"external encoder names must be lower-case letters, digits, '-' or '_': {bad}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "Params":
        if self.data.unlabeled:
            if self.pretrain.method in SUPERVISED_METHODS:
                raise ValueError(f"pretrain.method={self.pretrain.method} is supervised: it trains on class labels, "
                                 "and data.source: images has none; use a self-supervised method (psd, simclr, "
                                 "sdclr, ts, tase)")
            if self.distill.enabled and self.distill.method == "gml":
                raise ValueError("distill.method=gml trains a classifier on the training split's labels, and "
                                 "data.source: images has none; use distill.method: kdup")
            if self.pretrain.method == "tase" and self.pretrain.tase.clusters == 0:
                raise ValueError("pretrain.tase.clusters: 0 means 'the number of classes', which an unlabeled "
                                 "collection does not have; set pretrain.tase.clusters to the number of "
                                 "pseudo-classes TASE should cluster into (e.g. 10)")
        if self.pretrain.method in SUPERVISED_METHODS and self.ood.strategy != "none":
            raise ValueError(f"pretrain.method={self.pretrain.method} is supervised and trains on the labelled "
                             f"long-tailed split only; set ood.strategy: none (it is {self.ood.strategy!r})")
        if (self.pretrain.method == "psd" and self.ood.strategy != "none"
                and self.pretrain.psd.k_pos >= self.ood.budget):
            raise ValueError(f"pretrain.psd.k_pos ({self.pretrain.psd.k_pos}) must be smaller than ood.budget "
                             f"({self.ood.budget}): PSD takes each image's k_pos nearest neighbours within its "
                             "own domain, and the OOD domain holds ood.budget images")
        if self.pretrain.method == "gml" and self.distill.enabled and self.distill.method == "kdup":
            raise ValueError("pretrain.method=gml trains GML's teacher, whose student is distill.method: gml; "
                             "distill.method is 'kdup'")
        # a retrain strategy (MAK) trains its sampling model for warmup_epochs and pretrain's anew: any length
        if (self.ood.strategy != "none" and not STRATEGIES[self.ood.strategy].retrain
                and self.ood.warmup_epochs >= self.pretrain.epochs):
            raise ValueError(f"ood.warmup_epochs ({self.ood.warmup_epochs}) must be smaller than "
                             f"pretrain.epochs ({self.pretrain.epochs})")
        return self


# --------------------------------------------------------------------------- loading
class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ParamsError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                f"(first defined at line {seen[key] + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        with path.open() as fh:
            raw = yaml.load(fh, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return raw


def _allowed_at(loc: tuple) -> list[str]:
    """The keys allowed beside the last key of ``loc`` (a section's, a subsection's, an external encoder's)."""
    from typing import get_args

    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = {f.alias or name: f for name, f in model.model_fields.items()}.get(part)
        if field is not None:  # else a name of a mapping (external.<name>): the model stays
            sub = [a for a in (field.annotation, *get_args(field.annotation))
                   if isinstance(a, type) and issubclass(a, BaseModel)]
            model = sub[0] if sub else model
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _format_error(exc: ValidationError, path: Path) -> str:
    import difflib

    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if not key or (err["type"] == "value_error" and len(err["loc"]) == 1 and key in SECTIONS):
            # a check across keys (of one section or several): the message names the keys itself
            lines.append(err["msg"].removeprefix("Value error, "))
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_at(err["loc"])
            close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"{key}: unknown key{hint}; allowed here: {', '.join(allowed)}")
        else:
            got = err.get("input")
            msg = err["msg"].removeprefix("Value error, ")
            # a check across a subsection's keys names them itself: the whole mapping adds nothing
            lines.append(f"{key}: {msg}" if isinstance(got, dict) else f"{key}: {msg} (got {got!r})")
    return f"{path}: invalid parameters\n  " + "\n  ".join(lines)


def validate(raw: dict, path: str | Path = PARAMS_FILE) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_error(exc, Path(path))) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file (every section, so a typo anywhere is caught)."""
    return validate(read_yaml(path), path)


# --------------------------------------------------------------------------- each stage's view
# The params each training stage reads besides ``runtime`` (which every torch stage reads), as its
# dvc.yaml ``params`` list names them (tests/test_params_views.py checks that the two agree): single
# keys of the sections that hold per-method subsections, and ``<section>.${<section>.<choice>}`` for
# the configured method's (strategy's) own subsection.  Its model file and its resume fingerprint
# hold this view (:func:`stage_view`), so neither holds a key the stage did not read.
# the clustering of Sec. 3.1.1 (ltcl.sampling.clustering.cluster_embeddings), which distill reuses
_CLUSTERING = ("ood.cluster_tol", "ood.cluster_max_iter", "ood.cluster_lr", "ood.cluster_patience", "ood.refine")
_SAMPLING = ("ood.strategy", "ood.budget", "ood.clusters", *_CLUSTERING, "ood.knn_k", "ood.knn_exact_max",
             "ood.knn_nprobe", "ood.momentum", "ood.budget_temperature", "ood.embedding", "ood.embed_batch_size",
             "ood.seed", "ood.${ood.strategy}")
_SCHEDULE = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup_epochs", "lr_schedule", "lr_split",
             "lr_stage1_min", "lr_stage2_max", "seed", "checkpoint_every")
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    # the warm-up is SimCLR (SDCLR with the pruned branch) on ID data: no method's own key, no L_DD
    "ood-sampling": ("model", "augment", *_SAMPLING, "ood.warmup_epochs",
                     "pretrain.method", "pretrain.pruned_branch", "pretrain.prune_ratio", "pretrain.temperature",
                     *(f"pretrain.{k}" for k in _SCHEDULE)),
    # the pool's keys are ood-pool's (pool.npy is a dep); the warm-up's length comes with warmup.pt
    "pretrain": ("model", "augment", "data.group_rule", *_SAMPLING, "ood.interval",
                 "pretrain.method", "pretrain.temperature", "pretrain.pruned_branch", "pretrain.prune_ratio",
                 "pretrain.alpha", "pretrain.domain_loss", "pretrain.gh", *(f"pretrain.{k}" for k in _SCHEDULE),
                 "pretrain.${pretrain.method}"),
    # KDUP's distillation clusters f's embeddings with the sampling's clustering (paper 003 Sec. 3.2)
    "distill": ("model", "augment", "data.group_rule", *_CLUSTERING, "distill.enabled", "distill.method",
                *(f"distill.{k}" for k in _SCHEDULE), "distill.${distill.method}"),
}
# ood-pool's keys: the pool is built from these alone
POOL_PARAMS = ("ood.source", "ood.path", "ood.root", "ood.pool_source", "ood.pool_size", "ood.pool_seed",
               "ood.crop_scale")
# the report prints the params every stage of the run read (its Parameters section), so it depends on
# exactly those: another method's key or a comment in params.yaml leaves it up to date
STAGE_PARAMS["report"] = tuple(dict.fromkeys((
    "data", *POOL_PARAMS, *STAGE_PARAMS["ood-sampling"], *STAGE_PARAMS["pretrain"], *STAGE_PARAMS["distill"],
    "probe", "cluster", "report", "external")))
_CHOICE = re.compile(r"\$\{([\w.-]+)\}")


def _at(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def section_view(params: Params, section: str) -> dict:
    """Section ``section`` as params.yaml writes it, without the subsections of the methods (or
    OOD strategies) that are not configured."""
    dump = params.model_dump(mode="json")[section]
    model = getattr(params, section)
    if isinstance(model, _Subsectioned):
        chosen = getattr(model, model.CHOICE)
        dump = {k: v for k, v in dump.items() if k == chosen or k not in model.subsections()}
    return dump


def stage_view(params: Params, entries: tuple[str, ...] | list[str]) -> dict:
    """The params named by ``entries`` (whole sections, dotted keys, ``pretrain.${pretrain.method}``;
    :data:`STAGE_PARAMS`), nested as in params.yaml; a whole section keeps only the configured
    method's subsection (:func:`section_view`)."""
    dump = params.model_dump(mode="json")
    out: dict = {}
    for entry in entries:
        key = _CHOICE.sub(lambda m: str(_at(dump, m.group(1))), entry)
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = section_view(params, leaf) if not parents else _at(dump, key)
    return out

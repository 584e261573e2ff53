"""One pydantic schema for params.yaml.

Each DVC stage reads only its own sections (``load_params("data", "pretrain")``), so a
change to the probe's parameters never invalidates the pre-training stage.  Validation
happens before any work: an unknown key, a wrong type or an out-of-range value stops the
stage with one message that names the key and what is allowed, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ltcl.errors import UserError
from ltcl.registry import PRETRAIN, SUPERVISED

PARAMS_FILE = "params.yaml"


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
    root: str = "data/raw"
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
    download: bool = False
    image_size: Optional[int] = Field(None, ge=8, le=1024)
    profile: Literal["exp", "pareto"] = "exp"
    imbalance_ratio: float = Field(100.0, ge=1.0)
    val_per_class: int = Field(500, ge=0)
    max_per_class: Optional[int] = Field(None, ge=1)
    pareto_min: int = Field(5, ge=1)
    max_test_per_class: Optional[int] = Field(None, ge=1)
    class_order: Literal["permuted", "given"] = "permuted"
    subset: Literal["longtail", "balanced-subset"] = "longtail"
    split_seed: int = Field(0, ge=0)
    few_shot_fraction: float = Field(0.01, gt=0.0, le=1.0)
    group_rule: Literal["thirds", "thresholds"] = "thirds"
    on_bad_image: Literal["error", "skip"] = "error"

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
    backbone: Literal["resnet8", "resnet10", "resnet20", "resnet32", "resnet18", "resnet50"] = "resnet18"
    width: float = Field(1.0, gt=0.0, le=8.0)
    stem: Literal["auto", "cifar", "imagenet"] = "auto"
    proj_hidden: int = Field(512, ge=1)
    proj_dim: int = Field(128, ge=1)


class RuntimeParams(_Section):
    device: str = "auto"
    amp: Literal["auto", True, False, "fp16"] = Field(
        "auto", description="auto: bf16 where the device computes it natively, else fp32; true: bf16; "
        "fp16: fp16 + loss scaler (CUDA); false: fp32")
    channels_last: bool = True
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 = torch's default")
    deterministic: bool = True
    compile: bool = Field(False, description="torch.compile the trained model (pretrain, warm-up, distill)")
    compile_backend: str = Field("inductor", description="torch.compile backend, e.g. inductor, aot_eager, cudagraphs")
    nproc: int = Field(1, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda", "mps") and not v.startswith("cuda:"):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
        return v


class AugmentParams(_Section):
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    gray_p: float = Field(0.2, ge=0.0, le=1.0)

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 < v[0] <= v[1] <= 1.0):
            raise ValueError("must be [lo, hi] with 0 < lo <= hi <= 1")
        return v


class OptimParams(_Section):
    """Shared shape of the optimiser settings of every training stage."""

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(512, ge=2)
    lr: float = Field(0.5, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: int = Field(10, ge=0)
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(10, ge=1)


# --------------------------------------------------------------------------- pretrain
PRETRAIN_METHODS = tuple(PRETRAIN)  # the methods registry (ltcl.registry) is the one list
SUPERVISED_METHODS = SUPERVISED  # read the long-tailed split's labels


class PretrainParams(OptimParams):
    method: str = "psd"
    temperature: float = Field(0.2, gt=0.0)
    # SDCLR (Jiang et al. 2021)
    sdclr: bool = Field(False, description="add SDCLR's pruned branch to the method's loss")
    prune_ratio: float = Field(0.9, gt=0.0, lt=1.0)
    # KDUP (paper 003, Sec. 3.1.2)
    alpha: float = Field(0.3, ge=0.0)
    domain_loss: Literal["eq9", "colt"] = Field(
        "eq9", description="L_DD as paper 003 writes it (Eq. 9) or as COLT's released code computes it")
    k_pos: int = Field(3, ge=0)
    # TS (Kukleva et al. 2023) and TASE (paper 000)
    tau_min: float = Field(0.1, gt=0.0)
    tau_max: float = Field(1.0, gt=0.0)
    ts_period: float = Field(200.0, gt=0.0, description="T: epochs of one full cosine oscillation")
    tase_warmup: int = Field(50, ge=0, description="B: SimCLR epochs before pseudo-labels")
    tase_refresh: int = Field(10, ge=1, description="F: epochs between pseudo-label refreshes")
    tase_full: int = Field(500, ge=0, description="S: epoch from which the temperatures are fully applied")
    tase_clusters: int = Field(0, ge=0, description="K of k-means; 0 = number of classes")
    tase_mapping: Literal["linear", "log"] = "linear"
    # GloCo / ProCo (paper 001) - supervised
    gloco_k: int = Field(3, ge=1, description="k global positives per anchor (Sec. 3.1)")
    gloco_gamma: float = Field(0.1, gt=0.0, description="gamma of Eq. 13: the tail classes' temperature")
    proco_alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of L_GloCo in L_final (Sec. 3.3)")
    proco_coreset: float = Field(0.1, gt=0.0, le=1.0, description="coreset share of each class (k-center greedy)")
    # GML teacher (paper 002) - supervised
    gml_scale: float = Field(30.0, gt=0.0, description="1 / tau_s of the cosine classifier (Eq. 7)")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in PRETRAIN_METHODS:
            raise ValueError(f"unknown method {v!r}; known: {', '.join(PRETRAIN_METHODS)}")
        return v

    @model_validator(mode="after")
    def _taus(self) -> "PretrainParams":
        if self.tau_min > self.tau_max:
            raise ValueError(f"pretrain.tau_min ({self.tau_min}) must be <= pretrain.tau_max ({self.tau_max})")
        if self.tase_full < self.tase_warmup:
            raise ValueError(f"pretrain.tase_full ({self.tase_full}) must be >= tase_warmup ({self.tase_warmup})")
        if self.method in ("gloco", "gloco+proco") and self.gloco_gamma > self.tau_max:
            raise ValueError(f"pretrain.gloco_gamma ({self.gloco_gamma}) must be <= pretrain.tau_max ({self.tau_max})")
        if self.sdclr and self.method in SUPERVISED_METHODS:
            raise ValueError(f"pretrain.sdclr: true is not supported with pretrain.method={self.method}")
        return self


# --------------------------------------------------------------------------- OOD sampling
class OODParams(_Section):
    """Paper 003 Sec. 3.1.1 (KDUP) and its baselines."""

    strategy: Literal["kdup", "colt", "random", "augment", "none"] = "kdup"
    # pool
    source: Literal["bundled", "folder", "npy", "source", "list"] = "bundled"
    path: Optional[str] = Field(None, description="folder or .npy file for source folder/npy; for source list a "
                                "list file of '<relative path> [label]' lines or a shipped list (imagenet-r)")
    root: Optional[str] = Field(None, description="source list: the folder the list's paths are relative to")
    pool_source: Optional[str] = Field(None, description="make-lt-dataset source name for source=source")
    pool_size: int = Field(300_000, ge=1, description="images in the pool: crops of the bundled photos or of "
                           "the photos under ood.path (source folder), or images drawn from a source / list")
    pool_seed: int = Field(0, ge=0)
    crop_scale: tuple[float, float] = Field(
        (0.1, 0.6), description="bundled and folder pools: side of each square crop as a fraction of its "
        "photo's short side, uniform in [lo, hi]")
    # schedule
    warmup_epochs: int = Field(100, ge=0)
    interval: int = Field(25, ge=1, description="T: re-sample every T epochs (Eq. 5)")
    # clustering + tailness + budget
    budget: int = Field(10_000, ge=0, description="N_b (Eq. 7)")
    clusters: int = Field(10, ge=1, description="N_c")
    cluster_tol: float = Field(0.001, ge=0.0, le=1.0)
    cluster_max_iter: int = Field(200, ge=1)
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
    colt_topk: int = Field(10, ge=1)
    colt_momentum: float = Field(0.97, ge=0.0, lt=1.0)
    embed_batch_size: int = Field(1024, ge=1)
    seed: int = Field(0, ge=0)

    @field_validator("pool_source")
    @classmethod
    def _pool_source(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in DATA_SOURCES:
            raise ValueError(f"unknown data source {v!r}; known: {', '.join(DATA_SOURCES)}")
        return v

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 < v[0] <= v[1] <= 1.0):
            raise ValueError("must be [lo, hi] with 0 < lo <= hi <= 1 (the crop side as a fraction of the "
                             "photo's short side)")
        return v

    @model_validator(mode="after")
    def _budget(self) -> "OODParams":
        if self.strategy != "none" and self.budget == 0:
            raise ValueError(f"ood.budget is 0 but ood.strategy is {self.strategy!r}; "
                             "use strategy: none to train without OOD data")
        # bundled / folder / source pools hold exactly pool_size images (an npy pool: its rows,
        # checked when the pool is opened); kdup, colt and random draw the budget from the pool
        if (self.strategy in ("kdup", "colt", "random") and self.source != "npy"
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


# --------------------------------------------------------------------------- distill
class DistillParams(OptimParams):
    """Paper 003 Sec. 3.2: guided distillation of g from the frozen f."""

    epochs: int = Field(500, ge=1)
    lr: float = Field(0.05, gt=0.0)
    enabled: bool = True
    k_kd: int = Field(5, ge=1, description="K_kd nearest neighbours of f (positives)")
    beta: float = Field(0.4, ge=0.0, description="weight of L_DL (Eq. 13)")
    clusters: int = Field(10, ge=2, description="clusters of f's embeddings (negatives)")
    method: Literal["auto", "kdup", "gml"] = Field(
        "auto", description="auto: gml after pretrain.method gml, else kdup (guided distillation)")
    guided_sampling: bool = True
    guided_weighting: bool = True
    # GML student (paper 002): gamma L_cls + beta L_GML from the teacher's class-wise queues
    gml_k: int = Field(4096, ge=1, description="k: contrast features in all queues (Eq. 6)")
    gml_km: int = Field(2, ge=0, description="k_m: minimum queue length (Eq. 6)")
    gml_temperature: float = Field(0.1, gt=0.0, description="tau_g (initial value if trained)")
    gml_train_tau: bool = False
    gml_alpha: float = Field(1.0, ge=0.0, description="alpha of Eq. 11 (1 = Eq. 5)")
    gml_scale: float = Field(30.0, gt=0.0, description="1 / tau_s of the student's cosine classifier")
    gml_cls_weight: float = Field(1.0, ge=0.0, description="gamma: weight of L_cls")
    gml_weight: float = Field(1.0, ge=0.0, description="beta: weight of L_GML")


# --------------------------------------------------------------------------- cluster
class ClusterParams(_Section):
    tsne_samples: int = Field(1000, ge=10)
    l2_normalize: bool = False
    seed: int = Field(0, ge=0)
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
    protocols: list[Literal["full", "few_shot", "ms", "lt", "one_percent"]] = ["full", "few_shot"]
    epochs: int = Field(30, ge=1)
    milestones: list[int] = [10, 20]
    few_shot_epochs: int = Field(100, ge=1)
    few_shot_milestones: list[int] = [40, 60]
    lr: float = Field(30.0, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(128, ge=1)
    feature_norm: Literal["none", "l2", "standardize"] = "none"
    knn_k: list[int] = [1, 10]
    seed: int = Field(0, ge=0)

    @field_validator("knn_k")
    @classmethod
    def _knn(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError("every k must be >= 1")
        return v


class ReportParams(_Section):
    title: str = "ltcl report"


# --------------------------------------------------------------------------- external encoders
EXTERNAL_FORMATS = ("ltcl-export", "torchvision", "sdclr", "colt")  # = ltcl.models.external.FORMATS


class ExternalEncoderParams(_Section):
    """An encoder trained outside this pipeline, evaluated by the probe and cluster stages like f and g."""

    path: str = Field(description="checkpoint file (ltcl export .safetensors, torchvision state_dict, "
                      "SDCLR / COLT checkpoint)")
    format: Literal["ltcl-export", "torchvision", "sdclr", "colt"]
    backbone: Literal["resnet8", "resnet10", "resnet20", "resnet32", "resnet18", "resnet50"] = "resnet18"
    stem: Literal["auto", "cifar", "imagenet"] = "auto"
    width: float = Field(1.0, gt=0.0, le=8.0)
    mean: Optional[list[float]] = Field(None, description="input normalisation (0..1 scale); null: the "
                                        "export's own, or the checkpoint's (SDCLR / COLT: ImageNet's), else the data's")
    std: Optional[list[float]] = None

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
            if self.distill.enabled and self.distill_method == "gml":
                raise ValueError("distill.method=gml trains a classifier on the training split's labels, and "
                                 "data.source: images has none; use distill.method: kdup")
            if self.pretrain.method == "tase" and self.pretrain.tase_clusters == 0:
                raise ValueError("pretrain.tase_clusters: 0 means 'the number of classes', which an unlabeled "
                                 "collection does not have; set pretrain.tase_clusters to the number of "
                                 "pseudo-classes TASE should cluster into (e.g. 10)")
        if self.pretrain.method in SUPERVISED_METHODS and self.ood.strategy != "none":
            raise ValueError(f"pretrain.method={self.pretrain.method} is supervised and trains on the labelled "
                             f"long-tailed split only; set ood.strategy: none (it is {self.ood.strategy!r})")
        if (self.pretrain.method == "psd" and self.ood.strategy != "none"
                and self.pretrain.k_pos >= self.ood.budget):
            raise ValueError(f"pretrain.k_pos ({self.pretrain.k_pos}) must be smaller than ood.budget "
                             f"({self.ood.budget}): PSD takes each image's k_pos nearest neighbours within its "
                             "own domain, and the OOD domain holds ood.budget images")
        if self.pretrain.method == "gml" and self.distill.enabled and self.distill.method == "kdup":
            raise ValueError("pretrain.method=gml trains GML's teacher, whose student is distill.method: gml "
                             "(or auto); distill.method is 'kdup'")
        if self.ood.strategy != "none" and self.ood.warmup_epochs >= self.pretrain.epochs:
            raise ValueError(f"ood.warmup_epochs ({self.ood.warmup_epochs}) must be smaller than "
                             f"pretrain.epochs ({self.pretrain.epochs})")
        return self

    @property
    def distill_method(self) -> str:
        """The distillation that runs: ``distill.method``, with ``auto`` resolved."""
        if self.distill.method != "auto":
            return self.distill.method
        return "gml" if self.pretrain.method == "gml" else "kdup"


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


def _format_error(exc: ValidationError, path: Path) -> str:
    import difflib

    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if not key or (err["type"] == "value_error" and len(err["loc"]) == 1 and key in SECTIONS):
            # a check across keys (of one section or several): the message names the keys itself
            lines.append(err["msg"].removeprefix("Value error, "))
        elif err["type"] == "extra_forbidden":
            section = err["loc"][0] if len(err["loc"]) > 1 else None
            allowed = (
                sorted(SECTIONS[section].model_fields) if section in SECTIONS else sorted(SECTIONS)
            )
            close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"{key}: unknown key{hint}; allowed here: {', '.join(allowed)}")
        else:
            got = err.get("input")
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg} (got {got!r})")
    return f"{path}: invalid parameters\n  " + "\n  ".join(lines)


def validate(raw: dict, path: str | Path = PARAMS_FILE) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_error(exc, Path(path))) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file (every section, so a typo anywhere is caught)."""
    return validate(read_yaml(path), path)


def params_dict(params: Params, *sections: str) -> dict:
    """Plain dict of the given sections, for manifests and checkpoints."""
    dump = params.model_dump(mode="json")
    return {s: dump[s] for s in sections} if sections else dump

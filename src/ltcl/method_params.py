"""Each method's and OOD strategy's own params: the subsections ``pretrain.<method>``,
``distill.<method>`` and ``ood.<strategy>`` of params.yaml.

A subsection holds exactly the keys its method (or strategy) reads and no other does; keys that
several read stay at the top of their section (``ltcl.params``).  dvc.yaml lists the configured
one as ``pretrain.${pretrain.method}``, so changing a key of a method that is not configured
reruns nothing.  A method reads its own keys as ``cfg.own.<key>`` (``own`` is the configured
method's subsection; tests/test_params_views.py checks every such read against the subsection).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Subsection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoKeys(Subsection):
    """A method or strategy without keys of its own: its subsection is ``{}``, kept in params.yaml
    because dvc.yaml names it (DVC refuses a stage whose params key is missing)."""


# --------------------------------------------------------------------------- pretrain.<method>
class PSDParams(Subsection):
    """``pretrain.psd``: KDUP's pseudo semantic discrimination (paper 003 Sec. 3.1.2)."""

    k_pos: int = Field(3, ge=0, description="K_pos: each image's nearest neighbours within its own domain "
                       "that are positives (0 = SimCLR's positives only)")


class TauRange(Subsection):
    """The temperature range of the temperature-based methods (ts, tase)."""

    tau_min: float = Field(0.1, gt=0.0, description="the lowest temperature")
    tau_max: float = Field(1.0, gt=0.0, description="the highest temperature")

    @model_validator(mode="after")
    def _range(self) -> "TauRange":
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min ({self.tau_min}) must be <= tau_max ({self.tau_max})")
        return self


class BCLParams(Subsection):
    """``pretrain.bcl``: BCL-I (Zhou et al. 2022, MediaBrain-SJTU/BCL@a2342f8): SimCLR whose views get
    RandAugment ops with a probability and strength that grow with a sample's momentum loss
    (:mod:`ltcl.losses.bcl`).  BCL-D is ``pretrain.pruned_branch: true`` with ``rand_k: 2``
    (its README.md:117)."""

    beta: float = Field(0.97, ge=0.0, lt=1.0, description="momentum of the per-sample loss memory "
                        "(--momentum_loss_beta, train.py:39)")
    rand_k: int = Field(1, ge=1, description="RandAugment ops drawn per view (--rand_k): 1 for BCL-I, 2 for BCL-D")
    rand_strength: float = Field(30.0, ge=0.0, le=30.0, description="RandAugment strength at weight 1 "
                                 "(--rand_strength, on the released 0-30 scale)")


class TSParams(TauRange):
    """``pretrain.ts``: SimCLR with a cosine temperature schedule (Kukleva et al. 2023).

    TS's released code (annusha/temperature_schedules@3ac1db6, train_simCLR.py:399) computes
    ``tau = tau_min + 0.5 (tau_max - tau_min)(1 + cos(pi e / t_max))`` at epoch e = 1..E, and its
    published runs (README.md: CIFAR-10-LT, CIFAR-100-LT) use t_max 200 in a 2,000-epoch run: one
    full oscillation is T = 2 t_max = 400 epochs, five in the run.  ltcl states the period as that
    fraction of the pre-training, T = ``period_fraction`` x ``pretrain.epochs`` (t_max = T / 2), so a
    run of any length (the scaled CPU default, a 2,000-epoch preset) makes TS's five oscillations.
    """

    period_fraction: float = Field(
        0.2, gt=0.0, description="T / pretrain.epochs: one full cosine oscillation lasts T = period_fraction x "
        "pretrain.epochs epochs (TS's t_max = T / 2); TS's published runs: t_max 200 of 2,000 epochs = 0.2")

    @model_validator(mode="before")
    @classmethod
    def _period_moved(cls, data):
        if isinstance(data, dict) and "period" in data:
            raise ValueError("pretrain.ts.period (an epoch count) is now pretrain.ts.period_fraction, the period as "
                             "a fraction of pretrain.epochs (TS's runs: 400 of 2,000 epochs = 0.2)")
        return data


class TASEParams(TauRange):
    """``pretrain.tase``: paper 000's Algorithm 1 (B, F, S and the pseudo-classes)."""

    warmup: int = Field(50, ge=0, description="B: SimCLR epochs before pseudo-labels")
    refresh: int = Field(10, ge=1, description="F: epochs between pseudo-label refreshes")
    full: int = Field(500, ge=0, description="S: epoch from which the temperatures are fully applied")
    clusters: int = Field(0, ge=0, description="K of k-means; 0 = number of classes")
    mapping: Literal["linear", "log"] = Field("linear", description="temperature as a linear or log "
                                              "function of the pseudo-class size")

    @model_validator(mode="after")
    def _full(self) -> "TASEParams":
        if self.full < self.warmup:
            raise ValueError(f"full ({self.full}) must be >= warmup ({self.warmup})")
        return self


class GloCoParams(Subsection):
    """``pretrain.gloco``: GloCo (paper 001 Sec. 3.1-3.2), supervised."""

    k: int = Field(3, ge=1, description="k global positives per anchor (Sec. 3.1)")
    gamma: float = Field(0.1, gt=0.0, description="gamma of Eq. 13: the tail classes' temperature")
    tau_max: float = Field(1.0, gt=0.0, description="tau_max of Eq. 13: the largest class's temperature")

    @model_validator(mode="after")
    def _gamma(self) -> "GloCoParams":
        if self.gamma > self.tau_max:
            raise ValueError(f"gamma ({self.gamma}) must be <= tau_max ({self.tau_max})")
        return self


class GloCoProCoParams(GloCoParams):
    """``pretrain.gloco-proco``: GloCo + ProCo (paper 001 Sec. 3.3): GloCo's keys and ProCo's."""

    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of L_GloCo in L_final (Sec. 3.3)")
    coreset: float = Field(0.1, gt=0.0, le=1.0, description="coreset share of each class (k-center greedy)")


class GMLTeacherParams(Subsection):
    """``pretrain.gml``: GML's teacher (paper 002), supervised."""

    scale: float = Field(30.0, gt=0.0, description="1 / tau_s of the cosine classifier (Eq. 7)")


# --------------------------------------------------------------------------- distill.<method>
class GuidedDistillParams(Subsection):
    """``distill.kdup``: KDUP's guided distillation (paper 003 Sec. 3.2)."""

    k_kd: int = Field(5, ge=1, description="K_kd nearest neighbours of f (positives)")
    beta: float = Field(0.4, ge=0.0, description="weight of L_DL (Eq. 13)")
    clusters: int = Field(10, ge=2, description="clusters of f's embeddings (negatives)")
    guided_sampling: bool = Field(True, description="f picks the positive and negative (Table 6)")
    guided_weighting: bool = Field(True, description="f's similarities weight the loss (Table 6)")


class GMLStudentParams(Subsection):
    """``distill.gml``: GML's student (paper 002): gamma L_cls + beta L_GML from the teacher's
    class-wise queues."""

    k: int = Field(4096, ge=1, description="k: contrast features in all queues (Eq. 6)")
    km: int = Field(2, ge=0, description="k_m: minimum queue length (Eq. 6)")
    temperature: float = Field(0.1, gt=0.0, description="tau_g (initial value if trained)")
    train_tau: bool = Field(False, description="train tau_g (Sec. 3.3)")
    alpha: float = Field(1.0, ge=0.0, description="alpha of Eq. 11 (1 = Eq. 5)")
    scale: float = Field(30.0, gt=0.0, description="1 / tau_s of the student's cosine classifier")
    cls_weight: float = Field(1.0, ge=0.0, description="gamma: weight of L_cls")
    weight: float = Field(1.0, ge=0.0, description="beta: weight of L_GML")


# --------------------------------------------------------------------------- ood.<strategy>
class COLTParams(Subsection):
    """``ood.colt``: COLT's tailness (Bai et al. 2023)."""

    topk: int = Field(10, ge=1, description="COLT's top-k similarities of the tailness score (--k_largest_logits)")
    momentum: float = Field(0.97, ge=0.0, lt=1.0, description="COLT's tailness momentum (--beta)")


class MAKParams(Subsection):
    """``ood.mak``: MAK, Model-Aware K-center sampling (Jiang et al., NeurIPS 2021; VITA-Group/MAK@75d2b9f,
    defaults of its cmds/shell_scrips/sampling.sh and sampling.py:225-227)."""

    views: int = Field(10, ge=2, description="R: augmented projection embeddings of each pool image; ECLE averages "
                       "the re-batched loss over their R(R-1)/2 pairs (--loss_repeat_time 10, sampling.py:107-141)")
    rebatch: int = Field(10, ge=1, description="random re-batchings of each pair, averaged "
                         "(nt_xent_inter_batch_multiple_time's repeat_time, utils.py:140-184)")
    batch: int = Field(512, ge=2, description="batch of the re-batched NT-Xent (utils.py:140); the pool must hold "
                       "at least this many images")
    temperature: float = Field(0.2, gt=0.0, description="temperature of ECLE's NT-Xent (sampling.py:130)")
    clusters: int = Field(10, ge=1, description="K: k-means centres of the ID backbone features for the proximity "
                          "(--K_means_num 10, sampling.py:76-103)")
    kmeans_init: int = Field(10, ge=1, description="k-means restarts (scikit-learn's n_init, 10 in the releases "
                             "MAK ran on; 'auto' = 1 since scikit-learn 1.4)")
    loss_weight: float = Field(0.5, ge=0.0, le=1.0, description="weight of the standardised ECLE in the score; the "
                               "standardised proximity distance gets 1 - it (--loss_weight 0.5, sampling.py:187, 257)")
    core_ratio: float = Field(1.5, ge=1.0, description="the core set: the core_ratio x ood.budget pool images of "
                              "highest score, from which K-center picks ood.budget (--core_sample_ratio 1.5)")

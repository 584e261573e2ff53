"""What a stage hands a method to build itself from: :class:`StageContext`.

A stage (``ltcl.pipeline.pretrain`` / ``distill``) reads its inputs and params, then asks the
configured method's class for an instance with ``cls.from_stage(ctx)``; it never branches on the
method's name.  Each method builds what it needs in the order its computation needs it (the
order of random draws is part of a run's result: it is the method's, not the stage's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from torch import nn

from ltcl.runtime import Runtime


@dataclass
class StageContext:
    params: Any  # the whole validated params (ltcl.params.Params)
    cfg: Any  # the stage's section (params.pretrain or params.distill); its method's keys are cfg.own
    runtime: Runtime
    spec: dict  # the encoder's spec (ltcl.models.checkpoint)
    x: np.ndarray  # the long-tailed split's images, uint8 NHWC
    y: np.ndarray  # its labels (made-up ones for an unlabeled collection: read by supervised methods only)
    manifest: dict  # the split's manifest (class names, image shape)
    make_augment: Callable[[], nn.Module]  # SimCLR's augmentation on the training device, built when asked
    teacher: Optional[nn.Module] = None  # distillation: the frozen pre-trained encoder f

"""Contrastive losses (pure torch functions, no state).

* contrastive: :func:`cosine_matrix`, :func:`nt_xent` (SimCLR baseline).
* kdup: KDUP (paper 003) Eq. 8-13.
* tase / gloco / proco / gml / schedules: papers 000-002 and the TS temperature schedule.
"""

from .contrastive import cosine_matrix, nt_xent  # noqa: F401
from .kdup import (  # noqa: F401
    domain_loss,
    guided_contrastive_loss,
    guided_learning_loss,
    kdup_pretrain_loss,
    psd_loss,
    similarity_distillation_loss,
)
from .gloco import adaptive_temperature, gloco_loss, gloco_simclr_loss  # noqa: F401
from .gml import gml_loss, log_prior_from_counts, logit_adjusted_cosine_logits  # noqa: F401
from .proco import class_prototypes, proco_loss  # noqa: F401
from .schedules import cosine_temperature  # noqa: F401
from .tase import tase_loss, tase_temperatures  # noqa: F401

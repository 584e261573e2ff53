"""OOD sampling for long-tailed contrastive learning on embeddings.

KDUP (paper 003, Sec. 3.1.1, Eq. 1-7) and the COLT baseline (Bai et al. 2023): clustering of ID
embeddings (``clustering``), tailness (``tailness``), budget allocation (``budget``), selection
(``select``), the selection file (``selection_file``) and the live sampler that embeds with the
current encoder (``refresh``).  Import from the module; this package re-exports nothing.
"""

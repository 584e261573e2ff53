"""OOD sampling for long-tailed contrastive learning on embeddings.

KDUP (paper 003, Sec. 3.1.1, Eq. 1-7) and its baselines: clustering of ID embeddings
(``clustering``), tailness (``tailness``), budget allocation (``budget``), the shared selection
pieces (``select``), MAK's scores and K-center (``mak``), one module per ``ood.strategy``
(``strategies``: kdup, colt, mak, random, augment, none; ``strategies.sample_ood`` runs the
configured one), the steps an update times (``steps``), neighbours of a selection (``neighbours``), the selection file (``selection_io``), the update's
pictures and file (``update_pictures``, ``update_file``) and the live sampler that embeds with the
current encoder (``refresh``).  Import from the module; this package re-exports nothing.
"""

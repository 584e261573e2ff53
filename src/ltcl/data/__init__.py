"""Data layer: dataset sources (``sources``, one module per format), long-tailed counts
(``longtail``), splits and their files (``splits``), Many/Medium/Few class groups (``groups``),
the OOD pool (``pool``), GPU/CPU batch augmentation (``augment``), the restricted unpickler
(``unpickle``).  Import from the module; this package re-exports nothing."""

"""Training methods: one module per family, each class a ``Method`` (``base``); the registry of
names is ``ltcl.registry``.  Pre-training: ``contrastive`` (SimCLR, SDCLR, KDUP's PSD),
``temperature`` (TS, TASE), ``gloco`` (GloCo, ProCo), ``gml`` (GML's teacher); distillation:
``distill.guided`` (KDUP), ``distill.gml`` (GML's student)."""

"""Backbones (``resnet``), projection head and encoder (``heads``), SDCLR pruning (``pruning``),
encoder checkpoints (``checkpoint``).  Import from the module; this package re-exports nothing."""

"""Contrastive losses: pure torch functions of tensors, no state, one module per paper.

* ``contrastive``: cosine similarity matrix and NT-Xent (SimCLR, the baseline of every paper).
* ``kdup``: KDUP (paper 003) Eq. 8-13: PSD, domain discrimination, guided distillation.
* ``tase`` (paper 000), ``gloco`` / ``proco`` (paper 001), ``gml`` (paper 002), ``schedules`` (TS).

Import from the module (``from ltcl.losses.kdup import psd_loss``): this package re-exports
nothing, so a stage's code dependencies (dvc.yaml) are exactly the modules it uses.
"""

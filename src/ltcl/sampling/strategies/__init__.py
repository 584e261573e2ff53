"""The OOD sampling strategies of ``ood.strategy``, one module each (the table is
:data:`ltcl.registry.STRATEGIES`): ``kdup``, ``colt``, ``mak``, ``random``, ``augment``, ``none``.  Each
module holds a :class:`ltcl.sampling.strategies.base.Strategy`: what it embeds, its selection from
those embeddings and the images the selection adds to the training set.  :func:`sample_ood` runs the
configured one.
"""

from __future__ import annotations

from typing import Any

import torch

from ltcl.registry import load
from ltcl.sampling.select import OODSelection


def strategy_for(config, batch_size: int):
    """The configured strategy (``config.strategy`` of the ``ood`` params section), built with the
    pre-training batch size (COLT scores tailness within batches of it)."""
    return load("ood", config.strategy)(config, batch_size=batch_size)


def sample_ood(
    id_emb: Any,
    pool_emb: Any,
    config,
    prev_tailness: torch.Tensor | None = None,
    round_index: int = 0,
    *,
    colt_batch_size: int,
) -> tuple[OODSelection, torch.Tensor | None]:
    """Run one OOD sampling update of the configured strategy (KDUP paper 003, Sec. 3.1.1, or a baseline).

    ``config`` is the ``ood`` params section (``ltcl.params.OODParams``: strategy, N_c, K of Eq. 4,
    rho of Eq. 5, N_b and tau of Eq. 7, the clustering's stopping rule, the seed; a strategy's own
    keys in its subsection ``ood.<strategy>``, read as ``config.own``); ``colt_batch_size`` is the
    pre-training batch size, in which COLT scores tailness.

    ``id_emb`` (N_id, d) and ``pool_emb`` (N_pool, d) are L2-normalised float32 embeddings
    (torch or numpy); ``pool_emb`` may be None for a strategy that does not read the pool.
    ``prev_tailness`` is the momentum state returned by the previous call (None at the first
    update).  ``round_index`` (e.g. the update count) varies the random streams (COLT batch
    shuffle, random pick, augment draws, k-means init) between updates.  Returns (selection, new
    tailness state).
    """
    return strategy_for(config, colt_batch_size).select(id_emb, pool_emb, prev_tailness, round_index)

"""No OOD images: the selection is empty and the tailness state is passed through."""

from __future__ import annotations

from ltcl.sampling.select import OODSelection, empty_indices
from ltcl.sampling.strategies.base import Strategy


class NoOOD(Strategy):
    name = "none"

    def select(self, id_emb, pool_emb, prev_tailness, round_index):
        sel = OODSelection(strategy=self.name, pool_indices=empty_indices(), cluster_of_each=empty_indices(),
                           timings=self.timings())
        return sel, prev_tailness

"""Geometric Harmonization on top of a contrastive method (``pretrain.gh``; Zhou et al., NeurIPS 2023,
"Combating Representation Learning Disparity with Geometric Harmonization"; released code
MediaBrain-SJTU/Geometric-Harmonization@9f7057c, train_cifar.py).  The losses are pure functions
in :mod:`ltcl.losses.gh`; this module holds GH's state across steps and epochs and its step.

:class:`Harmonizer` is what a method whose registry entry says ``gh=True`` (SimCLR, SDCLR, BCL)
holds when ``pretrain.gh.enabled``.  Per step, given the projections z1, z2 of the two views (the
global batch under DDP) and their dataset indices (train_cifar.py:143-290, 0-indexed epoch e,
warm-up W = ``warmup_fraction`` x epochs):

* e + 1 <= W: no GH term (train_cifar.py:150-153);
* e + 1 > W: the method's loss + gh_weight(e) * gh_loss(t1, t2, pi), with t = target_logits(z, M)
  (train_cifar.py:158-167);
* after the loss: the per-sample moving average of target_logits(z1.detach(), M), view 1, with
  momentum ema_beta(e) (train_cifar.py:247-257); then, when prior_refresh_due(e), pi from its
  argmax (train_cifar.py:284-290), after every step of such an epoch as the released loop does.

SDCLR (``sdclr_GH``, train_cifar.py:202-235): the released step calls backward twice, once for
nt_xent(f1, sg f2) + w L_GH(t1, sg t2) and once for nt_xent(sg f1, f2) + w L_GH(sg t1, t2), then
steps.  The labels of L_GH are detached in both, so the two backward passes sum to the gradient of
L_GH(t1, t2) with both branches differentiable, which is what ltcl's SDCLR step adds (one term:
the logged value is one L_GH where the released log sums two equal ones).  BCL (``--bcl``) keeps
its own loss memory beside GH's (train_cifar.py:251-257).

Deviations from the released code (docs/deviations.md):

1. A sample's first update copies its logits (the released epoch 0 adds them to ``torch.empty``
   memory, train_cifar.py:114, 251-252); "first" is the first step that sees the sample, not epoch
   0, so a sample the first epoch's dropped last batch left out, and OOD rows after a re-sampling,
   start from their own logits instead of a moving average from zeros.
2. pi is uniform until its first refresh.  The released code never defines ``pi`` before the
   refresh at the end of epoch W, so with ``--warm_up 0`` its first GH step raises a NameError.
3. The prior is the argmax count over the samples seen so far (the whole training set once every
   sample has been seen, as released).
4. M is :func:`ltcl.losses.gh.simplex_etf` drawn from a generator seeded by ``pretrain.seed``
   (the released target/100_128_target.npy comes from an unseeded draw).
5. W is a fraction of ``pretrain.epochs`` (``warmup_fraction``: the released 500 of 1000 epochs),
   so the schedule scales with the run's length; the ramp and the prior period stay in epochs.
"""

from __future__ import annotations

import torch

from ltcl.errors import UserError
from ltcl.losses.gh import (
    ema_beta,
    gh_loss,
    gh_weight,
    moving_average_update,
    prior_from_argmax,
    prior_refresh_due,
    simplex_etf,
    target_logits,
)
from ltcl.methods.base import keep_id_rows

ETF_STREAM = 0x6A  # M's generator: seeded by (pretrain.seed, this)


class Harmonizer:
    """GH's state (the target geometry M, the per-sample moving average of the target logits, which
    samples it has seen, the prior pi) and its part of a training step."""

    def __init__(self, cfg, num_samples: int, proj_dim: int, device):
        gh = cfg.gh
        if gh.target_dim > proj_dim:
            raise UserError(f"pretrain.gh.target_dim = {gh.target_dim} is larger than model.proj_dim = {proj_dim}: "
                            "the simplex-ETF targets need K <= the projection's dimension")
        self.cfg = gh
        self.warm_up = cfg.gh_start_epoch
        self.target = simplex_etf(gh.target_dim, proj_dim, seed=int(cfg.seed) * 256 + ETF_STREAM,
                                  dtype=torch.float32).to(device)
        self.memory = torch.zeros(num_samples, gh.target_dim, dtype=torch.float32, device=device)
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.prior: torch.Tensor | None = None  # uniform until the first refresh (module deviation 2)

    # -- the step -------------------------------------------------------------------------------
    def weight(self, epoch: int) -> float:
        """L_GH's weight in 0-indexed ``epoch``: 0 until W, then the ramp (train_cifar.py:163-166)."""
        return gh_weight(epoch, self.warm_up, self.cfg.ramp_epochs)

    def term(self, z1: torch.Tensor, z2: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """w L_GH(t1, t2, pi) of the two views' projections, or None while the weight is 0."""
        w = self.weight(epoch)
        if w == 0.0:
            return None
        c = self.cfg
        t1, t2 = target_logits(z1, self.target), target_logits(z2, self.target)
        return w * gh_loss(t1, t2, self.prior, eps=c.sinkhorn_eps, iters=c.sinkhorn_iters, gamma=c.gamma)

    @torch.no_grad()
    def after_step(self, z1: torch.Tensor, idx: torch.Tensor, epoch: int) -> None:
        """The moving average of view 1's target logits, then pi where the epoch refreshes it."""
        idx = idx.to(self.memory.device)
        logits = target_logits(z1.detach().float(), self.target)
        first = ~self.seen[idx]
        beta = ema_beta(epoch, self.warm_up, self.cfg.beta_warmup, self.cfg.beta)
        for rows, first_sight in ((first, True), (~first, False)):  # first sight: a copy, the rows are 0
            if bool(rows.any()):
                moving_average_update(self.memory, idx[rows], logits[rows], beta, first_epoch=first_sight)
        self.seen[idx] = True
        if prior_refresh_due(epoch, self.warm_up, self.cfg.prior_every):
            self.prior = prior_from_argmax(self.memory[self.seen])

    # -- training sets, resume ------------------------------------------------------------------
    def set_data(self, num_id: int, num_samples: int) -> None:
        """A new training set (an OOD re-sampling): the ID rows keep their average, new rows start unseen."""
        self.memory = keep_id_rows(self.memory, num_id, num_samples)
        self.seen = keep_id_rows(self.seen, num_id, num_samples)

    def state_dict(self) -> dict:
        return {"memory": self.memory.cpu(), "seen": self.seen.cpu(),
                "prior": None if self.prior is None else self.prior.cpu()}

    def load_state_dict(self, state: dict) -> None:
        dev = self.memory.device
        self.memory, self.seen = state["memory"].to(dev), state["seen"].to(dev)
        self.prior = None if state["prior"] is None else state["prior"].to(dev)

"""SDCLR self-damaging branch: global magnitude pruning and a masked forward of the same model.

SDCLR (Jiang et al. 2021, "Self-Damaging Contrastive Learning", ICML) contrasts the dense
network with a pruned copy of itself. At the start of every epoch the pruned branch's mask is
re-computed from the *current* dense weights by global unstructured magnitude pruning: the
``prune_ratio`` fraction (default 0.9) of prunable weights with the smallest ``|w|`` - one threshold
over all layers together - is zeroed. The pruned branch shares its weights with the dense one, so
the pruned branch's loss also trains the (surviving) dense weights.

Prunable weights: the ``weight`` of every Conv / Linear module of the backbone. Biases, BatchNorm
parameters and the projection head are never pruned (SDCLR prunes only its ``prune_conv2d``
layers; our backbones have no Linear layer, the head is excluded by name).

Implementation: no copy of the model is made. ``pruned_forward`` calls
``torch.func.functional_call`` with ``{name: weight * mask}`` substituted for the prunable weights,
so autograd routes the pruned branch's gradient into the dense weights (zero at pruned positions).

BatchNorm in the pruned branch (choice documented): SDCLR's released code keeps separate BN
statistics and affine parameters for the pruned branch ("dual BN", ``prune_dual_bn``; its
``proj_head`` also has dual BNs). ``pruned_forward`` supports both:

* ``norms=None`` (simplest): the pruned branch uses the model's own BN modules, i.e. shared
  affine parameters, and its batch statistics also update the shared running averages.
* ``norms=PrunedBranchNorms(model)`` (faithful to SDCLR's dual BN): a separate copy of every BN
  (backbone and head) whose parameters and running statistics are substituted into the
  functional call; add ``norms.parameters()`` to the optimiser.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "PRUNABLE_TYPES",
    "prunable_weights",
    "global_magnitude_masks",
    "mask_sparsity",
    "PrunedBranchNorms",
    "pruned_forward",
]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _excluded(module_name: str, exclude: tuple[str, ...]) -> bool:
    return any(module_name == e or module_name.startswith(e + ".") for e in exclude)


def prunable_weights(module: nn.Module, exclude: tuple[str, ...] = ("head",)) -> dict[str, nn.Parameter]:
    """``{qualified_name: weight}`` of every Conv/Linear ``weight`` in ``module`` outside ``exclude``.

    ``exclude`` lists sub-module names (relative to ``module``) whose sub-trees are skipped; the
    default ``("head",)`` skips the projection head of an ``Encoder``. Biases and BN parameters are
    never included.
    """
    out: dict[str, nn.Parameter] = {}
    for name, mod in module.named_modules():
        if _excluded(name, exclude) or not isinstance(mod, PRUNABLE_TYPES):
            continue
        if mod.weight is not None:
            out[_join(name, "weight")] = mod.weight
    return out


@torch.no_grad()
def global_magnitude_masks(
    module: nn.Module, ratio: float = 0.9, exclude: tuple[str, ...] = ("head",)
) -> dict[str, torch.Tensor]:
    """Global magnitude-pruning masks (SDCLR, Jiang et al. 2021; reference code prune/mask.py): ``True`` = weight kept.

    All prunable weights (``prunable_weights(module, exclude)``, n values in total) are ranked by
    ``|w|`` with one global threshold; exactly ``k = round(ratio * n)`` of them - the smallest - are
    pruned. Ties at the threshold are broken by position (flattened parameter order), so the count
    is exact. (SDCLR's ``Mask.magnitudePruning`` uses ``|w| >= sorted(|w|)[ceil(ratio * n)]``,
    which equals this up to one element and ties.)

    Returns ``{param_name: bool mask of the parameter's shape}``, names relative to ``module``.
    """
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio!r}")
    weights = prunable_weights(module, exclude)
    if not weights:
        raise ValueError(f"module has no prunable Conv/Linear weights outside exclude={exclude}")
    flat = torch.cat([w.detach().abs().reshape(-1).float() for w in weights.values()])
    n = flat.numel()
    k = int(round(float(ratio) * n))
    keep = torch.ones(n, dtype=torch.bool, device=flat.device)
    if k >= n:
        keep.zero_()
    elif k > 0:
        # kthvalue gives the threshold in O(n); torch.topk / argsort with k ~ 0.9 n would be slower.
        # (kthvalue is not implemented on MPS, hence the CPU round trip there.)
        source = flat.cpu() if flat.device.type == "mps" else flat
        threshold = torch.kthvalue(source, k).values.to(flat.device)
        below = flat < threshold
        keep &= ~below
        n_ties_to_prune = k - int(below.sum())
        if n_ties_to_prune > 0:
            tie_idx = torch.nonzero(flat == threshold).squeeze(1)[:n_ties_to_prune]
            keep[tie_idx] = False
    masks: dict[str, torch.Tensor] = {}
    offset = 0
    for name, w in weights.items():
        masks[name] = keep[offset : offset + w.numel()].reshape(w.shape).to(w.device)
        offset += w.numel()
    return masks


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of pruned (``False``) entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("masks is empty")
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total


class PrunedBranchNorms(nn.Module):
    """Separate BatchNorm parameters and running statistics for the pruned branch (SDCLR dual BN).

    Holds a deep copy of every ``_BatchNorm`` module of ``model`` (backbone and head). Pass it to
    ``pruned_forward(..., norms=this)``; its tensors are substituted for the model's BN tensors in
    the functional call, so running statistics of the pruned branch update this copy in place.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        names, mods = [], []
        for name, mod in model.named_modules():
            if isinstance(mod, _BatchNorm):
                names.append(name)
                mods.append(copy.deepcopy(mod))
        self.bn_names: list[str] = names
        self.norms = nn.ModuleList(mods)

    def substitutions(self) -> dict[str, torch.Tensor]:
        """``{qualified name in the model: tensor}`` for all BN parameters and buffers."""
        out: dict[str, torch.Tensor] = {}
        for name, mod in zip(self.bn_names, self.norms):
            for pname, p in mod.named_parameters(recurse=False):
                out[_join(name, pname)] = p
            for bname, b in mod.named_buffers(recurse=False):
                out[_join(name, bname)] = b
        return out


def pruned_forward(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    *args,
    norms: PrunedBranchNorms | None = None,
    **kwargs,
):
    """Run ``model(*args, **kwargs)`` with every masked weight replaced by ``weight * mask``.

    The model is not copied: ``torch.func.functional_call`` substitutes the masked tensors, so the
    pruned branch's gradients flow into the dense weights (and are exactly zero where the mask is
    ``False``). ``masks`` come from ``global_magnitude_masks(model, ...)`` (names relative to
    ``model``). With ``norms`` the pruned branch uses its own BatchNorms (SDCLR dual BN); without
    it, the model's BN modules are shared between branches.
    """
    params = dict(model.named_parameters())
    unknown = [name for name in masks if name not in params]
    if unknown:
        raise ValueError(f"masks name parameters not in model: {unknown[:5]}")
    subs: dict[str, torch.Tensor] = {}
    if norms is not None:
        subs.update(norms.substitutions())
    for name, mask in masks.items():
        w = params[name]
        if mask.shape != w.shape:
            raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, weight has {tuple(w.shape)}")
        subs[name] = w * mask.to(device=w.device, dtype=w.dtype)
    return functional_call(model, subs, args, kwargs)


"""A deterministic stand-in for ``SimCLRAugment`` shared by the method tests: normalise with mean 0.5
and std 0.25, mirror every second call, and keep each call's uint8 input (``inputs``) so that a
test can tell which images a step used."""

from __future__ import annotations

import torch
from torch import nn


class FixedAugment(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.full((1, 1, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 1, 1, 1), 0.25))
        self.calls = 0
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.inputs.append(x.detach().clone())
        v = (x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        return v.flip(-1) if self.calls % 2 == 0 else v

    # SimCLRAugment's two halves (BCL applies RandAugment between them): forward = normalise(unnormalised)
    def unnormalised(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.inputs.append(x.detach().clone())
        v = x.permute(0, 3, 1, 2).float() / 255.0
        return v.flip(-1) if self.calls % 2 == 0 else v

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

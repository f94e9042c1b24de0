"""Mapping m: real features -> synthetic feature space; two residual FC blocks (docs/method.md §3.2).

The paper's block has a non-linearity: relu(x + fc2(relu(fc1(x)))). The released code computes
relu(fc1(x)), discards it and returns fc2(x) + x, which makes m affine (fc1 never gets a
gradient). `affine=True` reproduces that for exact comparisons; fc1 is kept so parameter counts
and checkpoints match.
"""
from __future__ import annotations

import torch
from torch import nn


class ResidualFcBlock(nn.Module):
    def __init__(self, dim: int, affine: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.affine = affine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.affine:
            return self.fc2(x) + x
        return torch.relu(x + self.fc2(torch.relu(self.fc1(x))))


class Mapping(nn.Module):
    def __init__(self, dim: int, affine: bool = False, num_blocks: int = 2):
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualFcBlock(dim, affine) for _ in range(num_blocks)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(z)

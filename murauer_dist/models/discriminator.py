"""Discriminator h: two residual FC blocks + FC 1, unbounded output (LSGAN, docs/method.md §3.5).

Same block switch as the mapping: with the released code's affine blocks it is a linear critic.
"""
from __future__ import annotations

import torch
from torch import nn

from murauer_dist.models.mapping import ResidualFcBlock


class Discriminator(nn.Module):
    def __init__(self, dim: int, affine: bool = False, num_blocks: int = 2):
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualFcBlock(dim, affine) for _ in range(num_blocks)])
        self.out = nn.Linear(dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B,) scores."""
        return self.out(self.blocks(features)).squeeze(1)


def build_discriminator(cfg) -> Discriminator:
    return Discriminator(cfg.model.embed_dim, affine=cfg.model.released_affine_blocks)

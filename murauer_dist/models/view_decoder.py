"""View-prediction decoder g (PreView's DCGAN generator, docs/method.md §3.4).

[h, cond] as a 1x1 map -> ConvT 4x4 s1 to 4x4 -> ConvT 4x4 s2 ... up to crop/2 (BN + LeakyReLU
after all but the last, no biases) -> bilinear x2 (align_corners) -> tanh. For 128 crops the
channels are 8f, 4f, 2f, f, 1 (f = decoder_features); smaller crops drop the widest layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

COND_DIMS = 3


def _up_layers(crop_size: int) -> int:
    """Number of stride-2 ConvT layers from 4x4 to crop/2."""
    half = crop_size // 2
    ups = int(round(math.log2(half / 4))) if half >= 8 else 0
    if crop_size % 2 or 4 * 2 ** ups != half or ups < 1:
        raise ValueError(f"view decoder: crop_size must be 4 * 2^k * 2 with k >= 1 (16, 32, 64, 128, ...), got {crop_size}")
    return ups


class ViewDecoder(nn.Module):
    def __init__(self, crop_size: int, embed_dim: int, features: int):
        super().__init__()
        ups = _up_layers(crop_size)
        channels = [features * 2 ** (ups - 1 - i) for i in range(ups)] + [1]
        layers = [nn.ConvTranspose2d(embed_dim + COND_DIMS, channels[0], 4, 1, 0, bias=False),
                  nn.BatchNorm2d(channels[0]), nn.LeakyReLU(0.2, inplace=True)]
        for index in range(ups):
            layers.append(nn.ConvTranspose2d(channels[index], channels[index + 1], 4, 2, 1, bias=False))
            if index < ups - 1:
                layers += [nn.BatchNorm2d(channels[index + 1]), nn.LeakyReLU(0.2, inplace=True)]
        self.net = nn.Sequential(*layers)
        self.crop_size = crop_size

    def forward(self, hidden: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = torch.cat([hidden, cond.to(hidden.dtype)], dim=1)[:, :, None, None]
        x = F.interpolate(self.net(x), scale_factor=2, mode="bilinear", align_corners=True)
        return torch.tanh(x)

"""Feature extractor f: depth crop -> feature z' (docs/method.md §3.1).

5x5 conv (no BN/ReLU after it), 2x2 max-pool, four stages of torchvision-v1.5 bottleneck blocks
(the first block of each stage has stride 2 and a 1x1 projection), BN-ReLU, flatten, FC.
The flatten size follows from the crop size, so 32/64/128 crops all work.
"""
from __future__ import annotations

import math

import torch
from torch import nn

EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 -> BN-ReLU -> 3x3 (carries the stride) -> BN-ReLU -> 1x1 (x4) -> BN, + skip, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        width = out_channels // EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.project = None
        if stride != 1 or in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.project is None else self.project(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + skip)


def trunk_output_side(crop_size: int, num_stages: int) -> int:
    """Spatial side after the max-pool and `num_stages` stride-2 stages (3x3, pad 1: ceil halving)."""
    side = crop_size // 2
    for _ in range(num_stages):
        side = math.ceil(side / 2)
    return side


class Encoder(nn.Module):
    def __init__(self, crop_size: int, in_features: int, stage_widths: list[int], blocks_per_stage: int,
                 embed_dim: int):
        super().__init__()
        if crop_size < 2 ** (len(stage_widths) + 1):
            raise ValueError(f"crop_size {crop_size} is too small for {len(stage_widths)} stride-2 stages")
        bad = [w for w in stage_widths if w % EXPANSION]
        if bad:
            raise ValueError(f"model.stage_widths must be multiples of {EXPANSION} (bottleneck expansion), got {bad}")
        self.conv1 = nn.Conv2d(1, in_features, 5, padding=2, bias=False)
        self.pool = nn.MaxPool2d(2, 2)
        stages, channels = [], in_features
        for width in stage_widths:
            blocks = [Bottleneck(channels, width, stride=2)]
            blocks += [Bottleneck(width, width) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.bn_out = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        side = trunk_output_side(crop_size, len(stage_widths))
        self.flat_features = channels * side * side
        self.fc = nn.Linear(self.flat_features, embed_dim)

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(depth))
        x = self.relu(self.bn_out(self.stages(x)))
        return self.fc(torch.flatten(x, 1))

"""The centre refiner: a small CNN that moves a crop centre onto the palm centre (DeepPrior++'s idea).

Input: the normalised depth crop (1 x C x C, docs/method.md §2 steps 6-7) around the current centre
estimate, with the refiner's own cube (the one it was trained with). Output: the offset from that
centre to the palm centre (the ground-truth crop centre in training) in units of cube/2, in camera
axes (x, y, z). Applied `localize.iterations` times, each time re-cropping around the last estimate.

Network (`refiner.width`, `max_width`, `hidden`): stages of conv 3x3, BN, ReLU and a 2x2 max-pool,
channels width, 2 width, ... (at most max_width), until the map is 4x4 (log2(C) - 2 stages: 4 for
64x64 crops); then 4x4 adaptive average pooling, a fully connected layer of `hidden` units with ReLU
and a linear layer to the 3 outputs.

Checkpoint (one file, torch.load(weights_only=True)): {"format": FORMAT, "version": VERSION,
"model": state dict, "config": the resolved config tree of the training run, "crop_size", "cube_mm",
"dataset", "architecture": {width, max_width, hidden}, "step", "metrics": {val centre errors}}.
inference/checkpoints.py reads it (load_refiner).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from murauer_dist.atomic import atomic_open
from murauer_dist.frames.datasets import Camera
from murauer_dist.geometry import xyz_to_uvd
from murauer_dist.inference.crops import frame_crops
from murauer_dist.train.checkpoint import plain

FORMAT = "murauer-dist centre refiner"
VERSION = 1
OUTPUTS = 3                   # the offset (x, y, z) in units of cube/2

# normalised crops (B, 1, C, C) float32 -> offsets (B, 3) in units of cube/2: torch, TorchScript or ONNX Runtime
OffsetRunner = Callable[[np.ndarray], np.ndarray]


class CentreRefiner(nn.Module):
    def __init__(self, crop_size: int, width: int = 8, max_width: int = 64, hidden: int = 256):
        super().__init__()
        stages = max(1, int(math.floor(math.log2(crop_size / 4.0))))
        layers: list[nn.Module] = []
        channels = 1
        for stage in range(stages):
            out = min(width * 2 ** stage, max_width)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 16, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, OUTPUTS))
        self.crop_size = crop_size

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        """(B, 1, C, C) normalised depth -> (B, 3) offset to the palm centre in units of cube/2."""
        return self.head(self.features(depth))


def build_refiner(cfg) -> CentreRefiner:
    r = cfg.refiner
    return CentreRefiner(cfg.data.crop_size, r.width, r.max_width, r.hidden)


def save_refiner(path: str | os.PathLike, model: CentreRefiner, cfg_tree: dict, cube_mm: float, dataset: str,
                 step: int, metrics: dict) -> Path:
    """Write the refiner checkpoint atomically (plain values and tensors only)."""
    r = cfg_tree["refiner"]
    state = {"format": FORMAT, "version": VERSION, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "config": cfg_tree, "crop_size": int(model.crop_size), "cube_mm": float(cube_mm), "dataset": str(dataset),
             "architecture": {"width": int(r["width"]), "max_width": int(r["max_width"]), "hidden": int(r["hidden"])},
             "step": int(step), "metrics": plain(metrics)}
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    return path


def torch_offsets(model: nn.Module) -> OffsetRunner:
    """The refiner network (eval mode) as an OffsetRunner."""
    device = next(model.parameters()).device

    @torch.inference_mode()
    def run(crops: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(crops).to(device)).double().cpu().numpy()
    return run


def refine_centres(refiner, frames: list[np.ndarray], centers_xyz: np.ndarray, camera: Camera,
                   iterations: int, offsets: OffsetRunner | None = None) -> np.ndarray:
    """Refined centres (N, 3) xyz mm of full frames, starting from `centers_xyz` (N, 3); one batch.

    `refiner`: a RefinerCheckpoint (its crop size and cube). `offsets` runs the network: the torch
    model by default, or an exported file of it (inference/export.py). A centre whose crop
    `frame_crop` refuses (it left the image) keeps its last estimate.
    """
    offsets = offsets or torch_offsets(refiner.model)
    centers = np.asarray(centers_xyz, np.float64).copy()
    half = refiner.cube_mm / 2.0
    for _ in range(iterations):
        crops, usable = frame_crops(frames, xyz_to_uvd(centers, camera), refiner.cube_mm, refiner.crop_size, camera)
        if not usable.any():
            break
        centers[usable] += np.asarray(offsets(crops[usable][:, None]), np.float64) * half
    return centers

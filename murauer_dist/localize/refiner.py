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
"""
from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from murauer_dist.atomic import atomic_open
from murauer_dist.frames.datasets import Camera
from murauer_dist.errors import UserError
from murauer_dist.geometry import MIN_RATIO_INSIDE, CropWindow, crop_depth, crop_scale, normalize_depth, xyz_to_uvd

FORMAT = "murauer-dist centre refiner"
VERSION = 1
OUTPUTS = 3                   # the offset (x, y, z) in units of cube/2


class RefinerError(UserError, ValueError):
    """A refiner checkpoint that cannot be read or does not fit the pose model or data."""


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
    from murauer_dist.train.checkpoint import plain
    r = cfg_tree["refiner"]
    state = {"format": FORMAT, "version": VERSION, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "config": cfg_tree, "crop_size": int(model.crop_size), "cube_mm": float(cube_mm), "dataset": str(dataset),
             "architecture": {"width": int(r["width"]), "max_width": int(r["max_width"]), "hidden": int(r["hidden"])},
             "step": int(step), "metrics": plain(metrics)}
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    return path


class LoadedRefiner:
    """A refiner ready to use: the network (eval mode), its crop size, cube and dataset name."""

    def __init__(self, model: CentreRefiner, crop_size: int, cube_mm: float, dataset: str, path: Path, state: dict):
        self.model, self.crop_size, self.cube_mm, self.dataset, self.path = model, crop_size, cube_mm, dataset, path
        self.metrics = state.get("metrics", {})
        self.step = int(state.get("step", 0))

    def check_fits(self, crop_size: int, dataset: str, what: str) -> None:
        """RefinerError unless the refiner was trained for this crop size and dataset (`what` names the other side)."""
        if dataset != self.dataset:
            raise RefinerError(f"refiner {self.path} was trained on dataset {self.dataset!r}, but {what} is of dataset "
                               f"{dataset!r} (another camera); train a refiner on its data with "
                               f"`murauer-dist train-refiner PRESET data.dataset={dataset}`")
        if crop_size != self.crop_size:
            raise RefinerError(f"refiner {self.path} was trained on {self.crop_size}x{self.crop_size} crops, but {what} "
                               f"uses {crop_size}x{crop_size} crops; train the refiner on the same shards "
                               f"(`murauer-dist train-refiner PRESET data.crop_size={crop_size} data.shards=...`)")


def load_refiner(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedRefiner:
    """Read a refiner checkpoint (weights_only); a RefinerError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        from murauer_dist.paths import what_is
        raise RefinerError(f"refiner checkpoint {path} {what_is(path)} (write one with `murauer-dist train-refiner "
                           f"PRESET`)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise RefinerError(f"refiner checkpoint {path}: cannot be read, truncated or not a murauer_dist file "
                           f"({type(err).__name__}: {first})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        if isinstance(state, dict) and "model" in state and "stage" in state:
            raise RefinerError(f"{path} is a pose model checkpoint, not a centre refiner: give it as CHECKPOINT and the "
                               f"file `murauer-dist train-refiner` writes as --refiner")
        raise RefinerError(f"{path} is not a centre refiner checkpoint (no format {FORMAT!r}); "
                           f"write one with `murauer-dist train-refiner PRESET`")
    if state.get("version") != VERSION:
        raise RefinerError(f"refiner checkpoint {path}: version {state.get('version')!r}, this code reads version "
                           f"{VERSION}; train it again with `murauer-dist train-refiner`")
    arch = state["architecture"]
    model = CentreRefiner(int(state["crop_size"]), int(arch["width"]), int(arch["max_width"]), int(arch["hidden"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RefinerError(f"refiner checkpoint {path}: its weights do not fit a {state['crop_size']}x"
                           f"{state['crop_size']} refiner of {arch}: the file was changed or damaged; train it again "
                           f"with `murauer-dist train-refiner`") from err
    return LoadedRefiner(model.to(device).eval(), int(state["crop_size"]), float(state["cube_mm"]),
                         str(state.get("dataset", "nyu")), path, state)


def frame_crop(depth_mm: np.ndarray, center_uvd: np.ndarray, cube_mm: float, crop_size: int, camera: Camera,
               frame: str = "?") -> np.ndarray:
    """The normalised network crop (C, C) float32 of a full frame around a centre (docs/method.md §2)."""
    window = CropWindow.around(center_uvd, cube_mm, crop_size, camera=camera)
    crop = crop_depth(np.asarray(depth_mm), window, frame=frame)
    return normalize_depth(crop, center_uvd[2], cube_mm)


def frame_crops(frames, centers_uvd: np.ndarray, cube_mm: float, crop_size: int,
                camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """`frame_crop` of many frames at once, the same values: (crops (N, C, C) float32, usable (N,) bool).

    A frame whose crop `frame_crop` refuses (a CropError: the centre off the image, too little of the
    window inside it) is not usable; its crop is background (+1). The window arithmetic and the
    normalisation run once for the batch; only the pixel lookup is per frame."""
    centers = np.asarray(centers_uvd, dtype=np.float64).reshape(-1, 3)
    crops = np.ones((len(centers), crop_size, crop_size), dtype=np.float32)
    usable = np.zeros(len(centers), dtype=bool)
    if not len(centers):
        return crops, usable
    scale = crop_scale(centers[:, 2], cube_mm, crop_size, camera)          # as CropWindow.around
    offsets = (np.arange(crop_size) + 0.5 - crop_size / 2.0)[None, :] / scale[:, None]
    cols = np.floor(centers[:, 0:1] + offsets).astype(np.int64)           # as crop_depth
    rows = np.floor(centers[:, 1:2] + offsets).astype(np.int64)
    for index, depth in enumerate(frames):
        height, width = depth.shape
        u, v = centers[index, 0], centers[index, 1]
        col_ok, row_ok = (cols[index] >= 0) & (cols[index] < width), (rows[index] >= 0) & (rows[index] < height)
        if not (0 <= u < width and 0 <= v < height) or col_ok.mean() * row_ok.mean() < MIN_RATIO_INSIDE:
            continue
        crop = np.asarray(depth)[np.clip(rows[index], 0, height - 1)][:, np.clip(cols[index], 0, width - 1)]
        crops[index] = np.where(row_ok[:, None] & col_ok[None, :], crop, 0)
        usable[index] = True
    crops[usable] = normalize_depth(crops[usable], centers[usable, 2][:, None, None], cube_mm)
    return crops, usable


def torch_offsets(refiner: LoadedRefiner):
    """The refiner's network as a function of normalised crops (B, 1, C, C) float32 -> offsets (B, 3)."""
    device = next(refiner.model.parameters()).device

    @torch.inference_mode()
    def run(crops: np.ndarray) -> np.ndarray:
        return refiner.model(torch.from_numpy(crops).to(device)).double().cpu().numpy()
    return run


def refine_centres(refiner: LoadedRefiner, frames: list[np.ndarray], centers_xyz: np.ndarray, camera: Camera,
                   iterations: int, offsets=None) -> np.ndarray:
    """Refined centres (N, 3) xyz mm of full frames, starting from `centers_xyz` (N, 3); one batch.

    `offsets` runs the network (crops (B, 1, C, C) float32 -> (B, 3) in units of cube/2): the torch
    model by default, or an exported file of it (murauer_dist/export.py). A centre whose crop
    `frame_crop` refuses (it left the image) keeps its last estimate.
    """
    offsets = offsets or torch_offsets(refiner)
    centers = np.asarray(centers_xyz, np.float64).copy()
    half = refiner.cube_mm / 2.0
    for _ in range(iterations):
        crops, usable = frame_crops(frames, xyz_to_uvd(centers, camera), refiner.cube_mm, refiner.crop_size, camera)
        if not usable.any():
            break
        centers[usable] += np.asarray(offsets(crops[usable][:, None]), np.float64) * half
    return centers

"""The one inference path from raw depth frames to joints in camera mm: `Predictor`.

    depth frame (H, W) mm -> the closest object's centre of mass (localize/centre.py)
      -> the centre refiner, localize.iterations times (optional; inference/refiner.py)
      -> the crop around the centre (inference/crops.py, the pose network's crop size and cube)
      -> the pose network -> joints de-normalised to camera mm (geometry.denormalize_joints)

`Predictor(frames)` runs all of it; `Predictor.at_centres(frames, centres)` starts from centres the
caller gives (`evaluate --centre`: the ground truth's, detected ones). The networks are runners of
numpy crops (B, 1, C, C) float32: the torch model (`torch_pose`, refiner.torch_offsets) or an
exported file of it (`bench infer` times TorchScript and ONNX Runtime through the same Predictor).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from murauer_dist.config import ConfigError, load_config
from murauer_dist.frames.datasets import Camera
from murauer_dist.geometry import CropError, denormalize_joints, xyz_to_uvd
from murauer_dist.inference.checkpoints import PoseCheckpoint, RefinerCheckpoint
from murauer_dist.inference.crops import frame_crop, frame_crops
from murauer_dist.inference.refiner import OffsetRunner, refine_centres
from murauer_dist.localize.centre import CentreSettings, Detection, centre_of_mass

STAGES = ("centre", "refiner", "pose")
OFF_IMAGE = ("background", "drop", "raise")

# normalised crops (B, 1, C, C) float32 -> normalised joints (B, J, 3): torch, TorchScript or ONNX Runtime
PoseRunner = Callable[[np.ndarray], np.ndarray]


def torch_pose(pose: PoseCheckpoint, device: str | torch.device) -> PoseRunner:
    """The pose network of a checkpoint as a PoseRunner (the path it was trained for: mapped or not)."""
    def run(crops: np.ndarray) -> np.ndarray:
        return pose.model.predict(torch.from_numpy(crops).to(device), mapped=pose.mapped).float().cpu().numpy()
    return run


@dataclass
class Prediction:
    """Joints of a batch of frames and how they were found; `rows` are the input frames the arrays hold."""

    joints_xyz: np.ndarray           # (N, J, 3) camera mm
    centre_xyz: np.ndarray           # (N, 3) the crop centres used (after the refiner)
    crops: np.ndarray                # (N, C, C) the normalised crops the network saw
    off_image: np.ndarray            # (N,) bool: no crop could be made there (the crop is all background)
    rows: np.ndarray                 # (N,) index into the frames given
    camera: Camera
    detected_xyz: np.ndarray | None = None     # (N, 3) the centres of mass, when the Predictor found them
    errors: dict = field(default_factory=dict)  # frame left out (off_image="drop") -> its CropError
    seconds: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def joints_uvd(self) -> np.ndarray:
        return xyz_to_uvd(self.joints_xyz, self.camera)

    @property
    def centre_uvd(self) -> np.ndarray:
        return xyz_to_uvd(self.centre_xyz, self.camera)


@dataclass
class Predictor:
    """Raw depth frames of `camera` (uint16 or float mm, 0 = no depth) -> joints in camera mm."""

    pose: PoseRunner
    camera: Camera
    crop_size: int
    cube_mm: float
    settings: CentreSettings
    refiner: RefinerCheckpoint | None = None
    iterations: int = 0
    offsets: OffsetRunner | None = None        # the refiner's network; None: its torch model

    @classmethod
    def from_checkpoints(cls, pose: PoseCheckpoint, refiner: RefinerCheckpoint | None = None,
                         device: str | torch.device = "cpu", cube_mm: float = 0.0) -> "Predictor":
        """The torch networks of `pose` (and `refiner`) with its config's localize settings and cube
        (`cube_mm` > 0 overrides the cube)."""
        cfg = pose.config
        return cls(torch_pose(pose, device), pose.spec.camera, pose.crop_size, float(cube_mm or pose.cube_mm),
                   CentreSettings.from_config(cfg), refiner, int(cfg.localize.iterations))

    def detect(self, depth: np.ndarray, frame: str = "?") -> Detection:
        """The closest object's centre of mass; a NoHandError naming `frame` when there is none."""
        return centre_of_mass(depth, self.camera, self.settings, frame=frame)

    def __call__(self, depths, names=None) -> Prediction:
        """Joints of every frame; a NoHandError or CropError when a frame has no hand or its crop leaves the image."""
        start = time.perf_counter()
        names = names or ["?"] * len(depths)
        detected = np.stack([self.detect(depth, name).center_xyz for depth, name in zip(depths, names)])
        seconds = time.perf_counter() - start
        found = self.at_centres(depths, detected, off_image="raise", names=names)
        found.detected_xyz, found.seconds["centre"] = detected, seconds
        return found

    def at_centres(self, depths, centres_xyz: np.ndarray, cubes=None, *, refine: bool = True,
                   off_image: str = "background", names=None) -> Prediction:
        """Joints of frames cropped around `centres_xyz` (N, 3) (first moved by the refiner, when there is
        one and `refine`), with the Predictor's cube or one per frame (`cubes` (N,)).

        off_image: what a crop that leaves the image becomes: "background" (an all-background crop, still
        run), "drop" (left out: `rows` says which frames remain, `errors` why the others do not) or "raise"
        (the first one's CropError, naming the frame by `names`)."""
        if off_image not in OFF_IMAGE:
            raise ValueError(f"off_image must be one of {OFF_IMAGE}, got {off_image!r}")
        start = time.perf_counter()
        centres = np.asarray(centres_xyz, np.float64)
        if refine and self.refiner is not None:
            centres = refine_centres(self.refiner, depths, centres, self.camera, self.iterations, offsets=self.offsets)
        refined = time.perf_counter()
        cube = self.cube_mm if cubes is None else np.asarray(cubes, np.float64)
        crops, usable = frame_crops(depths, xyz_to_uvd(centres, self.camera), cube, self.crop_size, self.camera)
        rows, errors = np.arange(len(centres)), {}
        if off_image != "background":
            names = names or ["?"] * len(centres)
            errors = {int(row): self.crop_error(depths[row], centres[row], cube if np.ndim(cube) == 0 else cube[row],
                                                names[row]) for row in np.flatnonzero(~usable)}
            if off_image == "raise" and errors:
                raise next(iter(errors.values()))
            rows = np.flatnonzero(usable)
        if len(rows) < len(centres):                                       # no copies when every row is kept
            crops, centres, usable = crops[rows], centres[rows], usable[rows]
            cube = cube if np.ndim(cube) == 0 else cube[rows]
        normalised = self.pose(crops[:, None]) if len(rows) else np.zeros((0, 0, 3), np.float32)
        joints = denormalize_joints(normalised, centres, cube)
        done = time.perf_counter()
        return Prediction(joints, centres, crops, ~usable, rows, self.camera, errors=errors,
                          seconds={"centre": 0.0, "refiner": refined - start, "pose": done - refined})

    def crop_error(self, depth: np.ndarray, centre_xyz: np.ndarray, cube_mm: float, frame: str) -> CropError:
        """The CropError (naming `frame`) of a crop that `at_centres` found off the image."""
        try:
            frame_crop(depth, xyz_to_uvd(centre_xyz, self.camera), float(cube_mm), self.crop_size, self.camera, frame)
        except CropError as err:
            return err
        return CropError(f"frame {frame}: the crop around {centre_xyz} leaves the image")


def apply_localize_overrides(cfg, overrides) -> None:
    """cfg.localize := this version's defaults with `localize.KEY=VALUE` overrides (typed and range-checked
    by the config). Localisation is no property of the pose model: the localize section a checkpoint
    recorded when it was trained is not used."""
    overrides = [str(item) for item in overrides]
    for item in overrides:
        key = item.split("=", 1)[0].strip().lstrip("-")
        if "=" not in item or not key.startswith("localize."):
            raise ConfigError(f"override {item!r}: predict and evaluate take localize.KEY=VALUE overrides only "
                              f"(the pose model's settings come from its checkpoint)")
    cfg.localize = load_config(None, overrides).localize

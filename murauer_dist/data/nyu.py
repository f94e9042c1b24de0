"""Reader (and writer) for the NYU hand pose layout, used for the real download and the procedural set.

    ROOT/{train,test}/depth_{cam}_{frame:07d}.png       real depth, cam in 1..3, frame 1-based
    ROOT/{train,test}/synthdepth_{cam}_{frame:07d}.png  synthetic rendering of the same pose
    ROOT/{train,test}/joint_data.mat                     joint_uvd, joint_xyz: (3 cams, N, 36, 3)

Depth PNGs are 640x480 RGB with depth in mm = (G << 8) | B.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from murauer_dist import geometry
from murauer_dist.errors import UserError

SPLITS = ("train", "test")
DOMAINS = {"real": "depth", "synth": "synthdepth"}
CAMERAS = (1, 2, 3)
NUM_NYU_JOINTS = 36
MAKE_HINT = ("download the NYU hand pose dataset, or make the procedural one with "
             "`murauer-dist synth-data OUT`")


class LayoutError(UserError, FileNotFoundError):
    """A folder that is not (or not completely) an NYU-layout dataset."""


def decode_depth_png(data: bytes | str | os.PathLike) -> np.ndarray:
    """NYU PNG (bytes or path) -> uint16 depth in mm, (480, 640)."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with Image.open(source) as image:
        rgb = np.asarray(image.convert("RGB"))
    return (rgb[..., 1].astype(np.uint16) << 8) | rgb[..., 2].astype(np.uint16)


def encode_depth_png(depth_mm: np.ndarray) -> bytes:
    """uint16 depth (mm) -> NYU PNG bytes (R=0, G=high byte, B=low byte)."""
    depth = np.asarray(depth_mm, dtype=np.uint16)
    rgb = np.zeros(depth.shape + (3,), dtype=np.uint8)
    rgb[..., 1] = depth >> 8
    rgb[..., 2] = depth & 0xFF
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def depth_filename(domain: str, cam: int, index: int) -> str:
    """File name of 0-based frame `index` (NYU numbers files from 1)."""
    return f"{DOMAINS[domain]}_{cam}_{index + 1:07d}.png"


@dataclass(frozen=True)
class FrameLabels:
    """Joints of one frame in one camera: all 36 NYU joints, uvd (px, px, mm) and xyz (mm, y up)."""

    uvd: np.ndarray   # (36, 3)
    xyz: np.ndarray   # (36, 3)

    @property
    def eval_uvd(self) -> np.ndarray:
        return self.uvd[list(geometry.EVAL_JOINTS)]

    @property
    def eval_xyz(self) -> np.ndarray:
        return self.xyz[list(geometry.EVAL_JOINTS)]

    @property
    def center_uvd(self) -> np.ndarray:
        return self.uvd[geometry.EVAL_JOINTS[geometry.CENTER_JOINT]]

    @property
    def center_xyz(self) -> np.ndarray:
        return self.xyz[geometry.EVAL_JOINTS[geometry.CENTER_JOINT]]


class NyuSplit:
    """One split (`train` or `test`) of an NYU-layout folder."""

    def __init__(self, root: str | os.PathLike, split: str):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.folder = self.root / split
        if not self.root.is_dir():
            raise LayoutError(f"dataset root {self.root} does not exist; {MAKE_HINT}")
        if not self.folder.is_dir():
            raise LayoutError(f"{self.folder} is missing: an NYU-layout root holds train/ and test/; {MAKE_HINT}")
        if not self.mat_path.is_file():
            raise LayoutError(f"{self.mat_path} is missing: each split needs its joint_data.mat; {MAKE_HINT}")

    @property
    def mat_path(self) -> Path:
        return self.folder / "joint_data.mat"

    @cached_property
    def _joints(self) -> dict[str, np.ndarray]:
        try:
            mat = scipy.io.loadmat(self.mat_path, variable_names=["joint_uvd", "joint_xyz"])
        except (OSError, ValueError) as err:
            raise LayoutError(f"{self.mat_path}: cannot read as a .mat file ({err})") from err
        joints = {}
        for key in ("joint_uvd", "joint_xyz"):
            if key not in mat:
                raise LayoutError(f"{self.mat_path}: variable '{key}' is missing (expected shape (3, N, 36, 3))")
            array = np.asarray(mat[key], dtype=np.float64)
            if array.ndim != 4 or array.shape[0] != 3 or array.shape[2] != NUM_NYU_JOINTS or array.shape[3] != 3:
                raise LayoutError(f"{self.mat_path}: '{key}' has shape {array.shape}, expected (3, N, 36, 3)")
            joints[key] = array
        if joints["joint_uvd"].shape != joints["joint_xyz"].shape:
            raise LayoutError(f"{self.mat_path}: joint_uvd {joints['joint_uvd'].shape} and joint_xyz "
                              f"{joints['joint_xyz'].shape} disagree")
        return joints

    def __len__(self) -> int:
        return self._joints["joint_uvd"].shape[1]

    def labels(self, index: int, cam: int) -> FrameLabels:
        return FrameLabels(self._joints["joint_uvd"][cam - 1, index], self._joints["joint_xyz"][cam - 1, index])

    def all_labels(self, cam: int) -> FrameLabels:
        """All frames at once: uvd/xyz of shape (N, 36, 3)."""
        return FrameLabels(self._joints["joint_uvd"][cam - 1], self._joints["joint_xyz"][cam - 1])

    def depth_path(self, index: int, cam: int, domain: str = "real") -> Path:
        return self.folder / depth_filename(domain, cam, index)

    def depth(self, index: int, cam: int, domain: str = "real") -> np.ndarray:
        """uint16 depth in mm (480, 640). A missing or unreadable file names its path."""
        path = self.depth_path(index, cam, domain)
        if not path.is_file():
            raise LayoutError(f"{path} is missing (frame {index}, camera {cam}, {domain})")
        try:
            depth = decode_depth_png(path)
        except OSError as err:
            raise LayoutError(f"{path}: not a readable PNG ({err})") from err
        if depth.shape != (geometry.IMAGE_HEIGHT, geometry.IMAGE_WIDTH):
            raise LayoutError(f"{path}: {depth.shape[1]}x{depth.shape[0]} pixels, expected 640x480")
        return depth

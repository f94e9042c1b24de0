"""Camera model, uvd <-> xyz, the 3D cube crop and its inverses (numpy).

Conventions (docs/method.md §1-2):
- camera: a datasets.Camera (the dataset's: datasets.spec_of(cfg).camera, or the one a shard set
  records); x right, z = depth in mm, y up (NYU: fx=588.03, fy=587.07, ux=320, uy=240) or down;
  u = ux + fx*x/z, v = uy - fy_signed*y/z (fy_signed = fy for y up, -fy for y down). Every function
  takes the camera as an argument: there is no default dataset below the CLI and the config.
- pixel p covers [p, p+1): a continuous (u, v) reads depth[floor(v), floor(u)].
- crop: a square window of half-side (cube/2)*fx/z_c pixels around the centre (u_c, v_c), resampled
  by nearest neighbour. A *stored* crop covers `margin` times that window (room for rotation and
  centre jitter later); its pixel (row i, col j) centre maps to image u = u_c + (j+0.5-S/2)/s.
- normalised depth: (d - z_c)/(cube/2), background (0 or outside the cube) = +1;
  normalised target: clip((xyz - center_xyz)/(cube/2), -1, 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from murauer_dist.frames.datasets import NYU, Camera
from murauer_dist.errors import UserError

# NYU's constants under their old names, for tests and scripts only: nothing in the package uses them;
# the pipeline takes its dataset's Camera and JointSpec (murauer_dist/frames/datasets.py).
NYU_CAMERA = NYU.camera
FX, FY, UX, UY = NYU_CAMERA.fx, NYU_CAMERA.fy, NYU_CAMERA.ux, NYU_CAMERA.uy
IMAGE_WIDTH, IMAGE_HEIGHT = NYU_CAMERA.width, NYU_CAMERA.height
EVAL_JOINTS = NYU.joints.evaluated
JOINT_LABELS = NYU.joints.labels
CENTER_JOINT = NYU.joints.center
MIN_VALID_PIXELS = 40             # fewer valid hand pixels in a crop: the frame is unusable
MIN_RATIO_INSIDE = 0.3            # crop window at least this fraction inside the image


class CropError(UserError, ValueError):
    """A frame whose crop cannot be made (centre off-image, too few valid pixels)."""


def uvd_to_xyz(uvd: np.ndarray, camera: Camera) -> np.ndarray:
    uvd = np.asarray(uvd, dtype=np.float64)
    z = uvd[..., 2]
    x = (uvd[..., 0] - camera.ux) * z / camera.fx
    y = (camera.uy - uvd[..., 1]) * z / camera.fy_signed
    return np.stack([x, y, z], axis=-1)


def xyz_to_uvd(xyz: np.ndarray, camera: Camera) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    z = xyz[..., 2]
    safe_z = np.where(z == 0, 1.0, z)
    u = np.where(z == 0, camera.ux, camera.ux + camera.fx * xyz[..., 0] / safe_z)
    v = np.where(z == 0, camera.uy, camera.uy - camera.fy_signed * xyz[..., 1] / safe_z)
    return np.stack([u, v, z], axis=-1)


def crop_scale(center_z: float | np.ndarray, cube_mm: float | np.ndarray, crop_size: int,
               camera: Camera) -> np.ndarray:
    """Crop pixels per image pixel for a cube at depth z (square window, fx for both axes)."""
    half_window = (np.asarray(cube_mm) / 2.0) * camera.fx / np.asarray(center_z, dtype=np.float64)
    return crop_size / (2.0 * half_window)


@dataclass(frozen=True)
class CropWindow:
    """Where a crop sits in the full image: centre (u, v, d) in image pixels / mm, scale, size."""

    center_uvd: tuple[float, float, float]
    cube_mm: float
    size: int            # crop side in pixels
    scale: float         # crop pixels per image pixel

    @classmethod
    def around(cls, center_uvd, cube_mm: float, size: int, margin: float = 1.0, *,
               camera: Camera) -> "CropWindow":
        u, v, d = (float(c) for c in center_uvd)
        return cls((u, v, d), float(cube_mm), int(size), float(crop_scale(d, cube_mm, size, camera) / margin))

    def matrix(self) -> np.ndarray:
        """3x3 M: homogeneous image (u, v) -> crop (x, y) pixel coordinates."""
        u, v, _ = self.center_uvd
        s, half = self.scale, self.size / 2.0
        return np.array([[s, 0.0, half - s * u], [0.0, s, half - s * v], [0.0, 0.0, 1.0]])

    def image_to_crop(self, uv: np.ndarray) -> np.ndarray:
        u, v, _ = self.center_uvd
        uv = np.asarray(uv, dtype=np.float64)
        return np.stack([(uv[..., 0] - u) * self.scale + self.size / 2.0,
                         (uv[..., 1] - v) * self.scale + self.size / 2.0], axis=-1)

    def crop_to_image(self, xy: np.ndarray) -> np.ndarray:
        u, v, _ = self.center_uvd
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([(xy[..., 0] - self.size / 2.0) / self.scale + u,
                         (xy[..., 1] - self.size / 2.0) / self.scale + v], axis=-1)


def crop_depth(depth_mm: np.ndarray, window: CropWindow, frame: str = "?") -> np.ndarray:
    """Nearest-neighbour crop of a full depth map (mm) into window.size^2; outside the image -> 0.

    The depth values are kept in mm (no cube thresholding): that happens at normalisation,
    after any augmentation has moved the centre. Raises CropError naming `frame`.
    """
    height, width = depth_mm.shape
    u_c, v_c, _ = window.center_uvd
    if not (0 <= u_c < width and 0 <= v_c < height):
        raise CropError(f"frame {frame}: crop centre (u={u_c:.1f}, v={v_c:.1f}) lies outside the {width}x{height} image")
    centers = (np.arange(window.size) + 0.5 - window.size / 2.0) / window.scale
    cols = np.floor(u_c + centers).astype(np.int64)
    rows = np.floor(v_c + centers).astype(np.int64)
    col_ok, row_ok = (cols >= 0) & (cols < width), (rows >= 0) & (rows < height)
    inside = col_ok.mean() * row_ok.mean()
    if inside < MIN_RATIO_INSIDE:
        raise CropError(f"frame {frame}: only {inside:.0%} of the crop window lies inside the image")
    crop = depth_mm[np.clip(rows, 0, height - 1)][:, np.clip(cols, 0, width - 1)]
    crop = np.where(row_ok[:, None] & col_ok[None, :], crop, 0)
    return crop.astype(depth_mm.dtype, copy=False)


def count_hand_pixels(crop_mm: np.ndarray, center_z: float, cube_mm: float) -> int:
    valid = (crop_mm > 0) & (np.abs(crop_mm.astype(np.float64) - center_z) <= cube_mm / 2.0)
    return int(valid.sum())


def check_crop(crop_mm: np.ndarray, center_z: float, cube_mm: float, frame: str = "?") -> None:
    hand = count_hand_pixels(crop_mm, center_z, cube_mm)
    if hand < MIN_VALID_PIXELS:
        raise CropError(f"frame {frame}: only {hand} valid depth pixels inside the {cube_mm:.0f} mm cube "
                        f"(need {MIN_VALID_PIXELS})")


def center_crop(stored: np.ndarray, out_size: int) -> np.ndarray:
    """The un-augmented network crop from a stored (margin) crop.

    A stored crop has the output's pixel scale and only covers more area, so this is the central
    slice (the size difference is even for every margin*size we store).
    """
    offset = (stored.shape[0] - out_size) // 2
    return stored[offset:offset + out_size, offset:offset + out_size]


def stored_size(crop_size: int, margin: float) -> int:
    """Side of the stored crop: margin x crop_size, rounded so the border is even."""
    size = int(round(crop_size * margin))
    return size + (size - crop_size) % 2


def normalize_depth(crop_mm: np.ndarray, center_z, cube_mm) -> np.ndarray:
    """mm -> [-1, 1] around the centre depth; 0 and everything outside the cube -> +1."""
    crop = np.asarray(crop_mm, dtype=np.float32)
    half = np.float32(np.asarray(cube_mm) / 2.0)
    center_z = np.float32(center_z)
    norm = (crop - center_z) / half
    background = (crop <= 0) | (np.abs(norm) > 1.0)
    return np.where(background, np.float32(1.0), norm).astype(np.float32)


def normalize_joints(joints_xyz: np.ndarray, center_xyz: np.ndarray, cube_mm) -> np.ndarray:
    half = np.asarray(cube_mm, dtype=np.float64)[..., None, None] / 2.0
    return np.clip((np.asarray(joints_xyz) - np.asarray(center_xyz)[..., None, :]) / half, -1.0, 1.0)


def denormalize_joints(target: np.ndarray, center_xyz: np.ndarray, cube_mm) -> np.ndarray:
    half = np.asarray(cube_mm, dtype=np.float64)[..., None, None] / 2.0
    return np.asarray(target, dtype=np.float64) * half + np.asarray(center_xyz)[..., None, :]


def test_cube_mm(frame_index: int, cube_mm: float, second_actor_cube_mm: float, second_actor_from: int) -> float:
    """NYU protocol: the second test actor (index >= second_actor_from) gets the smaller cube."""
    if second_actor_from >= 0 and frame_index >= second_actor_from:
        return second_actor_cube_mm
    return cube_mm

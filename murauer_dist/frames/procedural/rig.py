"""A fixed rig of three depth cameras of one kind: camera 1 frontal, cameras 2 and 3 at the sides.

The cameras share the intrinsics and image size of `Rig.camera` (a datasets.Camera: the dataset
spec's that `synth-data --dataset` names). Each camera has its own coordinates (x right,
y up, z = depth; a y-down dataset flips y when the labels are written, frames.py). Camera 1's
frame is the world frame; camera k sees p_k = R_k (p_1 - C_k). Cameras 2 and 3 sit on a circle around
a pivot in front of camera 1 (where the hand moves), turned by +-yaw and looking at the pivot, so a
view from camera 1 predicts the side views consistently (NYU's view-prediction target is slot 3).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from murauer_dist.frames.datasets import Camera


def look_at(center: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Rotation (rows: right, up, forward) of a camera at `center` looking at `target`, y up."""
    forward = target - center
    forward = forward / np.linalg.norm(forward)
    right = np.cross(np.asarray(up, dtype=np.float64), forward)
    right = right / np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward])


@dataclass(frozen=True)
class Rig:
    """Camera extrinsics relative to camera 1: rotations (3, 3, 3) and centres (3, 3); the intrinsics."""

    rotations: np.ndarray
    centers: np.ndarray
    camera: Camera                   # the dataset's (frames.GeneratorSettings passes its spec's)

    @classmethod
    def default(cls, pivot_mm: float = 750.0, yaw_deg: float = 50.0, height_mm: float = 120.0, *,
                camera: Camera) -> "Rig":
        pivot = np.array([0.0, 0.0, pivot_mm])
        rotations, centers = [np.eye(3)], [np.zeros(3)]
        for side, lift in ((-1.0, height_mm), (1.0, -0.5 * height_mm)):   # cam 2 left/above, cam 3 right
            yaw = np.radians(side * yaw_deg)
            center = pivot + np.array([-np.sin(yaw) * pivot_mm, lift, -np.cos(yaw) * pivot_mm])
            rotations.append(look_at(center, pivot))
            centers.append(center)
        return cls(np.stack(rotations), np.stack(centers), camera)

    def to_camera(self, points: np.ndarray, cam: int) -> np.ndarray:
        """Camera-1 coordinates (..., 3) -> camera `cam` (1-based) coordinates."""
        return (np.asarray(points) - self.centers[cam - 1]) @ self.rotations[cam - 1].T

    def all_cameras(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) camera-1 points -> (3, ..., 3) in each camera."""
        return np.stack([self.to_camera(points, cam) for cam in (1, 2, 3)])

    def frustum_margin(self, points: np.ndarray, cam: int, border_px: float = 4.0) -> np.ndarray:
        """Signed distance (mm) of camera-1 points to the nearest side plane of camera `cam`'s image
        (shrunk by `border_px`); a sphere of radius r projects inside the image iff this is >= r.
        Linear in the point, so the set of allowed palm positions is convex."""
        p = self.to_camera(points, cam)
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        c = self.camera
        half_u = c.width / 2.0 - border_px
        half_v = c.height / 2.0 - border_px
        du = (half_u * z - c.fx * np.abs(x + (c.ux - c.width / 2.0) * z / c.fx))
        dv = (half_v * z - c.fy * np.abs(y - (c.uy - c.height / 2.0) * z / c.fy))
        return np.minimum(du / np.hypot(c.fx, half_u), dv / np.hypot(c.fy, half_v))

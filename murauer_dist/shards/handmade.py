"""A small hand-made NYU-layout folder: blob "hands" (discs around the projected joints) in 3 cameras.

For tests and the shard benchmark when no dataset is at hand. Per camera and frame, a random palm
centre and 36 joints around it; the synthetic domain is the clean blob on an empty background, the
real domain adds a back wall, speckle and dropped pixels (so its PNGs are about as large as NYU's).
It is an NYU dataset by construction (datasets.NYU: its camera, joints and PNG encoding).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from murauer_dist.atomic import atomic_write_bytes
from murauer_dist import geometry
from murauer_dist.frames import nyu
from murauer_dist.frames.datasets import NYU

CAMERA = NYU.camera
CENTER_NYU_JOINT = NYU.joints.center_source
JOINT_RADIUS_MM = 16.0


def random_joints(rng: np.random.Generator, frames: int) -> dict[str, np.ndarray]:
    """joint_uvd / joint_xyz of shape (3, frames, 36, 3), palm centre = joint 32."""
    center = np.stack([rng.uniform(-80, 80, (3, frames)), rng.uniform(-60, 60, (3, frames)),
                       rng.uniform(550, 850, (3, frames))], axis=-1)
    offsets = np.clip(rng.normal(0.0, 35.0, (3, frames, 36, 3)), -80, 80) * np.array([1.0, 1.0, 0.4])
    offsets[:, :, CENTER_NYU_JOINT] = 0.0
    xyz = center[:, :, None, :] + offsets
    return {"joint_uvd": geometry.xyz_to_uvd(xyz, CAMERA), "joint_xyz": xyz}


def render_blob(joints_uvd: np.ndarray) -> np.ndarray:
    """uint16 depth (480, 640): a disc per joint at the joint's depth, nearer joints on top."""
    depth = np.zeros((CAMERA.height, CAMERA.width), dtype=np.float64)
    for u, v, d in sorted(joints_uvd.tolist(), key=lambda joint: -joint[2]):
        radius = JOINT_RADIUS_MM * CAMERA.fx / d
        rows = np.arange(max(int(v - radius), 0), min(int(v + radius) + 2, CAMERA.height))
        cols = np.arange(max(int(u - radius), 0), min(int(u + radius) + 2, CAMERA.width))
        if rows.size == 0 or cols.size == 0:
            continue
        inside = ((rows[:, None] + 0.5 - v) ** 2 + (cols[None, :] + 0.5 - u) ** 2) <= radius ** 2
        block = depth[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        block[inside] = d
    return np.round(depth).astype(np.uint16)


def sensor_view(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The 'real' domain: a slanted back wall 1.4-1.7 m away, 3 mm speckle on 2% of the pixels, 1% dropped.

    Its PNGs come out at 50-90 KB, like NYU's 640x480 depth PNGs.
    """
    rows, cols = np.mgrid[0:clean.shape[0], 0:clean.shape[1]]
    depth = np.where(clean > 0, clean, 1400.0 + 0.4 * rows + 0.2 * cols)
    depth += (rng.random(clean.shape) < 0.02) * rng.normal(0.0, 3.0, clean.shape)
    depth[rng.random(clean.shape) < 0.01] = 0
    return np.clip(np.round(depth), 0, 65535).astype(np.uint16)


def make_nyu_layout(root: str | os.PathLike, frames_train: int = 6, frames_test: int = 4, seed: int = 0) -> Path:
    """Write ROOT/{train,test}/ with depth_*, synthdepth_* PNGs and joint_data.mat; return ROOT."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, frames in (("train", frames_train), ("test", frames_test)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        joints = random_joints(rng, frames)
        for cam in range(1, NYU.num_cameras + 1):
            for frame in range(frames):
                clean = render_blob(joints["joint_uvd"][cam - 1, frame])
                for domain, depth in (("synth", clean), ("real", sensor_view(clean, rng))):
                    atomic_write_bytes(folder / nyu.depth_filename(domain, cam, frame), nyu.encode_depth_png(depth, NYU.depth_encoding))
        scipy.io.savemat(folder / "joint_data.mat", joints)
    return root

"""Original-style loader, for the loader benchmark only: one sample at a time on the CPU, the way the
original code did it (docs/method.md §2): decode the full 640x480 NYU PNG, add noise to the whole
map, rotate the whole map about the palm (nearest), crop the cube around the jittered centre, normalise.

The full-map rotation uses scipy.ndimage.affine_transform (order 0), a compiled warp like the
original's cv2.warpAffine.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage

from murauer_dist import geometry
from murauer_dist.frames.readers import open_split
from murauer_dist.frames.datasets import spec_of


class OriginalStyleLoader:
    """Synthetic (or real) crops with full augmentation from an NYU-layout root, per sample in numpy."""

    def __init__(self, root: str, cfg, split: str = "train", seed: int = 0):
        self.spec = spec_of(cfg)
        self.split = open_split(root, split, self.spec)
        self.cfg, self.rng = cfg, np.random.RandomState(seed)

    def _rotate(self, depth: np.ndarray, center_uv: np.ndarray, theta: float) -> np.ndarray:
        """Whole-map rotation by theta about the palm; pixels from outside become 0 (background)."""
        cos, sin = np.cos(theta), np.sin(theta)
        inverse = np.array([[cos, sin], [-sin, cos]])          # (row, col) = (v, u) order, R^T
        center_rc = center_uv[::-1]
        offset = center_rc - inverse @ center_rc
        return scipy.ndimage.affine_transform(depth, inverse, offset=offset, order=0, cval=0.0)

    def sample(self, index: int, cam: int, domain: str) -> dict:
        aug, data = self.cfg.augment, self.cfg.data
        depth = self.split.depth(index, cam, domain).astype(np.float32)
        depth += self.rng.normal(0.0, aug.depth_noise_mm, depth.shape).astype(np.float32)
        labels = self.split.labels(index, cam)
        uvd, center_uvd = labels.eval_uvd.copy(), labels.center_uvd
        theta = np.radians(self.rng.uniform(-aug.rotation_deg, aug.rotation_deg))
        depth = self._rotate(depth, center_uvd[:2], theta)
        offset = uvd[:, :2] - center_uvd[:2]
        uvd[:, 0] = center_uvd[0] + np.cos(theta) * offset[:, 0] - np.sin(theta) * offset[:, 1]
        uvd[:, 1] = center_uvd[1] + np.sin(theta) * offset[:, 0] + np.cos(theta) * offset[:, 1]
        camera = self.spec.camera
        xyz = geometry.uvd_to_xyz(uvd, camera)
        center_xyz = labels.center_xyz + self.rng.normal(0.0, aug.center_jitter_mm, 3)
        center = geometry.xyz_to_uvd(center_xyz, camera)
        window = geometry.CropWindow.around(center, data.cube_mm, data.crop_size, camera=camera)
        crop = geometry.crop_depth(depth, window, frame=str(index))
        return {"depth": geometry.normalize_depth(crop, center_xyz[2], data.cube_mm)[None],
                "target": geometry.normalize_joints(xyz, center_xyz, data.cube_mm).astype(np.float32)}

    def batch(self, size: int, domain: str = "synth") -> dict:
        """`size` samples of random frames and random camera slots, stacked."""
        frames = self.rng.randint(0, len(self.split), size)
        cams = self.rng.randint(1, self.spec.num_cameras + 1, size)
        samples = [self.sample(int(f), int(c), domain) for f, c in zip(frames, cams)]
        return {key: np.stack([s[key] for s in samples]) for key in samples[0]}

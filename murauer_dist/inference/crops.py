"""Network crops of full depth frames (docs/method.md §2 steps 6-7): the pose network's and the
centre refiner's input, around a centre (u, v, d) with a cube in mm."""
from __future__ import annotations

import numpy as np

from murauer_dist.frames.datasets import Camera
from murauer_dist.geometry import MIN_RATIO_INSIDE, CropWindow, crop_depth, crop_scale, normalize_depth


def frame_crop(depth_mm: np.ndarray, center_uvd: np.ndarray, cube_mm: float, crop_size: int, camera: Camera,
               frame: str = "?") -> np.ndarray:
    """The normalised network crop (C, C) float32 of a full frame around a centre (docs/method.md §2);
    a CropError naming `frame` when the centre is off the image or too little of the window inside it."""
    window = CropWindow.around(center_uvd, cube_mm, crop_size, camera=camera)
    crop = crop_depth(np.asarray(depth_mm), window, frame=frame)
    return normalize_depth(crop, center_uvd[2], cube_mm)


def frame_crops(frames, centers_uvd: np.ndarray, cube_mm, crop_size: int,
                camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """`frame_crop` of many frames at once, the same values: (crops (N, C, C) float32, usable (N,) bool).

    A frame whose crop `frame_crop` refuses (a CropError: the centre off the image, too little of the
    window inside it) is not usable; its crop is background (+1). The window arithmetic and the
    normalisation run once for the batch; only the pixel lookup is per frame. `cube_mm`: one cube, or
    one per frame (N,)."""
    centers = np.asarray(centers_uvd, dtype=np.float64).reshape(-1, 3)
    crops = np.ones((len(centers), crop_size, crop_size), dtype=np.float32)
    usable = np.zeros(len(centers), dtype=bool)
    if not len(centers):
        return crops, usable
    per_frame = np.ndim(cube_mm) > 0
    cubes = np.asarray(cube_mm, dtype=np.float64).reshape(-1) if per_frame else cube_mm
    scale = crop_scale(centers[:, 2], cubes, crop_size, camera)            # as CropWindow.around
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
    crops[usable] = normalize_depth(crops[usable], centers[usable, 2][:, None, None],
                                    cubes[usable][:, None, None] if per_frame else cubes)
    return crops, usable

"""Where is the hand? The centre of the closest object in a raw depth frame, without ground truth.

DeepPrior++ (Oberweger & Lepetit, 2017) and PreView (Poier et al., 2018) crop around the centre of
mass of the closest object: the nearest valid depth d_min, the pixels with depth in
[d_min, d_min + band], their mean (u, v, d), back-projected with the camera. `centre_of_mass` does
that, inside a cube of edge `band_mm` in front of the closest object, with three rules for scenes
where the closest thing is not the hand:

1. objects: the valid pixels split into 8-connected objects wherever neighbouring depths differ by
   more than `edge_mm`; objects under `min_pixels` pixels are noise (speckle, flying pixels). An
   object's d_min is its (min_pixels // 10)-th nearest depth, so single outliers do not move it.
2. surfaces: the nearest object whose nearest part touches the image border may be a supporting
   surface. If most of its pixels in the band lie on one plane (RANSAC, then least squares;
   `PLANE_TOL_MM`, wider with z^2 as the sensor noise) and that plane's pieces (the objects mostly on
   it: a table cut in two by the forearm) extend more than `surface_mm` across (second principal
   axis), they are removed (a table, floor or wall) and the objects are found again.
3. arms: an object whose nearest part touches the image border or (within ATTACH_PX) a removed
   surface enters the view from outside (a forearm nearer than its hand): the cube is centred on its
   pixel farthest from where it enters (the hand end) instead of on its nearest pixels.

The hand is then every valid pixel (removed surfaces excepted) in the cube: laterally within
band/2 of the seed (the mean of the object's nearest pixels, or the arm's far end), in depth within
[d_front, d_front + band], d_front the object's nearest depth there. Its centre of mass is a crop
centre a few centimetres from the palm (it includes fingers and wrist); the learned refiner
(refiner.py) takes it the rest of the way.

Measured on the 800 test frames of the embedded procedural data (`murauer-dist demo`; a table below
the hand in about a third of the scenes, a forearm that leaves the image, a body behind): the plain
closest-object centre of mass lies 167 mm (median) from the palm centre, 73 % of the frames over
100 mm; this one 33 mm (mean 35 mm), 0.75 % of the frames over 100 mm (all of them a forearm nearer
to the camera than its hand). band_mm = 250 rather than the cube's 300 keeps a body just behind the
hand out of the cube (frames over 100 mm on held-out train frames: 1.2 % with 300, 0.2 % with 250).

Speed: `centre_of_mass` runs rules 1-3 on a grid of one pixel per 4x4 block (objects labelled once
on 2x2 cells) and the cube's centre of mass at full resolution in a window around
the seed (localize/block_search.py); `full_resolution_centre` runs every step on every pixel and is the
reference it is tested against. Side by side on a shared 2-core CPU under load ~3: 3.6-4.4 ms per
640x480 frame against 45-60 ms (`murauer-dist bench infer`, docs/benchmarks.md). The tolerance
(tests/test_localize.py), measured on 400 procedural frames: the two centres lie a median 0.4 mm
apart, 90 % of them within 5 mm, 99 % within 25 mm, and as far from the labelled palm centre on
average; where two objects' nearest depths tie, either may be taken (1 frame in 128 of another
set, 230 mm apart).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from murauer_dist.frames.datasets import Camera
from murauer_dist.errors import UserError
from murauer_dist.geometry import uvd_to_xyz
from murauer_dist.localize.block_search import MIN_BLOCKS, SEARCH_SCALE, block_centre
from murauer_dist.localize.objects import (ATTACH_PX, BORDER_PX, depth_edges, find_object, kth_nearest,
                                           objects_nearest_first, seed_of)


class NoHandError(UserError, ValueError):
    """A frame in which no object is found in front of the camera."""


@dataclass(frozen=True)
class CentreSettings:
    """The knobs of `centre_of_mass` (config section `localize`)."""

    band_mm: float = 250.0
    min_pixels: int = 100
    edge_mm: float = 30.0
    surface_mm: float = 150.0

    @classmethod
    def from_config(cls, cfg) -> "CentreSettings":
        section = cfg.localize
        return cls(band_mm=float(section.band_mm), min_pixels=int(section.min_pixels),
                   edge_mm=float(section.edge_mm), surface_mm=float(section.surface_mm))


@dataclass(frozen=True)
class Detection:
    """The centre of the hand in one frame: uvd (pixels, pixels, mm) and xyz (mm, camera axes)."""

    center_uvd: np.ndarray
    center_xyz: np.ndarray
    front_mm: float          # d_front: the depth of the cube's front face
    pixels: int              # pixels averaged
    surfaces: int            # planes removed (tables, walls)
    entered: bool            # the object enters from outside the view (seeded at its far end)


def centre_of_mass(depth_mm: np.ndarray, camera: Camera, settings: CentreSettings = CentreSettings(),
                   frame: str = "?", search_scale: int = SEARCH_SCALE) -> Detection:
    """The hand's centre in one depth frame (H, W) in mm (0 = no depth); see the module doc.

    The object search runs on blocks of search_scale x search_scale pixels and the cube's centre of
    mass at full resolution in a window around the seed (`block_centre`); search_scale 1, and any
    frame the block search finds no hand in, take `full_resolution_centre`. Raises NoHandError naming
    `frame` when no object of settings.min_pixels pixels is in view.
    """
    depth = np.asarray(depth_mm)
    if depth.ndim != 2:
        raise ValueError(f"frame {frame}: a depth frame is (H, W), got shape {depth.shape}")
    if search_scale > 1 and min(depth.shape) >= MIN_BLOCKS * search_scale:
        found = block_centre(depth, camera, settings, int(search_scale))
        if found is not None:
            return Detection(center_xyz=uvd_to_xyz(found["center_uvd"], camera), **found)
    return full_resolution_centre(depth, camera, settings, frame)


def full_resolution_centre(depth_mm: np.ndarray, camera: Camera, settings: CentreSettings = CentreSettings(),
                           frame: str = "?") -> Detection:
    """`centre_of_mass` with every step on every pixel: the reference the block search is tested against."""
    depth = np.asarray(depth_mm, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"frame {frame}: a depth frame is (H, W), got shape {depth.shape}")
    height, width = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, 0.0)
    rows, cols = np.mgrid[0:height, 0:width]
    points = uvd_to_xyz(np.stack([cols + 0.5, rows + 0.5, depth], axis=-1), camera)
    border = np.ones((height, width), bool)
    border[BORDER_PX:height - BORDER_PX, BORDER_PX:width - BORDER_PX] = False
    smooth = valid & (depth_edges(depth) < settings.edge_mm)
    k = max(1, settings.min_pixels // 10)
    found = find_object(depth, valid, smooth, points, border, settings,
                         lambda mask: objects_nearest_first(mask, depth, settings.min_pixels, k))
    if found is None:
        nearest = f"{depth[valid].min():.0f} mm" if valid.any() else "none: every pixel is 0"
        raise NoHandError(f"frame {frame}: no hand found: no object of at least {settings.min_pixels} pixels in "
                          f"view (nearest valid depth {nearest}); check the frame, or lower localize.min_pixels")
    removed = found.removed
    attached = border | (ndimage.binary_dilation(removed, iterations=ATTACH_PX) if removed.any() else removed)
    seed, entered = seed_of(found, attached, points)
    half = settings.band_mm / 2.0
    lateral = valid & ~removed & (np.abs(points[..., 0] - seed[0]) <= half) & (np.abs(points[..., 1] - seed[1]) <= half)
    front = kth_nearest(depth[lateral & found.obj], k, found.d_min)
    hand = lateral & (depth >= front) & (depth <= front + settings.band_mm)
    count = int(hand.sum())
    if count < settings.min_pixels:
        raise NoHandError(f"frame {frame}: no hand found: only {count} pixels in the {settings.band_mm:.0f} mm cube "
                          f"in front of the nearest object at {front:.0f} mm (need {settings.min_pixels})")
    hand_rows, hand_cols = np.nonzero(hand)
    uvd = np.array([hand_cols.mean() + 0.5, hand_rows.mean() + 0.5, depth[hand].mean()])
    return Detection(center_uvd=uvd, center_xyz=uvd_to_xyz(uvd, camera), front_mm=front, pixels=count,
                     surfaces=found.surfaces, entered=entered)

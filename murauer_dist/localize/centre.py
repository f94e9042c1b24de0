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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from murauer_dist.datasets import Camera
from murauer_dist.errors import UserError
from murauer_dist.geometry import uvd_to_xyz

PLANE_TOL_MM = 6.0           # a pixel within this distance of a plane lies on it (up to NOISE_REFERENCE_MM away)
NOISE_REFERENCE_MM = 800.0
PLANE_SHARE = 0.5            # share of an object's band pixels on one plane that makes it a surface candidate
NEAR_TOL_MM = 15.0           # an object's "nearest part": its pixels within this of its d_min
BORDER_PX = 2                # the image border ring (edge dropout leaves the outermost pixel empty at times)
ATTACH_PX = 6                # an object this close to a removed surface stands on it (edge pixels lie between)
RANSAC_TRIES = 64
RANSAC_POINTS = 4000         # points a plane is fitted to (a random subset of larger objects)
MAX_SURFACES = 8             # surfaces removed at most before giving up


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


def _depth_edges(depth: np.ndarray) -> np.ndarray:
    """Per pixel, the largest absolute depth step to a 4-neighbour."""
    step = np.zeros_like(depth)
    for axis in (0, 1):
        diff = np.abs(np.diff(depth, axis=axis))
        lead = [slice(None)] * 2
        lead[axis] = slice(1, None)
        step[tuple(lead)] = np.maximum(step[tuple(lead)], diff)
        lead[axis] = slice(None, -1)
        step[tuple(lead)] = np.maximum(step[tuple(lead)], diff)
    return step


def _objects(mask: np.ndarray, depth: np.ndarray, min_pixels: int, k: int):
    """(labels, [(label, d_min)] of the objects of >= min_pixels pixels, nearest first)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return labels, []
    ids, depths = labels[mask], depth[mask]
    order = np.lexsort((depths, ids))
    ids, depths = ids[order], depths[order]
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    starts = np.searchsorted(ids, np.arange(1, count + 1))
    big = np.flatnonzero(sizes >= min_pixels)
    kth = depths[starts[big] + np.minimum(k, sizes[big]) - 1]
    return labels, [(int(big[i]) + 1, float(kth[i])) for i in np.argsort(kth, kind="stable")]


def _plane(points: np.ndarray, rng: np.random.Generator):
    """RANSAC plane (normal, point, inlier share) of (N, 3) points, or None."""
    best, best_count = None, 0
    for _ in range(RANSAC_TRIES):
        a, b, c = points[rng.choice(len(points), 3, replace=False)]
        normal = np.cross(b - a, c - a)
        length = np.linalg.norm(normal)
        if length < 1e-9:
            continue
        normal /= length
        count = int((np.abs((points - a) @ normal) < PLANE_TOL_MM).sum())
        if count > best_count:
            best, best_count = (normal, a), count
    return None if best is None else (*best, best_count / len(points))


def _fit_plane(points: np.ndarray, rng: np.random.Generator):
    """(normal, centre) of the plane most of the points lie on (RANSAC, then least squares on its inliers),
    or None when no plane holds PLANE_SHARE of them."""
    if len(points) < 3:
        return None
    if len(points) > RANSAC_POINTS:
        points = points[rng.choice(len(points), RANSAC_POINTS, replace=False)]
    found = _plane(points, rng)
    if found is None or found[2] < PLANE_SHARE:
        return None
    normal, anchor, _ = found
    inliers = points[np.abs((points - anchor) @ normal) < PLANE_TOL_MM]
    center = inliers.mean(axis=0)
    return np.linalg.eigh(np.cov((inliers - center).T))[1][:, 0], center     # the axis of least spread


def _width(points: np.ndarray, rng: np.random.Generator) -> float:
    """About the extent of planar points across (4 sigma along their second principal axis), mm."""
    if len(points) < 3:
        return 0.0
    if len(points) > RANSAC_POINTS:
        points = points[rng.choice(len(points), RANSAC_POINTS, replace=False)]
    spread = np.linalg.eigvalsh(np.cov((points - points.mean(axis=0)).T))
    return 4.0 * float(np.sqrt(max(spread[1], 0.0)))


def centre_of_mass(depth_mm: np.ndarray, camera: Camera, settings: CentreSettings = CentreSettings(),
                   frame: str = "?") -> Detection:
    """The hand's centre in one depth frame (H, W) in mm (0 = no depth); see the module doc.

    Raises NoHandError naming `frame` when no object of settings.min_pixels pixels is in view.
    """
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
    smooth = valid & (_depth_edges(depth) < settings.edge_mm)
    k = max(1, settings.min_pixels // 10)
    # sensor noise grows with z^2: a removed plane takes its far pixels with a wider tolerance
    plane_tolerance = PLANE_TOL_MM * np.maximum(1.0, (depth / NOISE_REFERENCE_MM) ** 2)
    removed = np.zeros_like(valid)
    rng = np.random.default_rng(0)
    chosen, surfaces = None, 0
    for _ in range(MAX_SURFACES + 1):
        labels, objects = _objects(smooth & ~removed, depth, settings.min_pixels, k)
        surface = None
        for label, d_min in objects:
            obj = labels == label
            near = obj & (depth <= d_min + NEAR_TOL_MM)
            if settings.surface_mm > 0 and (near & border).any():
                band = depth <= d_min + settings.band_mm
                plane = _fit_plane(points[obj & band], rng)
                if plane is not None:
                    normal, anchor = plane
                    on_plane = smooth & ~removed & (np.abs((points - anchor) @ normal) < plane_tolerance)
                    # this object and the other pieces of the same surface (objects mostly on the plane)
                    share = np.bincount(labels[on_plane], minlength=labels.max() + 1) / np.maximum(
                        np.bincount(labels.ravel(), minlength=labels.max() + 1), 1)
                    pieces = share >= PLANE_SHARE
                    pieces[0], pieces[label] = False, True
                    surface = on_plane & pieces[labels]
                    if _width(points[surface & band], rng) >= settings.surface_mm:
                        removed |= surface
                        surfaces += 1
                        break
                    surface = None
            chosen = (obj, near, d_min)
            break
        if surface is None:
            break
    if chosen is None:
        nearest = f"{depth[valid].min():.0f} mm" if valid.any() else "none: every pixel is 0"
        raise NoHandError(f"frame {frame}: no hand found: no object of at least {settings.min_pixels} pixels in "
                          f"view (nearest valid depth {nearest}); check the frame, or lower localize.min_pixels")
    obj, near, d_min = chosen
    attached = border | (ndimage.binary_dilation(removed, iterations=ATTACH_PX) if removed.any() else removed)
    entered = bool((near & attached).any())
    if entered:
        # the far end of the object (in the image) from where it enters the view
        distance = ndimage.distance_transform_edt(~(obj & attached))
        seed_index = np.unravel_index(np.argmax(np.where(obj, distance, -1.0)), depth.shape)
        seed = points[seed_index]
    else:
        seed = points[near].mean(axis=0)
    half = settings.band_mm / 2.0
    lateral = valid & ~removed & (np.abs(points[..., 0] - seed[0]) <= half) & (np.abs(points[..., 1] - seed[1]) <= half)
    object_there = np.sort(depth[lateral & obj])
    front = float(object_there[min(k, len(object_there)) - 1]) if len(object_there) else d_min
    hand = lateral & (depth >= front) & (depth <= front + settings.band_mm)
    count = int(hand.sum())
    if count < settings.min_pixels:
        raise NoHandError(f"frame {frame}: no hand found: only {count} pixels in the {settings.band_mm:.0f} mm cube "
                          f"in front of the nearest object at {front:.0f} mm (need {settings.min_pixels})")
    hand_rows, hand_cols = np.nonzero(hand)
    uvd = np.array([hand_cols.mean() + 0.5, hand_rows.mean() + 0.5, depth[hand].mean()])
    return Detection(center_uvd=uvd, center_xyz=uvd_to_xyz(uvd, camera), front_mm=front, pixels=count,
                     surfaces=surfaces, entered=entered)

"""Rules 1-3 of localize/centre.py on one grid of pixels (full resolution or one pixel per block):
objects split at depth edges, supporting surfaces (RANSAC planes) removed, and the seed of the
hand's cube (the nearest part of the nearest object, or an arm's far end).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

PLANE_TOL_MM = 6.0           # a pixel within this distance of a plane lies on it (up to NOISE_REFERENCE_MM away)
NOISE_REFERENCE_MM = 800.0
PLANE_SHARE = 0.5            # share of an object's band pixels on one plane that makes it a surface candidate
NEAR_TOL_MM = 15.0           # an object's "nearest part": its pixels within this of its d_min
BORDER_PX = 2                # the image border ring (edge dropout leaves the outermost pixel empty at times)
ATTACH_PX = 6                # an object this close to a removed surface stands on it (edge pixels lie between)
RANSAC_TRIES = 64
RANSAC_POINTS = 4000         # points a plane is fitted to (a random subset of larger objects)
MAX_SURFACES = 8             # surfaces removed at most before giving up
GRID_RANSAC_POINTS = 500     # RANSAC on the block grid scores the candidate planes on this many points
EIGHT = np.ones((3, 3), bool)  # 8-connectivity


def depth_edges(depth: np.ndarray) -> np.ndarray:
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


def objects_nearest_first(mask: np.ndarray, depth: np.ndarray, min_pixels: int, k: int):
    """(labels, [(label, d_min)] of the objects of >= min_pixels pixels, nearest first)."""
    labels, count = ndimage.label(mask, structure=EIGHT)
    if count == 0:
        return labels, []
    ids, depths = labels[mask], depth[mask]
    order = np.lexsort((depths, ids))
    return labels, nearest_first(ids[order], depths[order], count, min_pixels, k)


def nearest_first(ids: np.ndarray, depths: np.ndarray, count: int, min_pixels: int, k: int) -> list:
    """[(label, d_min)] of the objects of >= min_pixels pixels, nearest first, from their pixels' labels
    and depths sorted by label, then depth; d_min is an object's k-th nearest depth."""
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    starts = np.searchsorted(ids, np.arange(1, count + 1))
    big = np.flatnonzero(sizes >= min_pixels)
    kth = depths[starts[big] + np.minimum(k, sizes[big]) - 1]
    return [(int(big[i]) + 1, float(kth[i])) for i in np.argsort(kth, kind="stable")]


def plane_ransac(points: np.ndarray, rng: np.random.Generator):
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


def plane_at_once(points: np.ndarray, rng: np.random.Generator):
    """`plane_ransac` with all RANSAC_TRIES triples drawn and scored in one go, on at most GRID_RANSAC_POINTS
    points (triples may repeat a point: those give no normal and are skipped, as collinear ones)."""
    if len(points) > GRID_RANSAC_POINTS:
        points = points[rng.integers(0, len(points), size=GRID_RANSAC_POINTS)]
    a, b, c = points[rng.integers(0, len(points), size=(3, RANSAC_TRIES))]
    normals = np.cross(b - a, c - a)
    length = np.linalg.norm(normals, axis=1)
    usable = length >= 1e-9
    if not usable.any():
        return None
    normals, a = normals[usable] / length[usable, None], a[usable]
    counts = (np.abs(points @ normals.T - np.einsum("ij,ij->i", a, normals)) < PLANE_TOL_MM).sum(axis=0)
    best = int(np.argmax(counts))
    return normals[best], a[best], counts[best] / len(points)


def fit_plane(points: np.ndarray, rng: np.random.Generator, ransac=plane_ransac):
    """(normal, centre) of the plane most of the points lie on (RANSAC, then least squares on its inliers),
    or None when no plane holds PLANE_SHARE of them."""
    if len(points) < 3:
        return None
    if len(points) > RANSAC_POINTS:
        points = points[rng.choice(len(points), RANSAC_POINTS, replace=False)]
    found = ransac(points, rng)
    if found is None or found[2] < PLANE_SHARE:
        return None
    normal, anchor, _ = found
    inliers = points[np.abs((points - anchor) @ normal) < PLANE_TOL_MM]
    center = inliers.mean(axis=0)
    return np.linalg.eigh(np.cov((inliers - center).T))[1][:, 0], center     # the axis of least spread


def width_across(points: np.ndarray, rng: np.random.Generator) -> float:
    """About the extent of planar points across (4 sigma along their second principal axis), mm."""
    if len(points) < 3:
        return 0.0
    if len(points) > RANSAC_POINTS:
        points = points[rng.choice(len(points), RANSAC_POINTS, replace=False)]
    spread = np.linalg.eigvalsh(np.cov((points - points.mean(axis=0)).T))
    return 4.0 * float(np.sqrt(max(spread[1], 0.0)))


class Search:
    """The object `find_object` chose on one pixel grid (full resolution or blocks)."""

    def __init__(self, obj, near, d_min, removed, surfaces, planes):
        self.obj, self.near, self.d_min, self.removed = obj, near, d_min, removed
        self.surfaces = surfaces
        self.planes = planes     # (normal, anchor) of each removed surface


def plane_tolerance(depth: np.ndarray) -> np.ndarray:
    """PLANE_TOL_MM, widened with z^2 as the sensor noise: a removed plane takes its far pixels too."""
    return PLANE_TOL_MM * np.maximum(1.0, (depth / NOISE_REFERENCE_MM) ** 2)


def find_object(depth, valid, smooth, points, border, settings, objects, ransac=plane_ransac):
    """Rules 1 and 2 of the module doc on one pixel grid: the nearest object once supporting surfaces
    are removed, or None when there is no object. `objects(mask)` gives (labels, [(label, d_min)] of the
    objects large enough, nearest first)."""
    tolerance = plane_tolerance(depth)
    removed = np.zeros_like(valid)
    rng = np.random.default_rng(0)
    chosen, surfaces, planes = None, 0, []
    for _ in range(MAX_SURFACES + 1):
        labels, nearest_first = objects(smooth & ~removed)
        surface = None
        for label, d_min in nearest_first:
            obj = labels == label
            near = obj & (depth <= d_min + NEAR_TOL_MM)
            if settings.surface_mm > 0 and (near & border).any():
                band = depth <= d_min + settings.band_mm
                plane = fit_plane(points[obj & band], rng, ransac)
                if plane is not None:
                    normal, anchor = plane
                    on_plane = smooth & ~removed & (np.abs((points - anchor) @ normal) < tolerance)
                    # this object and the other pieces of the same surface (objects mostly on the plane)
                    share = np.bincount(labels[on_plane], minlength=labels.max() + 1) / np.maximum(
                        np.bincount(labels.ravel(), minlength=labels.max() + 1), 1)
                    pieces = share >= PLANE_SHARE
                    pieces[0], pieces[label] = False, True
                    surface = on_plane & pieces[labels]
                    if width_across(points[surface & band], rng) >= settings.surface_mm:
                        removed |= surface
                        surfaces += 1
                        planes.append(plane)
                        break
                    surface = None
            chosen = (obj, near, d_min)
            break
        if surface is None:
            break
    return None if chosen is None else Search(*chosen, removed, surfaces, planes)


def seed_of(found: Search, attached: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, bool]:
    """Rule 3: (the cube's seed xyz, whether the object enters the view from outside)."""
    entered = bool((found.near & attached).any())
    if entered:
        # the far end of the object (in the image) from where it enters the view
        distance = ndimage.distance_transform_edt(~(found.obj & attached))
        seed_index = np.unravel_index(np.argmax(np.where(found.obj, distance, -1.0)), found.obj.shape)
        return points[seed_index], True
    return points[found.near].mean(axis=0), False


def kth_nearest(depths: np.ndarray, k: int, default: float) -> float:
    """The k-th smallest value (the largest when fewer), or `default` for none."""
    if not len(depths):
        return float(default)
    index = min(k, len(depths)) - 1
    return float(np.partition(depths, index)[index])

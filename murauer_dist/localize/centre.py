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
on 2x2 cells, `_smooth_cells`) and the cube's centre of mass at full resolution in a window around
the seed (`_block_centre`); `full_resolution_centre` runs every step on every pixel and is the
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
SEARCH_SCALE = 4             # the object search runs on blocks of 4x4 pixels (16x fewer; see _block_centre)
MIN_BLOCKS = 16              # frames under 16 blocks across are searched at full resolution
FRONT_MARGIN_MM = 20.0       # the window covers the grid's cube depth range +- this (again if the front is outside)
GRID_RANSAC_POINTS = 500     # RANSAC on the block grid scores the candidate planes on this many points
UINT16_MAX = 2 ** 16 - 1     # the block search works on whole-mm depths in uint16
EIGHT = np.ones((3, 3), bool)  # 8-connectivity


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
    labels, count = ndimage.label(mask, structure=EIGHT)
    if count == 0:
        return labels, []
    ids, depths = labels[mask], depth[mask]
    order = np.lexsort((depths, ids))
    return labels, _nearest_first(ids[order], depths[order], count, min_pixels, k)


def _nearest_first(ids: np.ndarray, depths: np.ndarray, count: int, min_pixels: int, k: int) -> list:
    """[(label, d_min)] of the objects of >= min_pixels pixels, nearest first, from their pixels' labels
    and depths sorted by label, then depth; d_min is an object's k-th nearest depth."""
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    starts = np.searchsorted(ids, np.arange(1, count + 1))
    big = np.flatnonzero(sizes >= min_pixels)
    kth = depths[starts[big] + np.minimum(k, sizes[big]) - 1]
    return [(int(big[i]) + 1, float(kth[i])) for i in np.argsort(kth, kind="stable")]


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


def _plane_at_once(points: np.ndarray, rng: np.random.Generator):
    """`_plane` with all RANSAC_TRIES triples drawn and scored in one go, on at most GRID_RANSAC_POINTS
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


def _fit_plane(points: np.ndarray, rng: np.random.Generator, ransac=_plane):
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


def _width(points: np.ndarray, rng: np.random.Generator) -> float:
    """About the extent of planar points across (4 sigma along their second principal axis), mm."""
    if len(points) < 3:
        return 0.0
    if len(points) > RANSAC_POINTS:
        points = points[rng.choice(len(points), RANSAC_POINTS, replace=False)]
    spread = np.linalg.eigvalsh(np.cov((points - points.mean(axis=0)).T))
    return 4.0 * float(np.sqrt(max(spread[1], 0.0)))


class _Search:
    """The object `_find_object` chose on one pixel grid (full resolution or blocks)."""

    def __init__(self, obj, near, d_min, removed, surfaces, planes):
        self.obj, self.near, self.d_min, self.removed = obj, near, d_min, removed
        self.surfaces = surfaces
        self.planes = planes     # (normal, anchor) of each removed surface


def _plane_tolerance(depth: np.ndarray) -> np.ndarray:
    """PLANE_TOL_MM, widened with z^2 as the sensor noise: a removed plane takes its far pixels too."""
    return PLANE_TOL_MM * np.maximum(1.0, (depth / NOISE_REFERENCE_MM) ** 2)


def _find_object(depth, valid, smooth, points, border, settings: CentreSettings, objects, ransac=_plane):
    """Rules 1 and 2 of the module doc on one pixel grid: the nearest object once supporting surfaces
    are removed, or None when there is no object. `objects(mask)` gives (labels, [(label, d_min)] of the
    objects large enough, nearest first)."""
    plane_tolerance = _plane_tolerance(depth)
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
                plane = _fit_plane(points[obj & band], rng, ransac)
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
                        planes.append(plane)
                        break
                    surface = None
            chosen = (obj, near, d_min)
            break
        if surface is None:
            break
    return None if chosen is None else _Search(*chosen, removed, surfaces, planes)


def _seed(found: _Search, attached: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, bool]:
    """Rule 3: (the cube's seed xyz, whether the object enters the view from outside)."""
    entered = bool((found.near & attached).any())
    if entered:
        # the far end of the object (in the image) from where it enters the view
        distance = ndimage.distance_transform_edt(~(found.obj & attached))
        seed_index = np.unravel_index(np.argmax(np.where(found.obj, distance, -1.0)), found.obj.shape)
        return points[seed_index], True
    return points[found.near].mean(axis=0), False


def _kth_nearest(depths: np.ndarray, k: int, default: float) -> float:
    """The k-th smallest value (the largest when fewer), or `default` for none."""
    if not len(depths):
        return float(default)
    index = min(k, len(depths)) - 1
    return float(np.partition(depths, index)[index])


def centre_of_mass(depth_mm: np.ndarray, camera: Camera, settings: CentreSettings = CentreSettings(),
                   frame: str = "?", search_scale: int = SEARCH_SCALE) -> Detection:
    """The hand's centre in one depth frame (H, W) in mm (0 = no depth); see the module doc.

    The object search runs on blocks of search_scale x search_scale pixels and the cube's centre of
    mass at full resolution in a window around the seed (`_block_centre`); search_scale 1, and any
    frame the block search finds no hand in, take `full_resolution_centre`. Raises NoHandError naming
    `frame` when no object of settings.min_pixels pixels is in view.
    """
    depth = np.asarray(depth_mm)
    if depth.ndim != 2:
        raise ValueError(f"frame {frame}: a depth frame is (H, W), got shape {depth.shape}")
    if search_scale > 1 and min(depth.shape) >= MIN_BLOCKS * search_scale:
        found = _block_centre(depth, camera, settings, int(search_scale))
        if found is not None:
            return found
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
    smooth = valid & (_depth_edges(depth) < settings.edge_mm)
    k = max(1, settings.min_pixels // 10)
    found = _find_object(depth, valid, smooth, points, border, settings,
                         lambda mask: _objects(mask, depth, settings.min_pixels, k))
    if found is None:
        nearest = f"{depth[valid].min():.0f} mm" if valid.any() else "none: every pixel is 0"
        raise NoHandError(f"frame {frame}: no hand found: no object of at least {settings.min_pixels} pixels in "
                          f"view (nearest valid depth {nearest}); check the frame, or lower localize.min_pixels")
    removed = found.removed
    attached = border | (ndimage.binary_dilation(removed, iterations=ATTACH_PX) if removed.any() else removed)
    seed, entered = _seed(found, attached, points)
    half = settings.band_mm / 2.0
    lateral = valid & ~removed & (np.abs(points[..., 0] - seed[0]) <= half) & (np.abs(points[..., 1] - seed[1]) <= half)
    front = _kth_nearest(depth[lateral & found.obj], k, found.d_min)
    hand = lateral & (depth >= front) & (depth <= front + settings.band_mm)
    count = int(hand.sum())
    if count < settings.min_pixels:
        raise NoHandError(f"frame {frame}: no hand found: only {count} pixels in the {settings.band_mm:.0f} mm cube "
                          f"in front of the nearest object at {front:.0f} mm (need {settings.min_pixels})")
    hand_rows, hand_cols = np.nonzero(hand)
    uvd = np.array([hand_cols.mean() + 0.5, hand_rows.mean() + 0.5, depth[hand].mean()])
    return Detection(center_uvd=uvd, center_xyz=uvd_to_xyz(uvd, camera), front_mm=front, pixels=count,
                     surfaces=found.surfaces, entered=entered)


# ---- the block search ---------------------------------------------------------------------------------

def _as_uint16_mm(depth: np.ndarray) -> np.ndarray:
    """Depth in whole mm as uint16 (a uint16 frame as it is), 0 where there is none (NaN, inf, <= 0)."""
    if depth.dtype == np.uint16:
        return depth
    values = np.asarray(depth, dtype=np.float64)
    values = np.where(np.isfinite(values) & (values > 0), values, 0.0)
    return np.rint(np.minimum(values, UINT16_MAX)).astype(np.uint16)


def _rough_pixels(mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Pixels without depth or with a 4-neighbour depth step >= edge_mm (the complement of `smooth`).

    uint16 differences wrap around: |a - b| >= t + 1 exactly when (a - b + t) mod 2^16 >= 2t + 1,
    for |a - b| <= 2^16 - 1 - t (every pair but a missing pixel next to one over 65 m); one
    subtraction and one comparison per neighbour pair, on the flat frame (contiguous)."""
    t = max(0, int(np.ceil(edge_mm)) - 1)           # whole-mm steps: step >= edge_mm <=> step >= t + 1
    if 2 * t + 1 > UINT16_MAX // 2:
        return ~(_depth_edges(mm.astype(np.float64)) < edge_mm) | (mm == 0)
    height, width = mm.shape
    flat = np.ascontiguousarray(mm).ravel()
    rough = flat == 0
    for lag in (1, width):                          # the right and the lower neighbour
        step = flat[lag:] - flat[:-lag]
        step += np.uint16(t)
        edge = step >= 2 * t + 1
        if lag == 1:
            edge[width - 1::width] = False          # a row's last pixel and the next row's first
        rough[lag:] |= edge
        rough[:-lag] |= edge
    return rough.reshape(height, width)


def _smooth_cells(rough: np.ndarray) -> np.ndarray:
    """(H // 2, W // 2): the 2x2 cells an object may be labelled on, 4-connected.

    A 2x2 cell counts when at most one of its pixels is rough. Its smooth pixels are then 8-neighbours
    of one another, and two 4-adjacent counted cells always hold a pair of 8-neighbouring smooth
    pixels (each has one in every row or column it shares with the other): the cells' 4-connected
    objects never join what full resolution keeps apart. A single missing pixel (structured-light
    dropout) takes one cell, not the three that requiring all four pixels smooth would."""
    rows, cols = rough.shape[0] // 2, rough.shape[1] // 2
    rough = np.ascontiguousarray(rough[:rows * 2, :cols * 2])
    # a row's two neighbouring bools read as one uint16 (b0 + 256 b1); adding the next row's keeps each byte <= 2
    pairs = rough.view(np.uint16).reshape(rows, 2, cols)
    both_rows = pairs[:, 0] + pairs[:, 1]
    return (both_rows & 0xFF) + (both_rows >> 8) <= 1


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` grown by `radius` pixels in every direction (a square; shifted ORs, cheap on the grid:
    scipy.ndimage.maximum_filter gives the same masks but made centre_of_mass 7 % slower)."""
    grown = mask.copy()
    for axis in (0, 1):
        source = grown.copy()
        for shift in range(1, radius + 1):
            lead, trail = [slice(None)] * 2, [slice(None)] * 2
            lead[axis], trail[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(lead)] |= source[tuple(trail)]
            grown[tuple(trail)] |= source[tuple(lead)]
    return grown


class _Window:
    """A rectangle of the full frame: rows r0:r1, columns c0:c1, with pixel-centre coordinates."""

    def __init__(self, r0: int, r1: int, c0: int, c1: int):
        self.r0, self.r1, self.c0, self.c1 = r0, r1, c0, c1
        self.slices = (slice(r0, r1), slice(c0, c1))
        self.rows, self.cols = np.arange(r0, r1), np.arange(c0, c1)

    @classmethod
    def around_cube(cls, seed, half: float, near_mm: float, far_mm: float, camera: Camera, shape) -> "_Window":
        """Every pixel whose ray meets the box |x - seed_x| <= half, |y - seed_y| <= half at a depth in
        [near_mm, far_mm] (u and v are monotonic in x, y and 1/z: the corners bound them)."""
        depths = (max(near_mm, 1.0), max(far_mm, 1.0))
        us = [camera.ux + x * camera.fx / z for x in (seed[0] - half, seed[0] + half) for z in depths]
        vs = [camera.uy - y * camera.fy_signed / z for y in (seed[1] - half, seed[1] + half) for z in depths]
        height, width = shape
        # pixel c has u = c + 0.5; one pixel of margin for rounding
        c0, c1 = int(np.floor(min(us) - 0.5)) - 1, int(np.floor(max(us) - 0.5)) + 2
        r0, r1 = int(np.floor(min(vs) - 0.5)) - 1, int(np.floor(max(vs) - 0.5)) + 2
        return cls(min(max(r0, 0), height), min(max(r1, 0), height), min(max(c0, 0), width), min(max(c1, 0), width))

    def of_blocks(self, blocks: np.ndarray, scale: int) -> np.ndarray:
        """A per-block array (H // scale, W // scale) read at this window's pixels (0 beyond the last block)."""
        rows, cols = self.rows // scale, self.cols // scale
        row_in, col_in = rows < blocks.shape[0], cols < blocks.shape[1]
        picked = blocks[np.minimum(rows, blocks.shape[0] - 1)][:, np.minimum(cols, blocks.shape[1] - 1)]
        if row_in.all() and col_in.all():
            return picked
        return np.where(row_in[:, None] & col_in[None, :], picked, 0).astype(blocks.dtype)


def _block_centre(depth: np.ndarray, camera: Camera, settings: CentreSettings, scale: int) -> Detection | None:
    """Rules 1-3 on a grid of one pixel per scale x scale block, the cube's centre of mass at full
    resolution; None when the grid shows no hand (the caller then searches at full resolution)."""
    grid = _BlockGrid(depth, camera, settings, scale)
    found = _find_object(grid.depth, grid.valid, grid.smooth, grid.points, grid.border, settings, grid.objects,
                         _plane_at_once)
    if found is None:
        return None
    removed = found.removed
    attached = grid.border | _dilate(removed, -(-ATTACH_PX // scale))
    seed, entered = _seed(found, attached, grid.points)
    half = settings.band_mm / 2.0
    lateral = grid.valid & ~removed & (np.abs(grid.points[..., 0] - seed[0]) <= half) & (
        np.abs(grid.points[..., 1] - seed[1]) <= half)
    front = _kth_nearest(grid.depth[lateral & found.obj], grid.k, found.d_min)
    full = _FullResolution(depth, grid, found, camera, settings)
    for _ in range(2):
        # the cube's depth range from the grid, with a margin; again when the full-resolution front lies outside it
        near_mm, far_mm = front - FRONT_MARGIN_MM, front + settings.band_mm + FRONT_MARGIN_MM
        window = _Window.around_cube(seed, half, near_mm, far_mm, camera, depth.shape)
        hand, values, front = full.cube(window, seed)
        if hand is None or (near_mm <= front and front + settings.band_mm <= far_mm):
            break
    count = 0 if hand is None else int(hand.sum())
    if count < settings.min_pixels:
        return None
    uvd = np.array([(hand.sum(axis=0) @ (window.cols + 0.5)) / count, (hand.sum(axis=1) @ (window.rows + 0.5)) / count,
                    values[hand].mean(dtype=np.float64)])
    return Detection(center_uvd=uvd, center_xyz=uvd_to_xyz(uvd, camera), front_mm=front, pixels=count,
                     surfaces=found.surfaces, entered=entered)


class _BlockGrid:
    """One pixel per scale x scale block (its centre pixel), what `_find_object` runs on.

    The objects are labelled once, on cells of 2x2 pixels (`_smooth_cells`), and read at the grid's
    pixels; the statistics over them (the expensive part at full resolution) use the grid. After a
    surface is removed, an object splits where the removed grid pixels cut it.
    Objects need min_pixels / scale^2 grid pixels and take their (k / scale^2)-th nearest as d_min."""

    def __init__(self, depth: np.ndarray, camera: Camera, settings: CentreSettings, scale: int):
        self.scale = scale
        self.pixel_mm = mm = _as_uint16_mm(depth)
        self.rough = _rough_pixels(mm, settings.edge_mm)
        if scale % 2 == 0:
            self.cell, (self.cell_labels, _) = 2, ndimage.label(_smooth_cells(self.rough))
        else:                   # an odd block size: the objects at full resolution
            self.cell, (self.cell_labels, _) = 1, ndimage.label(~self.rough, structure=EIGHT)
        rows, cols = depth.shape[0] // scale, depth.shape[1] // scale
        offset = scale // 2
        step, first = scale // self.cell, offset // self.cell
        self.labels = self.cell_labels[first::step, first::step][:rows, :cols]
        self.smooth = self.labels > 0
        self.mm = mm[offset:rows * scale:scale, offset:cols * scale:scale]
        self.depth = self.mm.astype(np.float64)
        self.valid = self.depth > 0
        # uvd_to_xyz of the grid's pixel centres, written in place
        self.points = np.empty((rows, cols, 3))
        np.multiply((scale * np.arange(cols) + offset + 0.5 - camera.ux) / camera.fx, self.depth,
                    out=self.points[..., 0])
        np.multiply(((camera.uy - (scale * np.arange(rows) + offset + 0.5)) / camera.fy_signed)[:, None], self.depth,
                    out=self.points[..., 1])
        self.points[..., 2] = self.depth
        ring = -(-BORDER_PX // scale)
        self.border = np.ones((rows, cols), bool)
        self.border[ring:rows - ring, ring:cols - ring] = False
        self.pixel_k = max(1, settings.min_pixels // 10)
        self.k = max(1, round(self.pixel_k / scale ** 2))
        self.min_pixels = max(1, round(settings.min_pixels / scale ** 2))

    def objects(self, mask: np.ndarray) -> tuple[np.ndarray, list]:
        """`_objects` on the grid: (labels, [(label, d_min)] nearest first)."""
        labels, count = self.label(mask)
        if count == 0:
            return labels, []
        # whole-mm depths below 2^16: one integer key sorts by label, then depth
        keys = np.sort(labels[mask].astype(np.int64) << 16 | self.mm[mask])
        return labels, _nearest_first(keys >> 16, (keys & 0xFFFF).astype(np.float64), count, self.min_pixels, self.k)

    def label(self, mask: np.ndarray) -> tuple[np.ndarray, int]:
        """The objects of `mask` (the smooth grid pixels less the removed ones): the cells' objects, those
        that lost pixels split where the grid's own 8-connectivity says the removed pixels cut them."""
        count = int(self.labels.max())
        if np.array_equal(mask, self.smooth):
            return self.labels, count
        labels = np.where(mask, self.labels, 0)
        cut = np.flatnonzero(np.bincount(self.labels[self.smooth & ~mask], minlength=count + 1))
        region = mask & np.isin(self.labels, cut)
        pieces, _ = ndimage.label(region, structure=EIGHT)
        # a piece may span two cut objects (grid neighbours across a thin edge): one new label per (piece, object)
        key = pieces[region] * len(cut) + np.searchsorted(cut, self.labels[region])
        used = np.bincount(key) > 0
        labels[region] = count + np.cumsum(used)[key]
        return labels, count + int(used.sum())


class _FullResolution:
    """The cube of the object the grid chose, at full resolution in a window of the frame."""

    def __init__(self, depth: np.ndarray, grid: _BlockGrid, found: _Search, camera: Camera, settings: CentreSettings):
        self.frame, self.grid, self.found, self.camera, self.settings = depth, grid, found, camera, settings
        self.object_cells = grid.cell_labels == int(grid.labels[found.obj][0])
        # a split object's pixels lie in or next to its grid blocks; a removed plane's next to removed ones
        self.object_blocks = _dilate(found.obj, 1) if found.surfaces else None
        self.removed_blocks = _dilate(found.removed, 1) if found.surfaces else None

    def cube(self, window: "_Window", seed: np.ndarray):
        """(hand mask, depth) in the window and d_front; (None, None, d_min) for an empty window."""
        found, settings, camera, grid = self.found, self.settings, self.camera, self.grid
        if window.r1 <= window.r0 or window.c1 <= window.c0:
            return None, None, found.d_min
        mm = grid.pixel_mm[window.slices]
        valid = mm > 0
        # float32 is exact for whole-mm depths; a float frame keeps its own values
        values = mm.astype(np.float32) if self.frame.dtype == np.uint16 else np.where(
            valid, self.frame[window.slices], 0).astype(np.float32)
        half = settings.band_mm / 2.0
        # x = (u - ux) z / fx and y = (uy - v) z / fy per pixel
        x = ((window.cols + 0.5 - camera.ux) / camera.fx).astype(np.float32)[None, :] * values
        y = ((camera.uy - (window.rows + 0.5)) / camera.fy_signed).astype(np.float32)[:, None] * values
        lateral = valid & (x >= seed[0] - half) & (x <= seed[0] + half) & (y >= seed[1] - half) & (y <= seed[1] + half)
        obj = window.of_blocks(self.object_cells, grid.cell)
        near_removed = window.of_blocks(self.removed_blocks, grid.scale) if self.removed_blocks is not None else None
        if near_removed is not None and near_removed.any():
            candidates = lateral & ~grid.rough[window.slices] & near_removed
            tolerance = _plane_tolerance(values)
            for normal, anchor in found.planes:
                distance = np.abs((x - anchor[0]) * normal[0] + (y - anchor[1]) * normal[1]
                                  + (values - anchor[2]) * normal[2])
                lateral &= ~(candidates & (distance < tolerance))
            obj &= window.of_blocks(self.object_blocks, grid.scale)
        front = _kth_nearest(values[lateral & obj], grid.pixel_k, found.d_min)
        hand = lateral & (values >= front) & (values <= front + settings.band_mm)
        return hand, values, front

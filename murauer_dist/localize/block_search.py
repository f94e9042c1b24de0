"""The fast path of `centre_of_mass` (localize/centre.py): rules 1-3 on a grid of one pixel per
block (objects labelled once on 2x2 cells), then the hand's cube at full resolution in a window
around the seed. `full_resolution_centre` is the reference it is tested against.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from murauer_dist.frames.datasets import Camera
from murauer_dist.localize.objects import (ATTACH_PX, BORDER_PX, EIGHT, Search, depth_edges, find_object, kth_nearest,
                                           nearest_first, plane_at_once, plane_tolerance, seed_of)

SEARCH_SCALE = 4             # the object search runs on blocks of 4x4 pixels (16x fewer; see block_centre)
MIN_BLOCKS = 16              # frames under 16 blocks across are searched at full resolution
FRONT_MARGIN_MM = 20.0       # the window covers the grid's cube depth range +- this (again if the front is outside)
UINT16_MAX = 2 ** 16 - 1     # the block search works on whole-mm depths in uint16


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
        return ~(depth_edges(mm.astype(np.float64)) < edge_mm) | (mm == 0)
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


def block_centre(depth: np.ndarray, camera: Camera, settings, scale: int) -> dict | None:
    """Rules 1-3 on a grid of one pixel per scale x scale block, the cube's centre of mass at full
    resolution: the fields of centre.Detection but center_xyz; None when the grid shows no hand (the
    caller then searches at full resolution). `settings`: a centre.CentreSettings."""
    grid = _BlockGrid(depth, camera, settings, scale)
    found = find_object(grid.depth, grid.valid, grid.smooth, grid.points, grid.border, settings, grid.objects,
                         plane_at_once)
    if found is None:
        return None
    removed = found.removed
    attached = grid.border | _dilate(removed, -(-ATTACH_PX // scale))
    seed, entered = seed_of(found, attached, grid.points)
    half = settings.band_mm / 2.0
    lateral = grid.valid & ~removed & (np.abs(grid.points[..., 0] - seed[0]) <= half) & (
        np.abs(grid.points[..., 1] - seed[1]) <= half)
    front = kth_nearest(grid.depth[lateral & found.obj], grid.k, found.d_min)
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
    return {"center_uvd": uvd, "front_mm": front, "pixels": count, "surfaces": found.surfaces, "entered": entered}


class _BlockGrid:
    """One pixel per scale x scale block (its centre pixel), what `find_object` runs on.

    The objects are labelled once, on cells of 2x2 pixels (`_smooth_cells`), and read at the grid's
    pixels; the statistics over them (the expensive part at full resolution) use the grid. After a
    surface is removed, an object splits where the removed grid pixels cut it.
    Objects need min_pixels / scale^2 grid pixels and take their (k / scale^2)-th nearest as d_min."""

    def __init__(self, depth: np.ndarray, camera: Camera, settings, scale: int):
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
        """`objects_nearest_first` on the grid: (labels, [(label, d_min)] nearest first)."""
        labels, count = self.label(mask)
        if count == 0:
            return labels, []
        # whole-mm depths below 2^16: one integer key sorts by label, then depth
        keys = np.sort(labels[mask].astype(np.int64) << 16 | self.mm[mask])
        return labels, nearest_first(keys >> 16, (keys & 0xFFFF).astype(np.float64), count, self.min_pixels, self.k)

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

    def __init__(self, depth: np.ndarray, grid: _BlockGrid, found: Search, camera: Camera, settings):
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
            tolerance = plane_tolerance(values)
            for normal, anchor in found.planes:
                distance = np.abs((x - anchor[0]) * normal[0] + (y - anchor[1]) * normal[1]
                                  + (values - anchor[2]) * normal[2])
                lateral &= ~(candidates & (distance < tolerance))
            obj &= window.of_blocks(self.object_blocks, grid.scale)
        front = kth_nearest(values[lateral & obj], grid.pixel_k, found.d_min)
        hand = lateral & (values >= front) & (values <= front + settings.band_mm)
        return hand, values, front

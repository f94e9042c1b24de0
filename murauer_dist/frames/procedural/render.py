"""Vectorised depth z-buffer of capsules (the hand, the forearm, a torso) and planes.

Exact perspective: a pixel's ray through its centre, direction ((u+0.5-ux)/fx, -(v+0.5-uy)/fy, 1),
meets a capsule where a closed-form quadratic says (cylinder body, else the end sphere). The depth is
the ray parameter itself, because the direction's z is 1. Each capsule is evaluated only over the
pixels of its own projected bounding box, and there only in the tiles of TILE x TILE pixels that its
projection can reach (a conservative 2D capsule around the projected axis: it skips about 30 % of
the box pixels of a hand without changing any depth). The tiles of all capsules of all images go
through one array with the tile as its long axis, so the per-capsule terms broadcast instead of
being gathered per pixel; np.maximum.at on reversed keys keeps the nearest surface per pixel.
Depth 0 means no surface. Points are in a camera's y-up coordinates (the rig's); the camera
(datasets.Camera: intrinsics and image size, always passed) only sets where pixels look.
"""
from __future__ import annotations

import numpy as np

from murauer_dist.frames.datasets import Camera

NEAR_MM = 60.0
TILE = 4                     # culling tile (grid pixels); 4 measured fastest of 2-12


def ray_slopes(rows: np.ndarray, cols: np.ndarray, step: float = 1.0,
               *, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """x/z and y/z (y up) of the rays through pixel centres of a grid subsampled by `step`."""
    dx = ((cols + 0.5) * step - camera.ux) / camera.fx
    dy = -((rows + 0.5) * step - camera.uy) / camera.fy
    return dx.astype(np.float32), dy.astype(np.float32)


def capsule_boxes(a: np.ndarray, b: np.ndarray, radius: np.ndarray, height: int, width: int, step: float,
                  camera: Camera):
    """Inclusive pixel boxes (u0, u1, v0, v1) of capsules (K,) on a grid of `step` image pixels."""
    ends = np.stack([a, b])                                     # (2, K, 3)
    z = np.maximum(ends[..., 2], NEAR_MM)
    u = camera.ux + camera.fx * ends[..., 0] / z
    v = camera.uy - camera.fy * ends[..., 1] / z
    pad = radius * max(camera.fx, camera.fy) / (z.min(axis=0) - radius).clip(NEAR_MM) + 2.0
    visible = (ends[..., 2].max(axis=0) > NEAR_MM + radius)
    box = [np.floor((u.min(axis=0) - pad) / step), np.floor((u.max(axis=0) + pad) / step),
           np.floor((v.min(axis=0) - pad) / step), np.floor((v.max(axis=0) + pad) / step)]
    u0, u1 = np.clip(box[0], 0, width - 1), np.clip(box[1], -1, width - 1)
    v0, v1 = np.clip(box[2], 0, height - 1), np.clip(box[3], -1, height - 1)
    empty = ~visible | (u1 < u0) | (v1 < v0)
    return [x.astype(np.int64) for x in (u0, np.where(empty, u0 - 1, u1), v0, v1)]


def _reach_px(a: np.ndarray, b: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Radius, in units of the focal length (times max(fx, fy): image pixels), of a 2D capsule around
    the projected axis that holds a 3D capsule's projection.

    A point c + r n of the sphere around axis point c projects within f r |c| / (c_z (c_z - r)) of c's
    projection (Cauchy-Schwarz on the perspective division), and the axis projects to the segment
    between the projected ends; |c| is largest and c_z smallest at an end. inf when the capsule comes
    near the camera plane (no bound: all tiles of its box are kept).
    """
    z_min = np.minimum(a[:, 2], b[:, 2])
    norm = np.maximum(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    gap = z_min - radius
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = radius * norm / (z_min * gap)
    return np.where(gap > 0.5 * NEAR_MM, reach, np.inf)


def _segment_distance(px, py, ax, ay, bx, by):
    """Distance of points (px, py) to the 2D segments (ax, ay)-(bx, by), elementwise."""
    ex, ey = bx - ax, by - ay
    length2 = np.maximum(ex * ex + ey * ey, 1e-12)
    t = np.clip(((px - ax) * ex + (py - ay) * ey) / length2, 0.0, 1.0)
    return np.hypot(px - ax - t * ex, py - ay - t * ey)


def _tiles(u0, u1, v0, v1, a, b, radius, step: float, camera: Camera):
    """The TILE x TILE tiles of the capsules' boxes that a capsule's projection can reach: top-left
    (col, row) per tile and its capsule. A tile is kept when the centre of its pixel centres lies within
    the capsule's reach (plus the tile's half-diagonal and a pixel of slack) of the projected axis, so
    every pixel the ray tracer could hit stays."""
    widths, heights = np.maximum(u1 - u0 + 1, 0), np.maximum(v1 - v0 + 1, 0)
    tiles_x, tiles_y = -(-widths // TILE), -(-heights // TILE)
    counts = np.where(widths > 0, tiles_x * tiles_y, 0)
    owner = np.repeat(np.arange(len(counts)), counts)
    index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ty, tx = np.divmod(index, np.maximum(tiles_x, 1)[owner])
    c0, r0 = u0[owner] + tx * TILE, v0[owner] + ty * TILE
    c1, r1 = np.minimum(c0 + TILE - 1, u1[owner]), np.minimum(r0 + TILE - 1, v1[owner])
    ends = np.stack([a, b])                                     # (2, K, 3); all in front when reach is finite
    with np.errstate(divide="ignore", invalid="ignore"):
        u = camera.ux + camera.fx * ends[..., 0] / ends[..., 2]
        v = camera.uy - camera.fy * ends[..., 1] / ends[..., 2]
    reach = max(camera.fx, camera.fy) * _reach_px(a, b, radius)
    centre_u, centre_v = (c0 + c1 + 1) * (0.5 * step), (r0 + r1 + 1) * (0.5 * step)
    half_diagonal = 0.5 * step * np.hypot(c1 - c0, r1 - r0)
    distance = _segment_distance(centre_u, centre_v, u[0][owner], v[0][owner], u[1][owner], v[1][owner])
    keep = ~np.isfinite(reach[owner]) | (distance <= reach[owner] + half_diagonal + 1.0)
    return c0[keep], r0[keep], owner[keep]


def trace_tiles(c0: np.ndarray, r0: np.ndarray, owner: np.ndarray, last_col: np.ndarray, last_row: np.ndarray,
                a: np.ndarray, b: np.ndarray, radius: np.ndarray, step: float = 1.0,
                *, camera: Camera) -> np.ndarray:
    """Depth (TILE, TILE, n) float32 of the nearest hit of the rays (dx, dy, 1) through the pixels of n
    tiles (top-left c0, r0 on the grid; index: row in tile, column in tile, tile) with their capsules
    a[owner], b[owner] (K, 3), radius[owner] (K,); inf on a miss and on pixels beyond the capsule's box
    (last_col, last_row per capsule).

    The quadratic uses the unit axis, so its terms stay small enough for float32 (the per-capsule
    terms are made in float64); a ray that meets the infinite cylinder beyond the body takes the
    nearer end sphere. The tile is the long, contiguous axis: the per-capsule terms broadcast over a
    tile's pixels, and the terms linear in dx or dy are made per column or per row.
    """
    span = np.arange(TILE)
    cols, rows = c0 + span[:, None], r0 + span[:, None]                       # (T, n)
    dx, dy = ray_slopes(rows.astype(np.float32), cols.astype(np.float32), step, camera=camera)
    dx, dy = dx[None], dy[:, None]                                    # (1, T, n) per column, (T, 1, n) per row
    per_tile = lambda x: np.asarray(x).astype(np.float32)[owner]      # noqa: E731
    length = np.linalg.norm(b - a, axis=1).clip(1e-6)
    axis = (b - a) / length[:, None]
    along = -np.einsum("ij,ij->i", axis, a)                         # axis . (origin - a)
    dist2 = np.einsum("ij,ij->i", a, a) - along * along - radius * radius
    bard = per_tile(axis[:, 0]) * dx + per_tile(axis[:, 1]) * dy + per_tile(axis[:, 2])
    rdoa = -(per_tile(a[:, 0]) * dx + per_tile(a[:, 1]) * dy + per_tile(a[:, 2]))
    rdrd = dx * dx + dy * dy + np.float32(1.0)
    qa = rdrd - bard * bard
    qb = rdoa - per_tile(along) * bard
    h = qb * qb - qa * per_tile(dist2)
    inside = (cols <= last_col[owner])[None] & (rows <= last_row[owner])[:, None]
    cylinder = (h >= 0) & (qa > 1e-7) & inside
    with np.errstate(invalid="ignore", divide="ignore"):
        t_body = (-qb - np.sqrt(h)) / qa
        y = per_tile(along) + t_body * bard
        on_body = (y > 0) & (y < per_tile(length))
        # The nearer end sphere (a where y <= 0, else b): |center|^2 - r^2 per capsule end, in float32.
        ends = np.stack([a, b]).astype(np.float32)                     # (2, K, 3)
        end_cc = np.einsum("ij,ij->i", ends.reshape(-1, 3), ends.reshape(-1, 3)).reshape(2, -1) \
            - (radius * radius).astype(np.float32)
        at_b = y > 0
        end = lambda x: np.where(at_b, x[1][owner], x[0][owner])     # noqa: E731
        cb = -(end(ends[..., 0]) * dx + end(ends[..., 1]) * dy + end(ends[..., 2]))
        h_cap = cb * cb - rdrd * end(end_cc)
        t_cap = (-cb - np.sqrt(h_cap)) / rdrd
    depth = np.where(on_body, t_body, np.where(h_cap >= 0, t_cap, np.float32(np.inf)))
    return np.where(cylinder & (depth > NEAR_MM), depth, np.float32(np.inf))


def render_capsules(a: np.ndarray, b: np.ndarray, radius: np.ndarray, height: int | None = None,
                    width: int | None = None, step: float = 1.0, *, camera: Camera) -> np.ndarray:
    """Depth maps (n_img, height, width) float32 of capsules a, b (n_img, C, 3), radius (n_img, C);
    height and width default to the camera's image."""
    height = camera.height if height is None else height
    width = camera.width if width is None else width
    n_img, n_caps = radius.shape
    flat_a, flat_b, flat_r = a.reshape(-1, 3), b.reshape(-1, 3), radius.reshape(-1)
    u0, u1, v0, v1 = capsule_boxes(flat_a, flat_b, flat_r, height, width, step, camera)
    c0, r0, owner = _tiles(u0, u1, v0, v1, flat_a, flat_b, flat_r, step, camera)
    depth = trace_tiles(c0, r0, owner, u1, v1, flat_a, flat_b, flat_r, step, camera=camera)
    span = np.arange(TILE)
    corner = ((owner // n_caps) * height + r0) * width + c0                  # flat pixel of each tile's corner
    pixel = corner + (span * width)[:, None, None] + span[None, :, None]    # (T, T, n)
    hit = np.isfinite(depth)
    # The nearest hit per pixel as the largest key: positive float32 values order like their bits, and
    # 2^32 - bits reverses that order; on a zeroed buffer, negating once more turns the untouched
    # pixels into depth 0 and the others back into their depth (no passes to fill or to clear).
    buffer = np.zeros(n_img * height * width, dtype=np.uint32)
    np.maximum.at(buffer, pixel[hit], np.negative(depth[hit].view(np.uint32)))
    return np.negative(buffer, out=buffer).view(np.float32).reshape(n_img, height, width)


def render_plane(normal: np.ndarray, offset: float, height: int, width: int, step: float = 1.0,
                 *, camera: Camera) -> np.ndarray:
    """Depth (height, width) of the plane normal . p = offset seen from the origin; 0 where it is behind."""
    dx, dy = ray_slopes(np.arange(height)[:, None], np.arange(width)[None, :], step, camera=camera)
    facing = dx * normal[0] + dy * normal[1] + normal[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = offset / facing
    return np.where(np.isfinite(depth) & (depth > NEAR_MM), depth, 0.0).astype(np.float32)

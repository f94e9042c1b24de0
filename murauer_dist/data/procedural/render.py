"""Vectorised depth z-buffer of capsules (the hand, the forearm, a torso) and planes.

Exact perspective: a pixel's ray through its centre, direction ((u+0.5-ux)/fx, -(v+0.5-uy)/fy, 1),
meets a capsule where a closed-form quadratic says (cylinder body, else the end sphere). The depth is
the ray parameter itself, because the direction's z is 1. Each capsule is evaluated only over the
pixels of its own projected bounding box; all capsules of all images go through one flat array, and
np.minimum.at keeps the nearest surface per pixel. Depth 0 means no surface.
"""
from __future__ import annotations

import numpy as np

from murauer_dist import geometry

NEAR_MM = 60.0


def ray_slopes(rows: np.ndarray, cols: np.ndarray, step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """x/z and y/z of the rays through pixel centres of a grid subsampled by `step`."""
    dx = ((cols + 0.5) * step - geometry.UX) / geometry.FX
    dy = -((rows + 0.5) * step - geometry.UY) / geometry.FY
    return dx.astype(np.float32), dy.astype(np.float32)


def capsule_boxes(a: np.ndarray, b: np.ndarray, radius: np.ndarray, height: int, width: int, step: float):
    """Inclusive pixel boxes (u0, u1, v0, v1) of capsules (K,) on a grid of `step` image pixels."""
    ends = np.stack([a, b])                                     # (2, K, 3)
    z = np.maximum(ends[..., 2], NEAR_MM)
    u = geometry.UX + geometry.FX * ends[..., 0] / z
    v = geometry.UY - geometry.FY * ends[..., 1] / z
    pad = radius * max(geometry.FX, geometry.FY) / (z.min(axis=0) - radius).clip(NEAR_MM) + 2.0
    visible = (ends[..., 2].max(axis=0) > NEAR_MM + radius)
    box = [np.floor((u.min(axis=0) - pad) / step), np.floor((u.max(axis=0) + pad) / step),
           np.floor((v.min(axis=0) - pad) / step), np.floor((v.max(axis=0) + pad) / step)]
    u0, u1 = np.clip(box[0], 0, width - 1), np.clip(box[1], -1, width - 1)
    v0, v1 = np.clip(box[2], 0, height - 1), np.clip(box[3], -1, height - 1)
    empty = ~visible | (u1 < u0) | (v1 < v0)
    return [x.astype(np.int64) for x in (u0, np.where(empty, u0 - 1, u1), v0, v1)]


def _box_pixels(u0, u1, v0, v1):
    """All pixels of K boxes as flat arrays (row, col), box after box, and the pixels per box."""
    widths, heights = (u1 - u0 + 1).astype(np.int32), (v1 - v0 + 1).astype(np.int32)
    sizes = np.where(widths > 0, widths * np.maximum(heights, 0), 0)
    offset = np.arange(sizes.sum(), dtype=np.int32) - np.repeat((np.cumsum(sizes) - sizes).astype(np.int32), sizes)
    row, col = np.divmod(offset, np.repeat(np.maximum(widths, 1), sizes))
    return row + np.repeat(v0.astype(np.int32), sizes), col + np.repeat(u0.astype(np.int32), sizes), sizes


def ray_capsule_depth(dx: np.ndarray, dy: np.ndarray, sizes: np.ndarray, a: np.ndarray, b: np.ndarray,
                      radius: np.ndarray) -> np.ndarray:
    """Nearest hit depth of rays (dx, dy, 1) from the origin with capsules a, b (K, 3), radius (K,),
    where the rays come in runs: `sizes[k]` rays for capsule k. inf on a miss.

    The quadratic uses the unit axis, so its terms stay small enough for float32 (the per-capsule
    terms are made in float64); the cap test runs only on rays that meet the infinite cylinder but
    miss its body.
    """
    item = np.repeat(np.arange(len(sizes)), sizes)
    per_ray = lambda x: np.take(x.astype(np.float32), item)        # noqa: E731
    length = np.linalg.norm(b - a, axis=1).clip(1e-6)
    axis = (b - a) / length[:, None]
    along = -np.einsum("ij,ij->i", axis, a)                         # axis . (origin - a)
    dist2 = np.einsum("ij,ij->i", a, a) - along * along - radius * radius
    bard = per_ray(axis[:, 0]) * dx + per_ray(axis[:, 1]) * dy + per_ray(axis[:, 2])
    rdoa = -(per_ray(a[:, 0]) * dx + per_ray(a[:, 1]) * dy + per_ray(a[:, 2]))
    rdrd = dx * dx + dy * dy + np.float32(1.0)
    along_ray = per_ray(along)
    qa = rdrd - bard * bard
    qb = rdoa - along_ray * bard
    h = qb * qb - qa * per_ray(dist2)
    depth = np.full(len(dx), np.inf, dtype=np.float32)
    hit = np.flatnonzero((h >= 0) & (qa > 1e-7))
    t_body = (-qb[hit] - np.sqrt(h[hit])) / qa[hit]
    y = along_ray[hit] + t_body * bard[hit]
    on_body = (y > 0) & (y < per_ray(length)[hit])
    depth[hit[on_body]] = t_body[on_body]
    cap, y = hit[~on_body], y[~on_body]
    item = item[cap]
    center = np.where((y <= 0)[:, None], a[item], b[item]).astype(np.float32)   # the nearer end sphere
    cb = -(center[:, 0] * dx[cap] + center[:, 1] * dy[cap] + center[:, 2])
    cc = np.einsum("ij,ij->i", center, center) - (radius * radius)[item].astype(np.float32)
    h_cap = cb * cb - rdrd[cap] * cc
    meets = h_cap >= 0
    depth[cap[meets]] = (-cb[meets] - np.sqrt(h_cap[meets])) / rdrd[cap][meets]
    return np.where(depth > NEAR_MM, depth, np.inf)


def render_capsules(a: np.ndarray, b: np.ndarray, radius: np.ndarray, height: int = geometry.IMAGE_HEIGHT,
                    width: int = geometry.IMAGE_WIDTH, step: float = 1.0) -> np.ndarray:
    """Depth maps (n_img, height, width) float32 of capsules a, b (n_img, C, 3), radius (n_img, C)."""
    n_img, n_caps = radius.shape
    flat_a, flat_b, flat_r = a.reshape(-1, 3), b.reshape(-1, 3), radius.reshape(-1)
    rows, cols, sizes = _box_pixels(*capsule_boxes(flat_a, flat_b, flat_r, height, width, step))
    dx, dy = ray_slopes(rows.astype(np.float32), cols.astype(np.float32), step)
    depth = ray_capsule_depth(dx, dy, sizes, flat_a, flat_b, flat_r)
    hit = np.flatnonzero(np.isfinite(depth))
    image = np.repeat(np.arange(n_img), sizes.reshape(n_img, n_caps).sum(axis=1))[hit]
    buffer = np.full(n_img * height * width, np.inf, dtype=np.float32)
    pixel = (image * height + rows[hit].astype(np.int64)) * width + cols[hit]
    np.minimum.at(buffer, pixel, depth[hit])
    buffer[np.isinf(buffer)] = 0.0
    return buffer.reshape(n_img, height, width)


def render_plane(normal: np.ndarray, offset: float, height: int, width: int, step: float = 1.0) -> np.ndarray:
    """Depth (height, width) of the plane normal . p = offset seen from the origin; 0 where it is behind."""
    dx, dy = ray_slopes(np.arange(height)[:, None], np.arange(width)[None, :], step)
    facing = dx * normal[0] + dy * normal[1] + normal[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = offset / facing
    return np.where(np.isfinite(depth) & (depth > NEAR_MM), depth, 0.0).astype(np.float32)

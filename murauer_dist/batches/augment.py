"""Augmentation math shared by both loaders (torch, vectorised over a batch).

A stored crop (S x S, mm, shard schema) is turned into the network crop (C x C) by one affine warp
from network-crop pixel coordinates to stored-crop pixel coordinates (pixel centres at +0.5,
nearest neighbour = floor of the mapped centre, outside -> 0, as DALI's warp_affine samples):

    x_stored = S/2 + s * R^T (c' - c) + (z_c / z') * R^T (x_net - C/2)

where c = (u_c, v_c) is the GT palm centre, c' the projection of the jittered 3D centre
(x_c, y_c, z_c) + delta, z' = z_c + delta_z, s the crop scale (crop pixels per image pixel) and R the
in-plane rotation by theta about the palm centre. A cube at depth z' spans z'/z_c times more crop
pixels than at z_c (crop scale grows with depth), hence the z_c/z' factor from network to stored
pixels. theta = 0 and delta = 0 give the exact central slice (geometry.center_crop).

Joints: uv are rotated about the GT palm centre in the image, d is kept, xyz is re-derived by
back-projection; targets are (xyz - jittered centre) / (cube/2), clipped to [-1, 1]. Depth: noise is
added to valid pixels only, then normalised around z' (0 or outside the cube -> +1).

The DALI pipeline builds the same matrix from the same formula (dali_pipeline.affine_node); the
random draws come from DALI there and from a torch.Generator here. Projections use the dataset's
camera (datasets.Camera; the loaders pass it: there is no default camera).
"""
from __future__ import annotations

import math

import torch

from murauer_dist.shards.schema import CROP_FIELDS
from murauer_dist.frames.datasets import Camera

# columns of a crop.f32 row (shard schema)
U_C, V_C, D_C, X_C, Y_C, Z_C, CUBE, SCALE = (CROP_FIELDS.index(field) for field in
                                             ("u_c", "v_c", "d_c", "x_c", "y_c", "z_c", "cube_mm", "scale"))
COND_HALF_RANGE_MM = 1450.0 / 2.0     # decoder conditioning: x*2/1450, y*2/1450, (z-50)*2/1450-1
COND_Z_OFFSET_MM = 50.0


def draw_params(generator: torch.Generator, batch: int, rotation_deg: float, jitter_mm: float) -> dict:
    """theta ~ U[-r, r] (radians) and a 3D centre offset ~ N(0, s^2) mm per axis, per sample."""
    theta = (torch.rand(batch, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * math.radians(rotation_deg)
    jitter = torch.randn(batch, 3, generator=generator, dtype=torch.float64) * jitter_mm
    return {"theta": theta, "jitter": jitter}


def project(xyz: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (u, v) of camera points (..., 3) mm."""
    return (camera.ux + camera.fx * xyz[..., 0] / xyz[..., 2],
            camera.uy - camera.fy_signed * xyz[..., 1] / xyz[..., 2])


def jittered_center(crop: torch.Tensor, jitter: torch.Tensor, camera: Camera) -> dict:
    """The jittered 3D centre (B,3) mm and its projection (B,2) image pixels."""
    xyz = crop[:, X_C:Z_C + 1].double() + jitter.double()
    u, v = project(xyz, camera)
    return {"xyz": xyz, "uv": torch.stack([u, v], dim=1)}


def affine_matrix(crop: torch.Tensor, theta: torch.Tensor, jitter: torch.Tensor,
                  crop_size: int, stored_size: int, camera: Camera) -> torch.Tensor:
    """(B,2,3) float64: network-crop pixel (x, y) -> stored-crop pixel (x, y), see the module doc."""
    crop = crop.double()
    center = jittered_center(crop, jitter, camera)
    du = center["uv"][:, 0] - crop[:, U_C]
    dv = center["uv"][:, 1] - crop[:, V_C]
    cos, sin = torch.cos(theta.double()), torch.sin(theta.double())
    k = crop[:, Z_C] / center["xyz"][:, 2]
    scale = crop[:, SCALE]
    half_out, half_stored = crop_size / 2.0, stored_size / 2.0
    tx = half_stored + scale * (cos * du + sin * dv) - k * (cos + sin) * half_out
    ty = half_stored + scale * (-sin * du + cos * dv) - k * (cos - sin) * half_out
    row0 = torch.stack([k * cos, k * sin, tx], dim=1)
    row1 = torch.stack([-k * sin, k * cos, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def warp_nearest(stored: torch.Tensor, matrix: torch.Tensor, out_size: int) -> torch.Tensor:
    """Nearest-neighbour warp of (B,K,S,S) by (B,2,3) (output -> input coords); outside -> 0."""
    batch, channels, height, width = stored.shape
    centers = torch.arange(out_size, dtype=torch.float32, device=stored.device) + 0.5
    grid_y, grid_x = torch.meshgrid(centers, centers, indexing="ij")
    m = matrix.to(device=stored.device, dtype=torch.float32)
    src_x = m[:, 0, 0, None, None] * grid_x + m[:, 0, 1, None, None] * grid_y + m[:, 0, 2, None, None]
    src_y = m[:, 1, 0, None, None] * grid_x + m[:, 1, 1, None, None] * grid_y + m[:, 1, 2, None, None]
    col, row = torch.floor(src_x).long(), torch.floor(src_y).long()
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).reshape(batch, 1, -1)
    values = torch.gather(stored.reshape(batch, channels, -1), 2, flat.expand(-1, channels, -1))
    values = values.reshape(batch, channels, out_size, out_size)
    return torch.where(inside[:, None], values, torch.zeros((), dtype=values.dtype, device=values.device))


def add_depth_noise(depth_mm: torch.Tensor, noise_mm: torch.Tensor) -> torch.Tensor:
    """Noise on valid (non-zero) pixels only, so 'no depth' stays 'no depth'."""
    return torch.where(depth_mm > 0, depth_mm + noise_mm, depth_mm)


def normalize_depth(depth_mm: torch.Tensor, center_z: torch.Tensor, cube_mm: torch.Tensor) -> torch.Tensor:
    """(B,K,H,W) mm -> [-1, 1] around z' per sample; 0 and outside [z'-cube/2, z'+cube/2] -> +1."""
    shape = (-1,) + (1,) * (depth_mm.dim() - 1)
    z = center_z.to(depth_mm.device, torch.float32).reshape(shape)
    half = (cube_mm.to(depth_mm.device, torch.float32) / 2.0).reshape(shape)
    norm = (depth_mm.float() - z) / half
    background = (depth_mm <= 0) | (norm.abs() > 1.0)
    return torch.where(background, torch.ones((), device=norm.device), norm)


def back_project(uv: torch.Tensor, d: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(..., 2) pixels and (...) mm -> (..., 3) xyz mm (in the camera's axes: NYU's y up)."""
    x = (uv[..., 0] - camera.ux) * d / camera.fx
    y = (camera.uy - uv[..., 1]) * d / camera.fy_signed
    return torch.stack([x, y, d], dim=-1)


def transform_joints(uvd: torch.Tensor, xyz: torch.Tensor, crop: torch.Tensor, theta: torch.Tensor,
                     jitter: torch.Tensor, camera: Camera) -> dict:
    """Rotated joints and targets: {"target" (B,J,3) float32, "center_xyz" (B,3) float32 mm}."""
    uvd, xyz, crop = uvd.double(), xyz.double(), crop.double()
    palm = crop[:, None, U_C:V_C + 1]
    offset = uvd[..., :2] - palm
    cos, sin = torch.cos(theta.double())[:, None], torch.sin(theta.double())[:, None]
    rotated = torch.stack([cos * offset[..., 0] - sin * offset[..., 1],
                           sin * offset[..., 0] + cos * offset[..., 1]], dim=-1) + palm
    # Keep the stored xyz exactly when theta = 0 (back-projection differs from it by rounding).
    xyz_rotated = xyz + (back_project(rotated, uvd[..., 2], camera) - back_project(uvd[..., :2], uvd[..., 2], camera))
    center = jittered_center(crop, jitter, camera)["xyz"]
    half = crop[:, CUBE, None, None] / 2.0
    target = ((xyz_rotated - center[:, None, :]) / half).clamp(-1.0, 1.0)
    return {"target": target.float(), "center_xyz": center.float()}


def condition(center_xyz: torch.Tensor, noise_mm: torch.Tensor) -> torch.Tensor:
    """Decoder conditioning (method §2 step 9): noisy centre normalised to [-1, 1], (B,3)."""
    noisy = center_xyz.double() + noise_mm.double()
    cond = torch.stack([noisy[:, 0] / COND_HALF_RANGE_MM, noisy[:, 1] / COND_HALF_RANGE_MM,
                        (noisy[:, 2] - COND_Z_OFFSET_MM) / COND_HALF_RANGE_MM - 1.0], dim=1)
    return cond.clamp(-1.0, 1.0).float()


def network_pixels(xyz: torch.Tensor, center_xyz: torch.Tensor, scale: torch.Tensor, crop_size: int,
                   camera: Camera) -> torch.Tensor:
    """Where 3D points (B,J,3) land (continuous pixel x, y) in a network crop around `center_xyz`
    whose scale is `scale` (B,) crop pixels per image pixel."""
    xyz, center, scale = xyz.double(), center_xyz.double(), scale.double()
    u, v = project(xyz, camera)
    cu, cv = project(center, camera)
    return torch.stack([(u - cu[:, None]) * scale[:, None] + crop_size / 2.0,
                        (v - cv[:, None]) * scale[:, None] + crop_size / 2.0], dim=-1)

"""Tiny NYU-style datasets for loader tests and benchmarks, written straight from the shard schema.

Independent of the shard writer: hands are blobs of spheres around random joints, rendered into
640x480 depth maps per camera and domain; crops come from geometry (CropWindow, crop_depth) and are
written with webdataset.TarWriter as SHARDS/{train,val,test}/shard-*.tar and
SHARDS/labeled/seed{S}-n{N}/shard-*.tar. Optionally the full frames are written as an NYU-layout
root (depth PNGs + joint_data.mat) for the original-style loader.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
import webdataset as wds

from murauer_dist.frames.datasets import NYU
from murauer_dist import geometry
from murauer_dist.frames import nyu
from murauer_dist.shards import schema

NUM_JOINTS = 36
PALM = geometry.EVAL_JOINTS[geometry.CENTER_JOINT]
SIDE_YAW_DEG = {1: 0.0, 2: 35.0, 3: -35.0}


def _joints_cam1(rng: np.random.Generator) -> np.ndarray:
    """36 joints (mm, camera 1): palm centre plus offsets within a hand-sized box."""
    center = np.array([rng.uniform(-80, 80), rng.uniform(-60, 60), rng.uniform(550, 850)])
    joints = center + rng.uniform(-70, 70, size=(NUM_JOINTS, 3)) * np.array([1.0, 1.0, 0.4])
    joints[PALM] = center
    return joints


def _to_camera(joints: np.ndarray, cam: int) -> np.ndarray:
    """A side camera looks at the same hand from a yaw about the palm's vertical axis."""
    yaw = np.radians(SIDE_YAW_DEG[cam])
    pivot = joints[PALM]
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    return (joints - pivot) @ rot.T + pivot


def render(xyz: np.ndarray, radius_mm: float) -> np.ndarray:
    """Depth map (uint16 mm, 480x640) of spheres at the joints plus a palm sphere; nearest wins."""
    depth = np.full((geometry.IMAGE_HEIGHT, geometry.IMAGE_WIDTH), np.inf)
    spheres = [(p, radius_mm) for p in xyz] + [(xyz[PALM], 3 * radius_mm)]
    for point, radius in spheres:
        u, v, z = geometry.xyz_to_uvd(point, camera=NYU.camera)
        r_px = radius * geometry.FX / z
        u0, u1 = int(max(0, u - r_px - 1)), int(min(geometry.IMAGE_WIDTH, u + r_px + 2))
        v0, v1 = int(max(0, v - r_px - 1)), int(min(geometry.IMAGE_HEIGHT, v + r_px + 2))
        if u0 >= u1 or v0 >= v1:
            continue
        uu, vv = np.meshgrid(np.arange(u0, u1) + 0.5, np.arange(v0, v1) + 0.5)
        dist2 = ((uu - u) ** 2 + (vv - v) ** 2) / r_px ** 2
        surface = np.where(dist2 <= 1.0, z - radius * np.sqrt(np.clip(1 - dist2, 0, 1)), np.inf)
        depth[v0:v1, u0:u1] = np.minimum(depth[v0:v1, u0:u1], surface)
    return np.where(np.isfinite(depth), np.round(depth), 0).astype(np.uint16)


def make_frames(count: int, seed: int) -> list[dict]:
    """Per frame: joints xyz/uvd (3 cams, 36, 3) and full depth maps {(domain, cam): uint16}."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        cam1 = _joints_cam1(rng)
        xyz = np.stack([_to_camera(cam1, cam) for cam in (1, 2, 3)])
        uvd = geometry.xyz_to_uvd(xyz, camera=NYU.camera)
        depth = {("real", cam): render(xyz[cam - 1], 11.0) for cam in (1, 2, 3)}
        depth.update({("synth", cam): render(xyz[cam - 1], 12.0) for cam in (1, 2, 3)})
        frames.append({"xyz": xyz, "uvd": uvd, "depth": depth})
    return frames


def make_sample(frame: dict, index: int, split: str, crop_size: int, margin: float, cube_mm: float,
                encoding: str) -> dict:
    """One shard sample (this schema version) of a frame, the cameras unswapped."""
    stored = geometry.stored_size(crop_size, margin)
    layout = schema.SampleLayout.of_spec(NYU)
    sample = {"__key__": schema.sample_key(index)}
    joints = np.zeros(layout.joints_shape, np.float32)
    crop_rows = np.zeros(layout.crop_shape, np.float32)
    for cam in layout.slots:
        uvd, xyz = frame["uvd"][cam - 1], frame["xyz"][cam - 1]
        window = geometry.CropWindow.around(uvd[PALM], cube_mm, stored, margin=margin, camera=NYU.camera)
        for domain in schema.DOMAINS:
            crop = geometry.crop_depth(frame["depth"][(domain, cam)], window, frame=str(index))
            sample[schema.crop_member(domain, cam, encoding)] = schema.encode_crop(crop, encoding)
        joints[cam - 1, 0] = uvd[list(geometry.EVAL_JOINTS)]
        joints[cam - 1, 1] = xyz[list(geometry.EVAL_JOINTS)]
        crop_rows[cam - 1] = [*uvd[PALM], *xyz[PALM], cube_mm, window.scale]
    sample[schema.JOINTS_MEMBER] = schema.encode_labels(schema.JOINTS_MEMBER, joints, layout)
    sample[schema.CROP_MEMBER] = schema.encode_labels(schema.CROP_MEMBER, crop_rows, layout)
    sample[schema.META_MEMBER] = schema.encode_meta(index, split, crop_size, stored, margin, encoding,
                                                    list(layout.slots))
    return sample


def write_tars(folder: Path, samples: list[dict], shard_size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(samples), shard_size):
        path = folder / f"shard-{start // shard_size:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for sample in samples[start:start + shard_size]:
                writer.write(sample)
        paths.append(path)
    (folder / "manifest.json").write_text(json.dumps({"schema": schema.SCHEMA_VERSION, "count": len(samples),
                                                      "frames": [schema.frame_of_key(s["__key__"]) for s in samples]}))
    return paths


def labeled_frames(num_train: int, n: int, seed: int) -> list[int]:
    return sorted(int(i) for i in np.random.RandomState(seed).permutation(num_train)[:n])


def make_shard_set(out: str | Path, n_train: int = 24, n_test: int = 8, crop_size: int = 32,
                   margin: float = 1.625, cube_mm: float = 300.0, encoding: str = "png", shard_size: int = 5,
                   val_fraction: float = 0.125, n_labeled: int = 6, label_seed: int = 3, seed: int = 0,
                   root: str | Path | None = None, synth_equals_real: bool = False) -> dict:
    """Write a complete shard set; returns {"train", "val", "test", "labeled"} frame lists and paths."""
    out = Path(out)
    train = make_frames(n_train, seed)
    test = make_frames(n_test, seed + 1)
    if synth_equals_real:           # twins with identical pixels: any difference after augmenting is the draw's
        for frame in train:
            frame["depth"].update({("synth", cam): frame["depth"][("real", cam)] for cam in (1, 2, 3)})
    n_val = int(round(val_fraction * n_train))
    kept = n_train - n_val
    labeled = labeled_frames(kept, n_labeled, label_seed)

    def samples(frames, indices, split):
        return [make_sample(frames[i], i, split, crop_size, margin, cube_mm, encoding) for i in indices]

    write_tars(out / "train", samples(train, range(kept), "train"), shard_size)
    write_tars(out / "val", samples(train, range(kept, n_train), "val"), shard_size)
    write_tars(out / "test", samples(test, range(n_test), "test"), shard_size)
    labeled_dir = out / "labeled" / f"seed{label_seed}-n{n_labeled}"
    write_tars(labeled_dir, samples(train, labeled, "train"), shard_size)
    if root is not None:
        write_nyu_root(Path(root), {"train": train, "test": test})
    return {"train": list(range(kept)), "val": list(range(kept, n_train)), "test": list(range(n_test)),
            "labeled": labeled, "labeled_dir": labeled_dir, "frames": {"train": train, "test": test}}


def write_nyu_root(root: Path, splits: dict) -> None:
    """Full 640x480 frames in the NYU layout (3-channel PNGs, joint_data.mat)."""
    for split, frames in splits.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(frames):
            for (domain, cam), depth in frame["depth"].items():
                (folder / nyu.depth_filename(domain, cam, index)).write_bytes(nyu.encode_depth_png(depth, "nyu-rgb"))
        uvd = np.stack([f["uvd"] for f in frames], axis=1)
        xyz = np.stack([f["xyz"] for f in frames], axis=1)
        scipy.io.savemat(folder / "joint_data.mat", {"joint_uvd": uvd, "joint_xyz": xyz})

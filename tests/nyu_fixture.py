"""Hand-made NYU-layout folders for tests (no procedural generator needed)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import scipy.io

from murauer_dist import geometry
from murauer_dist.frames.datasets import NYU
from murauer_dist.frames import nyu
from murauer_dist.shards.cli import make_shard_set
from murauer_dist.shards.handmade import make_nyu_layout

__all__ = ["make_nyu_layout", "edit_joints", "real_frame_layout", "layout_with_shards", "SHARD_ARGS"]

SHARD_ARGS = ["data.crop_size=32", "data.val_fraction=0.1"]      # the tiny preset's crops, a val split


def layout_with_shards(base: Path, frames_train: int) -> dict:
    """A hand-made NYU-layout dataset (4 test frames) and its shards made with SHARD_ARGS:
    {"root": BASE/nyu, "shards": BASE/shards}."""
    root = make_nyu_layout(base / "nyu", frames_train=frames_train, frames_test=4, seed=3)
    make_shard_set(str(root), str(base / "shards"), workers=1, overrides=SHARD_ARGS, log=lambda *a, **k: None)
    return {"root": root, "shards": base / "shards"}


def edit_joints(root: Path, split: str, edit) -> None:
    """Load ROOT/split/joint_data.mat, let `edit(joints)` change joint_uvd/joint_xyz in place, save it."""
    path = Path(root) / split / "joint_data.mat"
    mat = scipy.io.loadmat(path, variable_names=["joint_uvd", "joint_xyz"])
    joints = {key: np.asarray(mat[key], dtype=np.float64) for key in ("joint_uvd", "joint_xyz")}
    edit(joints)
    scipy.io.savemat(path, joints)


def real_frame_layout(root: Path, nyu_files: Path, gt_uvd: np.ndarray) -> Path:
    """ROOT/test/ with the real NYU test frame 1 in every camera and domain and its GT (line 1) as labels.

    The 14 evaluated joints sit at their NYU indices; the other 22 repeat the palm centre.
    """
    folder = Path(root) / "test"
    folder.mkdir(parents=True)
    for domain in nyu.DOMAINS:
        for cam in range(1, NYU.num_cameras + 1):
            shutil.copyfile(nyu_files / "test" / "depth_1_0000001.png", folder / nyu.depth_filename(domain, cam, 0))
    uvd = np.repeat(gt_uvd[geometry.CENTER_JOINT][None], NYU.joints.source_count, axis=0)
    uvd[list(geometry.EVAL_JOINTS)] = gt_uvd
    uvd = np.broadcast_to(uvd, (3, 1, NYU.joints.source_count, 3)).copy()
    scipy.io.savemat(folder / "joint_data.mat", {"joint_uvd": uvd, "joint_xyz": geometry.uvd_to_xyz(uvd, camera=NYU.camera)})
    return Path(root)

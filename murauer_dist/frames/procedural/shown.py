"""The pose each real frame of a procedural dataset shows, where its label is another one.

Under a realism profile with a fitting error (nyu-fit), labels and synthetic twins are at the fitted
pose and the real frame shows the actor's true pose, as NYU's labels come from a model fitted to each
frame. Only the generator knows the true pose. It is made again here from procedural.json (seed,
frame counts, realism profile): the pose sequence alone, no rendering (about 3 ms a frame). The
labels made again are compared with the split's joint_data.mat, so data from another generator
version is refused instead of measured against the wrong poses.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from murauer_dist.frames.procedural.frames import FrameRenderer, GeneratorSettings, make_split_sequence
from murauer_dist.frames.procedural.realism import DEFAULT_PROFILE, PROFILES, changed_parameters
from murauer_dist.frames.datasets import DEFAULT_DATASET
from murauer_dist.errors import UserError

LABEL_TOLERANCE_MM = 0.01                # joint_data.mat stores float32 millimetres


class ShownPoseError(UserError):
    """A procedural dataset whose labels cannot be made again from its record."""


def shown_poses(root: str | Path, split: str = "test") -> dict[str, np.ndarray] | None:
    """{"shown": (N, J, 3), "labels": (N, J, 3)} camera-1 joints of every frame of `split`, in the
    dataset's axes; None where the labels are the shown poses (no fitting error, or no procedural.json:
    a real NYU download, whose true poses nobody has)."""
    root = Path(root)
    record_path = root / "procedural.json"
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    realism = PROFILES.get((record.get("realism") or {}).get("name", DEFAULT_PROFILE))
    if realism is None or changed_parameters(realism, record.get("realism")):
        raise ShownPoseError(f"{record_path}: realism settings this generator does not make; the shown poses can "
                             f"only be made again by the generator version that wrote the data")
    if not realism.fitting.enabled:
        return None
    settings = GeneratorSettings.for_dataset(record.get("dataset", DEFAULT_DATASET), realism=realism)
    frames, seed = int(record["frames"][split]), int(record["seed"])
    renderer = FrameRenderer(seed, split, make_split_sequence(seed, split, frames, settings), settings)
    pairs = [renderer.shown_and_labeled_xyz(index) for index in range(frames)]
    shown = np.stack([pair[0][0] for pair in pairs])             # camera 1
    labels = np.stack([pair[1][0] for pair in pairs])
    _check_labels(root / split / "joint_data.mat", labels)
    return {"shown": shown, "labels": labels}


def _check_labels(mat_path: Path, labels: np.ndarray) -> None:
    stored = loadmat(mat_path, variable_names=["joint_xyz"])["joint_xyz"][0]
    if stored.shape != labels.shape:
        raise ShownPoseError(f"{mat_path}: joint_xyz holds {stored.shape[0]} frames x {stored.shape[1]} joints for "
                             f"camera 1, the generator makes {labels.shape[0]} x {labels.shape[1]} from procedural.json")
    worst = float(np.abs(stored - labels).max())
    if worst > LABEL_TOLERANCE_MM:
        raise ShownPoseError(f"{mat_path}: labels differ from those the generator makes from procedural.json by up to "
                             f"{worst:.2f} mm: the data comes from another generator version, so its shown poses "
                             f"cannot be made again; make the dataset again to measure them")


def label_distance(poses: dict[str, np.ndarray], joints: list[int]) -> np.ndarray:
    """(N,) per frame, the mean distance (mm) of the label's `joints` from the shown pose's: the error a
    perfect reader of the real frame would make against the labels."""
    return np.linalg.norm(poses["labels"][:, joints] - poses["shown"][:, joints], axis=-1).mean(axis=1)


def shown_pose_error(pred_xyz: np.ndarray, frames: np.ndarray, poses: dict[str, np.ndarray],
                     joints: list[int]) -> float:
    """Mean joint error (mm) of predictions (rows of `frames`, evaluated `joints`) against the poses the
    frames show."""
    return float(np.linalg.norm(pred_xyz - poses["shown"][frames][:, joints], axis=-1).mean())

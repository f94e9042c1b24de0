"""Pose sequences like a capture session: smooth motion between random key poses.

A key pose is a palm position (camera-1 mm), a global rotation, finger angles and a wrist bend.
Frames ease between consecutive keys (smoothstep in position/angles, slerp in rotation), so the
motion is continuous and at rest at each key. Key positions are drawn from a convex set (the hand's
bounding sphere inside camera 1's image, its palm well inside cameras 2 and 3), so every eased
frame in between stays inside it too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from murauer_dist.frames.procedural import hand
from murauer_dist.frames.procedural.rig import Rig

# Named postures (degrees, rows pinky..index then thumb; see hand.ANGLE_LIMITS for the columns).
POSTURES = {
    "open": np.zeros((5, 4)),
    "spread": np.array([[0, 14, 0, 0], [0, 10, 0, 0], [0, 0, 0, 0], [0, 14, 0, 0], [-5, 10, 0, 0]]),
    "fist": np.array([[85, 0, 100, 60], [85, 0, 100, 60], [85, 0, 100, 60], [85, 0, 100, 60], [40, 30, 50, 40]]),
    "point": np.array([[85, 0, 100, 60], [85, 0, 100, 60], [85, 0, 100, 60], [0, 0, 0, 0], [40, 30, 40, 30]]),
    "victory": np.array([[85, 0, 100, 60], [85, 0, 100, 60], [0, 8, 0, 0], [0, 12, 0, 0], [40, 30, 40, 30]]),
    "pinch": np.array([[20, 5, 30, 20], [25, 0, 35, 25], [30, 0, 40, 30], [45, 0, 45, 35], [45, 45, 30, 35]]),
    "relaxed": np.array([[35, 0, 45, 30], [30, 0, 40, 25], [25, 0, 35, 20], [20, 0, 30, 15], [15, 20, 15, 15]]),
    "claw": np.array([[10, 5, 90, 70], [10, 3, 90, 70], [10, 0, 90, 70], [10, 5, 90, 70], [10, 30, 40, 50]]),
}


@dataclass(frozen=True)
class MotionConfig:
    """Ranges of the random key poses and the pacing of the sequence."""

    depth_mm: tuple = (520.0, 980.0)         # palm distance from camera 1
    roll_deg: tuple = (-70.0, 70.0)          # in-plane rotation
    yaw_deg: tuple = (-45.0, 45.0)           # palm turning left/right
    pitch_deg: tuple = (-35.0, 25.0)         # fingers tilting towards/away from the camera
    max_forearm_towards_camera: float = 0.35 # forearm direction's -z component (it leaves the frame)
    segment_frames: tuple = (6, 20)          # frames between two keys
    posture_probability: float = 0.8         # a named posture plus noise, else uniform random angles
    posture_noise_deg: float = 10.0
    side_palm_margin_mm: float = 70.0        # palm sphere radius that must project inside cameras 2 and 3


def sample_angles(rng: np.random.Generator, motion: MotionConfig) -> np.ndarray:
    low, high = hand.ANGLE_LIMITS[..., 0], hand.ANGLE_LIMITS[..., 1]
    if rng.random() < motion.posture_probability:
        names = sorted(POSTURES)
        angles = POSTURES[names[rng.integers(len(names))]] + rng.normal(0.0, motion.posture_noise_deg, (5, 4))
    else:
        angles = rng.uniform(low, high)
        angles[:4, 3] = angles[:4, 2] * rng.uniform(0.5, 0.8, 4)      # DIP follows PIP
    return np.clip(angles, low, high)


def sample_rotation(rng: np.random.Generator, motion: MotionConfig) -> np.ndarray:
    """A global hand rotation whose forearm points away from (not into) camera 1."""
    while True:
        rotation = (hand.rot_z(rng.uniform(*motion.roll_deg)) @ hand.rot_y(rng.uniform(*motion.yaw_deg))
                    @ hand.rot_x(rng.uniform(*motion.pitch_deg)))
        forearm = rotation @ np.array([0.0, -1.0, 0.0])
        if forearm[2] >= -motion.max_forearm_towards_camera:
            return rotation


def sample_position(rng: np.random.Generator, rig: Rig, reach_mm: float, motion: MotionConfig) -> np.ndarray:
    """A palm position whose hand sphere lies inside camera 1 and whose palm lies inside cameras 2/3."""
    for _ in range(10000):
        z = rng.uniform(*motion.depth_mm)
        point = np.array([rng.uniform(-0.5, 0.5) * z, rng.uniform(-0.4, 0.4) * z, z])
        if (rig.frustum_margin(point, 1) >= reach_mm
                and min(rig.frustum_margin(point, 2), rig.frustum_margin(point, 3)) >= motion.side_palm_margin_mm):
            return point
    raise ValueError(f"no palm position keeps a {reach_mm:.0f} mm hand inside camera 1 at depths "
                     f"{motion.depth_mm}; widen MotionConfig.depth_mm")


def smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def make_sequence(rng: np.random.Generator, frames: int, rig: Rig, reach_mm: float,
                  motion: MotionConfig = MotionConfig()) -> dict[str, np.ndarray]:
    """Per-frame pose arrays: position (N,3), rotation (N,3,3), angles (N,5,4), wrist (N,2), segment (N,)."""
    lengths = []
    while sum(lengths) < frames:
        lengths.append(int(rng.integers(motion.segment_frames[0], motion.segment_frames[1] + 1)))
    keys = len(lengths) + 1
    key_pos = np.stack([sample_position(rng, rig, reach_mm, motion) for _ in range(keys)])
    key_rot = Rotation.from_matrix(np.stack([sample_rotation(rng, motion) for _ in range(keys)]))
    key_angles = np.stack([sample_angles(rng, motion) for _ in range(keys)])
    key_wrist = rng.uniform(hand.WRIST_LIMITS[:, 0], hand.WRIST_LIMITS[:, 1], (keys, 2))

    segment = np.repeat(np.arange(len(lengths)), lengths)[:frames]
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    t = smoothstep((np.arange(frames) - start[segment]) / np.asarray(lengths)[segment])
    relative = (key_rot[:-1].inv() * key_rot[1:]).as_rotvec()
    rotation = key_rot[segment] * Rotation.from_rotvec(t[:, None] * relative[segment])
    lerp = lambda keys_: keys_[segment] + (keys_[segment + 1] - keys_[segment]) * t.reshape((-1,) + (1,) * (keys_.ndim - 1))  # noqa: E731,E501
    return {"position": lerp(key_pos), "rotation": rotation.as_matrix(), "angles": lerp(key_angles),
            "wrist": lerp(key_wrist), "segment": segment}

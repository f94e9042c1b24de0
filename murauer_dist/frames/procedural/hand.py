"""A kinematic hand: palm, five fingers, a forearm; NYU's 36-joint labels and a capsule surface.

Hand-local frame (mm): origin at the palm centre (NYU joint 32) inside the palm, fingers along +y,
thumb on the +x side, the palm facing -z (towards camera 1 when the hand is not rotated).

NYU names per finger (F1 = pinky ... F4 = index, TH = thumb), 6 joints each, tip first:
KNU3_A tip, KNU3_B DIP (thumb: IP), KNU2_A middle of the middle phalanx (thumb: of the proximal),
KNU2_B PIP (thumb: MCP), KNU1_A middle of the proximal phalanx (thumb: of the metacarpal),
KNU1_B MCP (thumb: CMC); then PALM_1/2 wrist (pinky/thumb side), PALM_3 palm centre,
PALM_4 index-side palm edge, PALM_5 pinky-side palm edge, PALM_6 thenar pad.
So the 14 evaluated ids [0,3,6,...,24,25,27,30,31,32] are tips, PIPs, thumb tip/IP/MCP, wrist, centre.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FINGERS = ("F1", "F2", "F3", "F4", "TH")          # pinky, ring, middle, index, thumb
KNUCKLES = ("KNU3_A", "KNU3_B", "KNU2_A", "KNU2_B", "KNU1_A", "KNU1_B")
JOINT_NAMES = tuple(f"{f}_{k}" for f in FINGERS for k in KNUCKLES) + tuple(f"PALM_{i}" for i in range(1, 7))
NUM_JOINTS = len(JOINT_NAMES)                     # 36
PALM_CENTER = 32

# Finger angles per frame, shape (5, 4), degrees. Fingers: [mcp_flex, mcp_abd, pip, dip];
# thumb: [opposition (swing across the palm), palmar_abd (out of the palm plane), mcp, ip].
# Plus the wrist: [flex, deviation] bending the forearm relative to the palm.
ANGLE_LIMITS = np.array([
    [[-10, 90], [-15, 15], [0, 105], [0, 80]],    # pinky
    [[-10, 90], [-12, 12], [0, 105], [0, 80]],    # ring
    [[-10, 90], [-10, 10], [0, 105], [0, 80]],    # middle
    [[-10, 90], [-15, 15], [0, 105], [0, 80]],    # index
    [[-10, 60], [0, 60], [0, 60], [-10, 80]],     # thumb
], dtype=np.float64)
WRIST_LIMITS = np.array([[-30, 30], [-20, 20]], dtype=np.float64)

# Template geometry (the synthetic hand). Order pinky, ring, middle, index.
_MCP_XY = np.array([[-28.0, 22.0], [-10.0, 30.0], [8.0, 32.0], [26.0, 29.0]])
_SPLAY_DEG = np.array([12.0, 4.0, -1.0, -7.0])                     # rest direction about the palm normal
_ABDUCTION_SIGN = np.array([1.0, 1.0, -0.5, -1.0])                  # + spreads away from the middle finger
_PHALANX = np.array([[35.0, 21, 20], [45, 29, 23], [48, 31, 24], [43, 27, 22], [42, 38, 25]])
_RADIUS = np.array([[7.5, 7.0, 6.5], [8.5, 8.0, 7.2], [9.0, 8.3, 7.5], [8.8, 8.0, 7.3], [13.0, 10.0, 9.0]])
_CMC = np.array([22.0, -42.0, -6.0])
_THUMB_PRONATION_DEG = 70.0
_WRIST_Y = -66.0
_PALM_HALF_THICKNESS = 13.5
_FOREARM_LENGTH = 900.0
_FOREARM_PIECES = 10
_FOREARM_RADIUS = 21.0


@dataclass(frozen=True)
class HandShape:
    """An actor's hand as factors on the template: lengths, widths and thicknesses."""

    name: str = "template"
    length: float = 1.0                     # all bone lengths
    finger_length: tuple = (1.0, 1.0, 1.0, 1.0, 1.0)   # per finger (pinky .. index, thumb)
    palm_width: float = 1.0
    palm_length: float = 1.0
    finger_thickness: float = 1.0
    palm_thickness: float = 1.0
    forearm_thickness: float = 1.0

    def phalanges(self) -> np.ndarray:
        return _PHALANX * self.length * np.asarray(self.finger_length)[:, None]

    def scale_xy(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy) * np.array([self.palm_width, self.palm_length]) * self.length

    def reach_mm(self) -> float:
        """Largest distance of any hand surface point (not the forearm) from the palm centre."""
        mcp = np.hypot(*self.scale_xy(_MCP_XY).T)
        fingers = mcp + self.phalanges()[:4].sum(axis=1) + _RADIUS[:4, 2] * self.finger_thickness
        thumb = np.linalg.norm(_CMC * self.length) + self.phalanges()[4].sum() + _RADIUS[4, 2] * self.finger_thickness
        wrist = abs(_WRIST_Y) * self.palm_length * self.length + 20.0 * self.palm_thickness
        return float(max(fingers.max(), thumb, wrist))


TEMPLATE = HandShape()
# Two actors (train and test), as in NYU: bigger/thicker, and a second unseen shape for testing.
ACTOR_TRAIN = HandShape("actor-train", length=1.04, finger_length=(1.06, 1.02, 1.05, 1.03, 1.0),
                        palm_width=1.05, palm_length=1.02, finger_thickness=1.18, palm_thickness=1.15,
                        forearm_thickness=1.1)
ACTOR_TEST = HandShape("actor-test", length=0.96, finger_length=(0.97, 1.03, 1.0, 1.04, 1.05),
                       palm_width=0.96, palm_length=1.03, finger_thickness=1.1, palm_thickness=1.05,
                       forearm_thickness=0.95)


def rot_x(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _chain(base: np.ndarray, frame: np.ndarray, lengths: np.ndarray, flexions) -> list[np.ndarray]:
    """Joint positions base -> tip: each segment flexes (towards the palm) about the local x axis."""
    points, rotation = [base], frame
    for length, flex in zip(lengths, flexions):
        rotation = rotation @ rot_x(-flex)
        points.append(points[-1] + rotation @ np.array([0.0, length, 0.0]))
    return points


@dataclass
class HandModel:
    """One hand posed in its local frame: 36 joints and the capsules (a, b, radius) of its surface."""

    joints: np.ndarray                                       # (36, 3)
    capsules: dict[str, np.ndarray] = field(default_factory=dict)   # a (C,3), b (C,3), radius (C,)


def pose_hand(shape: HandShape, angles: np.ndarray, wrist: np.ndarray, arm=None, surface=None) -> HandModel:
    """Forward kinematics of `shape` at finger `angles` (5, 4) and `wrist` (2,) degrees; `arm`, if given,
    makes the forearm capsules instead of the straight forearm: arm(start, axis, radius) -> (a, b, r) lists;
    `surface`, if given, adds capsules: surface(shape, joints) -> (a, b, r) lists."""
    phal = shape.phalanges()
    radius = _RADIUS * shape.finger_thickness
    joints = np.zeros((NUM_JOINTS, 3))
    seg_a, seg_b, seg_r = [], [], []
    for f in range(4):
        mcp_flex, abd, pip, dip = angles[f]
        base = np.append(shape.scale_xy(_MCP_XY[f]), 0.0)
        frame = rot_z(_SPLAY_DEG[f] + _ABDUCTION_SIGN[f] * abd)
        pts = _chain(base, frame, phal[f], (mcp_flex, pip, dip))
        _fill_finger(joints, f, pts)
        seg_a += pts[:3]
        seg_b += pts[1:]
        seg_r += list(radius[f])
    opposition, palmar, mcp, ip = angles[4]
    frame = rot_z(-45.0 + opposition) @ rot_x(-palmar) @ rot_y(_THUMB_PRONATION_DEG)
    pts = _chain(_CMC * shape.length, frame, phal[4], (0.0, mcp, ip))
    _fill_finger(joints, 4, pts)
    seg_a += pts[:3]
    seg_b += pts[1:]
    seg_r += list(radius[4])
    palm_a, palm_b, palm_r = _palm(shape, joints, wrist, arm)
    if surface is not None:
        more_a, more_b, more_r = surface(shape, joints)
        palm_a, palm_b, palm_r = palm_a + more_a, palm_b + more_b, palm_r + more_r
    capsules = {"a": np.array(seg_a + palm_a), "b": np.array(seg_b + palm_b),
                "radius": np.array(seg_r + palm_r)}
    return HandModel(joints, capsules)


def _fill_finger(joints: np.ndarray, finger: int, chain: list[np.ndarray]) -> None:
    base, knuckle, distal, tip = chain                        # MCP (thumb CMC), PIP (MCP), DIP (IP), tip
    first = 6 * finger
    joints[first:first + 6] = [tip, distal, (distal + knuckle) / 2, knuckle, (knuckle + base) / 2, base]


def _palm(shape: HandShape, joints: np.ndarray, wrist: np.ndarray, arm=None):
    """Palm capsules, the palm joints (30-35) and a forearm leaving the wrist (bent by `wrist`)."""
    r_palm = _PALM_HALF_THICKNESS * shape.palm_thickness
    mcp = joints[[5, 11, 17, 23]]
    wrist_y = _WRIST_Y * shape.palm_length * shape.length
    wrist_pinky = np.array([-17.0 * shape.palm_width * shape.length, wrist_y, 0.0])
    wrist_thumb = np.array([17.0 * shape.palm_width * shape.length, wrist_y, 0.0])
    heel = np.stack([mcp[:, 0] * 0.55, np.full(4, wrist_y + 12.0), np.zeros(4)], axis=1)
    joints[30], joints[31], joints[32] = wrist_pinky, wrist_thumb, 0.0
    joints[33] = (mcp[3] + joints[29]) / 2 + np.array([0.0, -6.0, 0.0])   # index-side edge
    joints[34] = np.array([mcp[0, 0], wrist_y * 0.45, 0.0])              # hypothenar edge
    joints[35] = joints[29] + np.array([-8.0, 14.0, -r_palm * 0.4])      # thenar pad
    a = [m for m in mcp] + [mcp[0], wrist_pinky, joints[29]]
    b = [h for h in heel] + [mcp[3], wrist_thumb, np.array([12.0 * shape.palm_width, 2.0, 0.0])]
    r = [r_palm] * 4 + [r_palm * 0.9, r_palm * 1.1, r_palm * 1.05]
    bend = rot_x(wrist[0]) @ rot_z(wrist[1])
    # The forearm leaves the image: long, and cut in pieces so each piece's pixel box stays small.
    start = np.array([0.0, wrist_y - 6.0, 0.0])
    steps = np.linspace(0.0, _FOREARM_LENGTH, _FOREARM_PIECES + 1)
    axis = bend @ np.array([0.0, -1.0, 0.0])
    if arm is not None:
        arm_a, arm_b, arm_r = arm(start, axis, _FOREARM_RADIUS * shape.forearm_thickness)
        return a + arm_a, b + arm_b, r + arm_r
    for near, far in zip(steps[:-1], steps[1:]):
        a.append(start + near * axis)
        b.append(start + far * axis)
        r.append(_FOREARM_RADIUS * shape.forearm_thickness)
    return a, b, r


def transform(model: HandModel, rotation: np.ndarray, position: np.ndarray) -> HandModel:
    """Local frame -> camera-1 coordinates: p = rotation @ p_local + position."""
    move = lambda p: p @ rotation.T + position                # noqa: E731
    caps = {"a": move(model.capsules["a"]), "b": move(model.capsules["b"]), "radius": model.capsules["radius"]}
    return HandModel(move(model.joints), caps)

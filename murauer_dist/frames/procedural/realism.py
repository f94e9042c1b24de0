"""Realism profiles of the procedural dataset: how NYU was recorded and annotated, as generator parameters.

A profile is a named group of parameters, recorded in procedural.json under "realism" (absent for the
default profile). Every profile splits the test sequence like NYU's (the first 30 % of the frames by
the training actor, the rest by the second actor; procedural.json "test_subject_split").

- "default": labels and synthetic twins at the rendered pose; the template's long forearm in both domains.
- "nyu-fit": NYU's labels and its synthetic images come from a hand model fitted to each recorded frame
  (Tompson et al., SIGGRAPH 2014: a LibHand model fitted by PSO to the depth of the three cameras, each
  frame started from the previous frame's fit). So the labels and the twin are one model at the *fitted*
  pose (the twin's joints are the labels), which misses the true one by an error that persists over
  frames; and the recorded frames show the actor's forearm and sleeve, while the fitted model ends
  shortly after the wrist.

Every random draw comes from the seed (its own RNG stream per split), made once in the parent process:
the output does not depend on the number of workers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from murauer_dist.frames.procedural import hand


@dataclass(frozen=True)
class FittingError:
    """The fitted pose minus the true pose: a stationary AR(1) process over the frames of a split.

    Stds are of the stationary process; `correlation` is its frame-to-frame coefficient (a tracker that
    starts each frame from the previous fit keeps its error for several frames: 0.9 at 30 fps is a time
    constant of about 10 frames, a third of a second).
    """

    finger_deg: float = 0.0          # per finger joint angle (the model's joints do not sit on the actor's)
    global_deg: float = 0.0          # per axis of the global rotation error
    translation_mm: float = 0.0      # per axis of the palm position error
    correlation: float = 0.0

    @property
    def enabled(self) -> bool:
        return max(self.finger_deg, self.global_deg, self.translation_mm) > 0


@dataclass(frozen=True)
class ForearmModel:
    """The arm in the real frames (actor) and the fitted model's wrist stub (synthetic twin).

    None of it changes the default profile, which keeps hand.py's straight 900 mm forearm in both domains.
    """

    length_mm: float = 260.0         # wrist to elbow (an adult forearm)
    widening: float = 1.45           # radius at the elbow over the radius at the wrist
    sleeve_from_mm: float = 120.0    # a sleeve starts this far from the wrist ...
    sleeve_mm: float = 7.0           # ... and adds this much radius (a step in the silhouette)
    elbow_bend_deg: float = 100.0    # angle between forearm and upper arm direction (the arm held up)
    upper_arm_mm: float = 250.0
    upper_arm_radius_mm: float = 48.0
    pieces: int = 8                  # forearm capsules (a stepped cone)
    twin_wrist_mm: float = 35.0      # the fitted model's forearm stub beyond the wrist


@dataclass(frozen=True)
class StructuredLight:
    """How a structured-light sensor (NYU: Kinect v1, a PrimeSense projector-camera pair 75 mm apart)
    forms depth, beyond the per-pixel noise of sensor.SensorModel.

    - occlusion: the projector sits beside the camera, so a surface the camera sees but the projector's
      ray cannot reach (behind a nearer one along the baseline) gets no pattern and no depth, pixel by
      pixel: a finger shadows a strip of palm as wide as their disparity difference.
    - window_px: depth comes from matching the pattern over a correlation window of several pixels, so a
      pixel reports what most of its window sees (a median in disparity): gaps narrower than half the
      window close (close fingers merge), corners and tips round off, structures thinner than half the
      window drop out.
    - fatten_px: the match locks onto the strongest (nearest) pattern in the window: the foreground
      grows by about this many pixels along depth edges (a max filter in disparity).
    """

    occlusion: bool = False
    window_px: int = 0               # 0: no window (odd sizes; 5 at 640x480)
    fatten_px: int = 0

    @property
    def enabled(self) -> bool:
        return self.occlusion or self.window_px > 1 or self.fatten_px > 0


@dataclass(frozen=True)
class SurfaceModel:
    """Soft tissue of the real hand that the fitted model's capsules lack (NYU's model is a skinned
    LibHand mesh, its actor a real hand): webbing between the fingers' bases, the thumb-index web and the
    thenar bulge fill the concave corners that a union of capsules leaves. Actor only; not the labels."""

    webbing: float = 0.4             # where the web between neighbouring fingers ends, along the proximal phalanx
    web_radius: float = 0.6          # web thickness over the finger's base radius
    thenar_radius_mm: float = 16.0   # thenar bulge (CMC to the thenar pad), times the palm thickness
    thenar_offset_mm: float = 4.0    # how far the bulge sits towards the palm side


TWIN_MODELS = ("template", "fitted")


@dataclass(frozen=True)
class Realism:
    name: str = "default"
    fitting: FittingError = field(default_factory=FittingError)
    forearm: ForearmModel | None = None
    light: StructuredLight = field(default_factory=StructuredLight)
    surface: SurfaceModel | None = None
    # The synthetic twin's hand: "template" (the template's proportions, no soft tissue) or "fitted" (the
    # model the labels come from: the actor's proportions at the fitted pose, with the surface model, as
    # NYU's twins are renders of the skinned model whose joints are the labels).
    twin: str = "template"
    # Test frames [0, fraction * N) show the training actor, the rest the second (unseen) actor; 0: all the
    # second actor. NYU's test sequence: frames 0-2439 of 8252 (29.6 %) by the person of the training set.
    test_first_actor_fraction: float = 0.3

    def __post_init__(self):
        if self.twin not in TWIN_MODELS:
            raise ValueError(f"realism twin must be one of {', '.join(TWIN_MODELS)}, got {self.twin!r}")

    def test_subject_split(self, frames_test: int) -> int | None:
        """First test frame of the second actor, or None when one actor shows every test frame (fraction 0,
        or a test split too short to hold both)."""
        split = int(round(self.test_first_actor_fraction * frames_test))
        return split if 0 < split < frames_test else None

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "default": Realism(),
    # Fitting error: NYU's frame-independent label noise is below the lowest published mean error on its
    # test labels (7.4 mm, docs/method.md §6.4), since no method predicts noise its image does not show;
    # the profile takes half of that bound: 1.7 degrees per finger joint, 1.0 degree globally, 1.7 mm of
    # palm position give labels 3.7 mm (mean, 14 joints) from the shown pose (docs/data.md, "Sources").
    "nyu-fit": Realism("nyu-fit", FittingError(finger_deg=1.7, global_deg=1.0, translation_mm=1.7, correlation=0.9),
                       ForearmModel(), StructuredLight(occlusion=True, window_px=5, fatten_px=1),
                       surface=SurfaceModel(), twin="fitted"),
}
DEFAULT_PROFILE = "default"


def profile(name: str) -> Realism:
    if name not in PROFILES:
        raise ValueError(f"realism profile must be one of {', '.join(PROFILES)}, got {name!r}")
    return PROFILES[name]


def changed_parameters(realism: Realism, recorded: dict | None) -> list[str]:
    """Top-level keys of `realism` whose values procedural.json's "realism" record (None: the default
    profile, which is not recorded) holds otherwise: data made by another version of the profile."""
    if recorded is None:
        return [] if realism.name == DEFAULT_PROFILE else ["name"]
    return sorted(key for key, value in realism.to_dict().items() if recorded.get(key) != value)


def ar1(rng: np.random.Generator, frames: int, shape: tuple, std: float, correlation: float) -> np.ndarray:
    """A stationary AR(1) sequence (frames, *shape) with marginal std `std` and lag-1 `correlation`."""
    innovation = rng.normal(0.0, std * np.sqrt(1.0 - correlation ** 2), (frames, *shape))
    out = np.empty((frames, *shape))
    out[0] = rng.normal(0.0, std, shape)
    for t in range(1, frames):
        out[t] = correlation * out[t - 1] + innovation[t]
    return out


def fitted_sequence(rng: np.random.Generator, sequence: dict[str, np.ndarray], fitting: FittingError) -> dict:
    """fit_angles (N,5,4), fit_rotation (N,3,3), fit_position (N,3): the fitted pose of every frame."""
    frames = len(sequence["segment"])
    rho = fitting.correlation
    d_angles = ar1(rng, frames, (5, 4), fitting.finger_deg, rho)
    d_rot = ar1(rng, frames, (3,), np.radians(fitting.global_deg), rho)
    d_pos = ar1(rng, frames, (3,), fitting.translation_mm, rho)
    limits = hand.ANGLE_LIMITS
    # The fitter's model has the same joint limits: a fit does not bend a finger backwards.
    angles = np.clip(sequence["angles"] + d_angles, limits[..., 0], limits[..., 1])
    rotation = sequence["rotation"] @ Rotation.from_rotvec(d_rot).as_matrix()     # error in the hand frame
    return {"fit_angles": angles, "fit_rotation": rotation, "fit_position": sequence["position"] + d_pos}


def forearm_capsules(start: np.ndarray, axis: np.ndarray, radius: float, model: ForearmModel, twin: bool):
    """Capsules (a, b, r lists) of the arm from `start` along unit `axis` (hand-local, after the wrist bend)."""
    if twin:
        return [start], [start + model.twin_wrist_mm * axis], [radius]
    steps = np.linspace(0.0, model.length_mm, model.pieces + 1)
    a, b, r = [], [], []
    for near, far in zip(steps[:-1], steps[1:]):
        middle = 0.5 * (near + far)
        widen = radius * (1.0 + (model.widening - 1.0) * middle / model.length_mm)
        a.append(start + near * axis)
        b.append(start + far * axis)
        r.append(widen + (model.sleeve_mm if middle >= model.sleeve_from_mm else 0.0))
    elbow = start + model.length_mm * axis
    # The upper arm leaves the elbow back towards the body (+z in the hand frame, behind the back of the hand).
    side = np.cross(axis, np.array([0.0, 0.0, 1.0]))
    side = side / max(np.linalg.norm(side), 1e-9) if np.linalg.norm(side) > 1e-6 else np.array([1.0, 0.0, 0.0])
    upper = Rotation.from_rotvec(np.radians(180.0 - model.elbow_bend_deg) * side).apply(axis)
    for near, far in ((0.0, 0.5), (0.5, 1.0)):
        a.append(elbow + near * model.upper_arm_mm * upper)
        b.append(elbow + far * model.upper_arm_mm * upper)
        r.append(model.upper_arm_radius_mm)
    return a, b, r


def surface_capsules(shape: hand.HandShape, joints: np.ndarray, model: SurfaceModel):
    """Extra capsules (a, b, r lists) of the real hand's surface, from its posed hand-local joints."""
    finger_radius = hand._RADIUS[:, 0] * shape.finger_thickness
    mcp, pip = joints[[5, 11, 17, 23]], joints[[3, 9, 15, 21]]
    web = mcp + model.webbing * (pip - mcp)                      # pinky .. index
    a, b, r = list(web[:-1]), list(web[1:]), list(model.web_radius * np.minimum(finger_radius[:3], finger_radius[1:4]))
    thumb = 0.6 * joints[27] + 0.4 * joints[28]                  # near the thumb's MCP
    a.append(thumb)
    b.append(web[3])
    r.append(model.web_radius * finger_radius[3])
    palm_side = np.array([0.0, 0.0, -model.thenar_offset_mm])    # the palm faces -z
    a.append(joints[29] + palm_side)
    b.append(joints[35] + palm_side)
    r.append(model.thenar_radius_mm * shape.palm_thickness)
    return a, b, r


def pad_capsules(models: list) -> list[dict]:
    """Capsule dicts of `models` padded to one count by repeating each one's last capsule (a copy draws
    the same surface again, so the z-buffer does not change)."""
    count = max(len(m.capsules["radius"]) for m in models)
    out = []
    for m in models:
        repeat = np.r_[np.arange(len(m.capsules["radius"])), np.full(count - len(m.capsules["radius"]), -1)]
        out.append({key: value[repeat] for key, value in m.capsules.items()})
    return out

"""One frame of the procedural dataset: labels and six depth images (real and synthetic, 3 cameras).

"real" = the actor's hand (train or test actor) seen by the sensor model, with clutter;
"synth" = the template hand at the same palm position, rotation and joint angles, rendered clean.
With the "nyu-fit" realism profile (realism.py) the labels and the synthetic twin are one model at the
fitted pose instead (as NYU's: the twin is a render of the model fitted to the real frame, whose joints
are the labels), and the real frame shows the actor's arm.
In the default profile the labels are the actor's joints; they lie inside the template hand too,
because only bone lengths and thicknesses differ by a few per cent.
Every random draw comes from (seed, split, frame) or (seed, split, segment): the output of a frame
does not depend on which worker makes it or in which order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from murauer_dist import geometry
from functools import partial

from murauer_dist.frames.procedural import hand, poses, realism, render, sensor
from murauer_dist.frames.procedural.rig import Rig
from murauer_dist.frames.datasets import DEFAULT_DATASET, DatasetSpec, dataset_spec

SPLIT_CODES = {"train": 0, "test": 1}
ACTORS = {"train": hand.ACTOR_TRAIN, "test": hand.ACTOR_TEST}
_POSES, _SCENE, _FRAME, _FIT = 0, 1, 2, 3          # RNG stream tags


@dataclass(frozen=True)
class GeneratorSettings:
    """Everything that shapes the data besides seed and frame counts; `dataset` names the DatasetSpec
    whose camera the rig carries, whose joints coordinates and depth PNG encoding the files get."""

    sensor: sensor.SensorModel = field(default_factory=sensor.SensorModel)
    motion: poses.MotionConfig = field(default_factory=poses.MotionConfig)
    rig: Rig | None = None                  # None: the default rig with the dataset's camera
    dataset: str = DEFAULT_DATASET
    realism: realism.Realism = field(default_factory=realism.Realism)   # a profile of realism.PROFILES

    def __post_init__(self):
        if self.rig is None:
            object.__setattr__(self, "rig", Rig.default(camera=self.spec.camera))
        if self.rig.camera != self.spec.camera:
            raise ValueError(f"the rig's camera {self.rig.camera} is not dataset {self.dataset!r}'s "
                             f"{self.spec.camera}; use GeneratorSettings.for_dataset")
        if self.spec.num_cameras != len(self.rig.centers):
            raise ValueError(f"dataset {self.dataset!r} has {self.spec.num_cameras} cameras, the procedural rig "
                             f"{len(self.rig.centers)}")

    @classmethod
    def for_dataset(cls, name: str, **fields) -> "GeneratorSettings":
        """Settings of dataset `name`: its camera on the default rig, unless `fields` give a rig."""
        spec = dataset_spec(name)
        fields.setdefault("rig", Rig.default(camera=spec.camera))
        return cls(dataset=spec.name, **fields)

    @property
    def spec(self) -> DatasetSpec:
        return dataset_spec(self.dataset)

    @property
    def reach_mm(self) -> float:
        """Bounding-sphere radius used to keep every shape's hand inside camera 1 (plus a margin)."""
        return max(s.reach_mm() for s in (hand.TEMPLATE, *ACTORS.values())) + 5.0


def split_rng(seed: int, split: str, tag: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODES[split], tag, index])


def make_split_sequence(seed: int, split: str, frames: int, settings: GeneratorSettings) -> dict[str, np.ndarray]:
    """The pose sequence of a whole split, made once (in the parent process)."""
    sequence = poses.make_sequence(split_rng(seed, split, _POSES), frames, settings.rig, settings.reach_mm,
                                   settings.motion)
    if settings.realism.fitting.enabled:
        sequence.update(realism.fitted_sequence(split_rng(seed, split, _FIT), sequence, settings.realism.fitting))
    return sequence


class FrameRenderer:
    """Renders frames of one split; holds the noise bank and the per-segment clutter scenes."""

    def __init__(self, seed: int, split: str, sequence: dict[str, np.ndarray], settings: GeneratorSettings,
                 bank: np.ndarray | None = None):
        self.seed, self.split, self.sequence, self.settings = seed, split, sequence, settings
        self._bank = bank
        self._scenes: dict[int, dict] = {}

    @property
    def bank(self) -> np.ndarray:
        """The sensor's noise bank, made on first use (poses and labels alone do not need it)."""
        if self._bank is None:
            self._bank = sensor.noise_bank(self.seed, self.settings.sensor)
        return self._bank

    def scene(self, segment: int) -> dict:
        if segment not in self._scenes:
            in_segment = self.sequence["segment"] == segment
            self._scenes[segment] = sensor.sample_scene(
                split_rng(self.seed, self.split, _SCENE, segment), self.sequence["position"][in_segment],
                self.settings.reach_mm, self.settings.sensor)
        return self._scenes[segment]

    def actor(self, index: int) -> hand.HandShape:
        """The split's actor; with a realism test subject split, the training actor before it."""
        split = self.settings.realism.test_subject_split(len(self.sequence["segment"])) if self.split == "test" else None
        return ACTORS["train"] if split is not None and index < split else ACTORS[self.split]

    def posed(self, index: int, shape: hand.HandShape, fitted: bool = False, arm=None,
              surface=None) -> hand.HandModel:
        """`shape` at the true pose of frame `index`, or at the fitted one (realism profile; the true one
        when the profile has no fitting error)."""
        seq = self.sequence
        pre = "fit_" if fitted and "fit_angles" in seq else ""
        local = hand.pose_hand(shape, seq[pre + "angles"][index], seq["wrist"][index], arm=arm, surface=surface)
        return hand.transform(local, seq[pre + "rotation"][index], seq[pre + "position"][index])

    def render(self, index: int) -> dict[str, np.ndarray]:
        """{'real': (3,H,W) uint16, 'synth': (3,H,W) uint16, 'uvd'/'xyz': (3,36,3)} for frame `index`; H, W
        are the camera's, xyz in its axes (y up, or down: y negated), uvd projected with it."""
        rig = self.settings.rig
        camera = rig.camera
        profile = self.settings.realism
        if profile.forearm is None and profile.surface is None and not profile.fitting.enabled:  # "default"
            actor, template = self.posed(index, self.actor(index)), self.posed(index, hand.TEMPLATE)
            labeled, capsules = actor, [actor.capsules, template.capsules]
        else:
            # NYU: the real frame shows the actor at its true pose with its arm; labels and synthetic twin
            # come from the hand model fitted to that frame.
            actor = self.posed(index, self.actor(index), arm=self._arm(twin=False), surface=self._surface())
            twin = self.twin(index)
            # posed(fitted=True) is the true pose where the profile has no fitting error
            labeled = twin if profile.twin == "fitted" else self.posed(index, self.actor(index), fitted=True)
            capsules = realism.pad_capsules([actor, twin])
        a = np.stack([rig.to_camera(c["a"], cam) for c in capsules for cam in (1, 2, 3)])
        b = np.stack([rig.to_camera(c["b"], cam) for c in capsules for cam in (1, 2, 3)])
        radius = np.stack([c["radius"] for c in capsules for _ in (1, 2, 3)])
        clean = render.render_capsules(a, b, radius, camera=camera)
        clutter = sensor.render_clutter(self.scene(int(self.sequence["segment"][index])), rig)
        rng = split_rng(self.seed, self.split, _FRAME, index)
        real = np.stack([sensor.apply_sensor(clean[cam], clutter[cam], rng, self.bank, self.settings.sensor, camera,
                                             light=profile.light) for cam in range(3)])
        xyz = self.camera_xyz(labeled.joints)
        return {"real": real, "synth": np.round(clean[3:]).astype(np.uint16),
                "xyz": xyz, "uvd": geometry.xyz_to_uvd(xyz, camera)}

    def _arm(self, twin: bool):
        forearm = self.settings.realism.forearm
        return None if forearm is None else partial(realism.forearm_capsules, model=forearm, twin=twin)

    def _surface(self):
        surface = self.settings.realism.surface
        return None if surface is None else partial(realism.surface_capsules, model=surface)

    def twin(self, index: int) -> hand.HandModel:
        """The synthetic twin's hand of frame `index` (a realism profile with an arm, a surface or a fit):
        twin="fitted" renders the labels' own model (the actor's proportions at the fitted pose, with its
        soft tissue), so its joints are the labels; "template" the template hand at the fitted pose."""
        if self.settings.realism.twin == "fitted":
            return self.posed(index, self.actor(index), fitted=True, arm=self._arm(twin=True), surface=self._surface())
        return self.posed(index, hand.TEMPLATE, fitted=True, arm=self._arm(twin=True))

    def camera_xyz(self, joints: np.ndarray) -> np.ndarray:
        """(3 cameras, J, 3) joint coordinates in each camera's axes (the dataset's y direction)."""
        xyz = self.settings.rig.all_cameras(joints)              # y up
        return xyz if self.settings.rig.camera.y_up else xyz * np.array([1.0, -1.0, 1.0])

    def shown_and_labeled_xyz(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(3, J, 3) each: the joints of the pose the real frame `index` shows (the actor's true pose) and
        of its label (the fitted pose under a realism profile with a fitting error, else the same)."""
        shape = self.actor(index)
        shown = self.camera_xyz(self.posed(index, shape).joints)
        if not self.settings.realism.fitting.enabled:
            return shown, shown
        return shown, self.camera_xyz(self.posed(index, shape, fitted=True).joints)

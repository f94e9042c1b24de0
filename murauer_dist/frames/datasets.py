"""Datasets as data: the camera, the joints and the files of a dataset, chosen by `data.dataset`.

A `DatasetSpec` says everything the pipeline needs to know about a dataset that is not in its files:
the `Camera` (intrinsics, image size, which way y points), the `JointSpec` (how many joints the
source files hold, which of them are evaluated and in which order, the crop-centre joint, labels and
bones for plots), the number of camera slots per frame, how depth is encoded in the PNGs, which
reader opens the folder (frames/readers.py) and where the test set's second subject starts.

The spec travels with the data: `make-shards` records its name in every split's manifest settings
(`settings.dataset`; absent in shard sets of NYU, and in every shard set made before the key
existed), every run records it in its config (`data.dataset`, hence in every checkpoint), and the
loaders, `evaluate` and `score` take the camera and the joints from it. Nothing else in the code
holds a dataset's constants; geometry.py keeps NYU's names only as aliases for old callers.

    DATASETS["nyu"]    NYU hand pose (docs/method.md §1): 640x480, fx=588.03, fy=587.07, ux=320,
                       uy=240, y up, depth in RGB PNGs as (G << 8) | B, 14 of 36 joints evaluated,
                       palm centre (NYU id 32) last, second test subject from frame 2440
    DATASETS["qvga"]   a second sensor in the same folder layout (made by `synth-data --dataset qvga`):
                       320x240, fx=fy=241.42, ux=160, uy=120 (ICVL-like), y down, 16-bit grayscale
                       depth PNGs in mm, 16 joints (palm centre first, then root, middle and tip of
                       thumb, index, middle, ring and little finger, ICVL's order), one test subject
"""
from __future__ import annotations

from dataclasses import dataclass

from murauer_dist.errors import UserError

DEFAULT_DATASET = "nyu"              # what a shard manifest or a config without a dataset key means
DEPTH_ENCODINGS = {
    "nyu-rgb": "8-bit RGB PNG, depth in mm = (G << 8) | B, red unused (NYU)",
    "gray16": "16-bit grayscale PNG, depth in mm",
}


class DatasetError(UserError, ValueError):
    """An unknown dataset name, or data and config that name different datasets."""


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics and image size. x right, z = depth along the optical axis (mm);
    y up (NYU) or down. Projection: u = ux + fx x/z, v = uy - fy_signed y/z (docs/method.md §1.1)."""

    fx: float
    fy: float
    ux: float
    uy: float
    width: int
    height: int
    y_up: bool = True

    @property
    def fy_signed(self) -> float:
        """fy with the sign of the y axis: v = uy - fy_signed * y / z and y = (uy - v) * z / fy_signed."""
        return self.fy if self.y_up else -self.fy

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return (self.width, self.height)


@dataclass(frozen=True)
class JointSpec:
    """Which joints of the source files the pipeline uses, in output order."""

    source_count: int                        # joints per camera and frame in the source files
    evaluated: tuple[int, ...]               # source ids of the evaluated joints, in output order
    center: int                              # index into `evaluated` of the crop centre
    labels: tuple[str, ...]                  # one short label per evaluated joint (tables, plots)
    bones: tuple[tuple[int, int], ...] = ()  # pairs of evaluated-joint indices drawn in the overlays

    def __post_init__(self):
        count = len(self.evaluated)
        if not count or any(not 0 <= j < self.source_count for j in self.evaluated):
            raise ValueError(f"evaluated joints {self.evaluated} must be ids in [0, {self.source_count})")
        if len(set(self.evaluated)) != count or len(self.labels) != count:
            raise ValueError(f"{count} evaluated joints need as many distinct ids and labels ({self.labels})")
        if not 0 <= self.center < count:
            raise ValueError(f"centre joint {self.center} is not an index of the {count} evaluated joints")
        if any(not (0 <= a < count and 0 <= b < count) for a, b in self.bones):
            raise ValueError(f"bones {self.bones} name joints outside the {count} evaluated ones")

    @property
    def count(self) -> int:
        return len(self.evaluated)

    @property
    def center_source(self) -> int:
        """Source id of the crop-centre joint."""
        return self.evaluated[self.center]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    camera: Camera
    joints: JointSpec
    num_cameras: int                         # camera slots per frame (view prediction needs >= 2)
    depth_encoding: str                      # a key of DEPTH_ENCODINGS
    reader: str = "nyu-layout"               # a key of frames/readers.py READERS
    test_subject_split: int | None = None    # first test frame of the second test subject, if any
    test_frames: int | None = None           # frames of the whole test split when fixed (score: a result
                                             # file of this length gets the subject split)
    description: str = ""

    def __post_init__(self):
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(f"depth encoding {self.depth_encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)}")
        if self.num_cameras < 1:
            raise ValueError(f"a dataset needs at least one camera, got {self.num_cameras}")


NYU = DatasetSpec(
    name="nyu",
    camera=Camera(fx=588.03, fy=587.07, ux=320.0, uy=240.0, width=640, height=480, y_up=True),
    joints=JointSpec(
        source_count=36,
        evaluated=(0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32),
        center=13,                           # NYU id 32, the palm centre
        labels=("P1", "P2", "R1", "R2", "M1", "M2", "I1", "I2", "T1", "T2", "T3", "W1", "W2", "C"),
        bones=((0, 1), (1, 13), (2, 3), (3, 13), (4, 5), (5, 13), (6, 7), (7, 13),
               (8, 9), (9, 10), (10, 13), (11, 13), (12, 13))),
    num_cameras=3,
    depth_encoding="nyu-rgb",
    test_subject_split=2440,
    test_frames=8252,
    description="NYU hand pose dataset (docs/method.md §1), or the embedded procedural data in its layout",
)

QVGA = DatasetSpec(
    name="qvga",
    camera=Camera(fx=241.42, fy=241.42, ux=160.0, uy=120.0, width=320, height=240, y_up=False),
    joints=JointSpec(
        source_count=36,                     # the procedural hand's NYU-convention joints
        # palm centre; then root (MCP), middle (PIP; thumb: IP) and tip of thumb, index, middle, ring, little
        evaluated=(32, 27, 25, 24, 23, 21, 18, 17, 15, 12, 11, 9, 6, 5, 3, 0),
        center=0,
        labels=("C", "T0", "T1", "T2", "I0", "I1", "I2", "M0", "M1", "M2", "R0", "R1", "R2", "P0", "P1", "P2"),
        bones=((1, 0), (2, 1), (3, 2), (4, 0), (5, 4), (6, 5), (7, 0), (8, 7), (9, 8),
               (10, 0), (11, 10), (12, 11), (13, 0), (14, 13), (15, 14))),
    num_cameras=3,
    depth_encoding="gray16",
    test_subject_split=None,
    description="a 320x240 sensor with ICVL-like intrinsics, y down, 16-bit grayscale depth PNGs, 16 joints "
                "(`murauer-dist synth-data OUT --dataset qvga`)",
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (NYU, QVGA)}


def dataset_spec(name: str | None = None) -> DatasetSpec:
    """The spec registered as `name` (None or "": NYU, what data without a dataset key means)."""
    name = name or DEFAULT_DATASET
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def spec_of(cfg) -> DatasetSpec:
    """The spec a config names (`data.dataset`)."""
    return dataset_spec(getattr(cfg.data, "dataset", DEFAULT_DATASET))


def recorded_dataset(settings: dict | None) -> str:
    """The dataset a shard manifest's settings record (absent: NYU, as every set made before the key)."""
    return (settings or {}).get("dataset") or DEFAULT_DATASET

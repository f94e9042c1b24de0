"""Datasets as data: the camera, the joints and the files of a dataset, chosen by `data.dataset`.

A `DatasetSpec` says everything the pipeline needs to know about a dataset that is not in its files:
the `Camera` (intrinsics, image size, which way y points), the `JointSpec` (how many joints the
source files hold, which of them are evaluated and in which order, the crop-centre joint, labels and
bones for plots), the number of camera slots per frame, how depth is encoded in the PNGs, which
reader opens the folder (frames/readers.py), whether the layout holds synthetic twins, and the
recording's rules (the test subject split, the smaller second-actor test cube, the side-camera swap).

Specs are YAML files (frames/spec_file.py reads them): the built-ins are configs/datasets/NAME.yaml,
and `data.dataset` is a built-in name or the path of a spec file. `dataset_spec(name_or_path)` is
the one lookup. The spec travels with the data: `make-shards` records its name in every split's
manifest settings (`settings.dataset`; absent for NYU, and in every shard set made before the key
existed) and the whole spec beside them (`dataset_spec`), every run records `data.dataset` in its
config (hence in every checkpoint), and the loaders, `evaluate` and `score` take the camera and the
joints from it. docs/datasets.md says how to add a dataset.

    nyu    NYU hand pose (docs/method.md §1): 640x480, fx=588.03, fy=587.07, ux=320, uy=240, y up,
           depth in RGB PNGs as (G << 8) | B, 14 of 36 joints evaluated, palm centre (NYU id 32)
           last, second test subject from frame 2440
    qvga   a second sensor in the same folder layout (made by `synth-data --dataset qvga`): 320x240,
           fx=fy=241.42, ux=160, uy=120 (ICVL-like), y down, 16-bit grayscale depth PNGs in mm, 16
           joints (palm centre first, then root, middle and tip of each finger, ICVL's order)
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from murauer_dist.errors import UserError
from murauer_dist.frames.spec_file import SpecFileError, build, merged, read_yaml

DEFAULT_DATASET = "nyu"              # what a shard manifest or a config without a dataset key means
SPEC_DIR = Path(__file__).resolve().parent.parent.parent / "configs" / "datasets"   # the built-in specs
BUILT_IN = ("nyu", "qvga")
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
    synthetic: bool = True                   # the layout holds a synthetic twin of every real image
    test_subject_split: int | None = None    # 0-based first test frame of the second test subject, if any
    test_frames: int | None = None           # frames of the whole test split when fixed (score: a result
                                             # file of this length gets the subject split)
    second_actor_from: int = -1              # 0-based test frame from which second_actor_cube_mm applies (-1: never)
    second_actor_cube_mm: float | None = None
    swap_side_cameras_before: int = 0        # train frames < this have physical cameras 2 and 3 swapped
    description: str = ""

    def __post_init__(self):
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(f"depth encoding {self.depth_encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)}")
        if self.num_cameras < 1:
            raise ValueError(f"a dataset needs at least one camera, got {self.num_cameras}")
        if self.second_actor_from >= 0 and not (self.second_actor_cube_mm or 0) > 0:
            raise ValueError(f"second_actor_from {self.second_actor_from} needs a second_actor_cube_mm > 0")
        if self.swap_side_cameras_before and self.num_cameras < 3:
            raise ValueError(f"swap_side_cameras_before needs cameras 2 and 3, the dataset has {self.num_cameras}")

    @property
    def domains(self) -> tuple[str, ...]:
        """The image domains its shards hold: real, and synth where the layout has synthetic twins."""
        return ("real", "synth") if self.synthetic else ("real",)

    def to_dict(self) -> dict:
        """The spec as plain data (what a shard manifest records under `dataset_spec`)."""
        return asdict(self)


def spec_from_dict(tree: dict, origin: str = "a shard manifest's dataset_spec") -> DatasetSpec:
    """Rebuild a spec from to_dict's output (or a spec file's mapping), every key checked."""
    return build(DatasetSpec, tree, Path(origin), {})


def _read_spec(path: Path, seen: tuple = ()) -> dict:
    if path.resolve() in seen:
        raise SpecFileError(f"dataset spec {path}: extends itself through 'base:'")
    tree, _ = read_yaml(path)
    base = tree.pop("base", None)
    if base is None:
        return tree
    base_path = _spec_path(str(base), path.parent)
    if base_path is None:
        raise SpecFileError(f"dataset spec {path}: key 'base': {base!r} is neither a built-in dataset "
                            f"({', '.join(BUILT_IN)}) nor a spec file")
    return merged(_read_spec(base_path, seen + (path.resolve(),)), tree)


def _spec_path(name: str, folder: Path | None = None) -> Path | None:
    """The file of a built-in name, or `name` as a path (relative: to `folder`, else the working folder)."""
    if name in BUILT_IN:
        return SPEC_DIR / f"{name}.yaml"
    path = Path(name).expanduser()
    if folder is not None and not path.is_absolute():
        path = folder / path
    return path if path.suffix in (".yaml", ".yml") or path.is_file() else None


def load_spec_file(path: str | os.PathLike) -> DatasetSpec:
    """The spec of a YAML file, read and checked (SpecFileError names the file and key)."""
    path = Path(path)
    tree = _read_spec(path)
    _, lines = read_yaml(path)
    return build(DatasetSpec, tree, path, lines)


_LOADED: dict[str, tuple[DatasetSpec, str]] = {}     # name -> (spec, where it came from): files and manifests
_FILES: dict[tuple, DatasetSpec] = {}                # (path, mtime, size) -> spec


def register(spec: DatasetSpec, origin: str) -> DatasetSpec:
    """Make `spec` findable by its name in this process; a second, different spec of that name is an error."""
    known = _LOADED.get(spec.name)
    if known is not None and known[0] != spec:
        raise DatasetError(f"dataset name {spec.name!r}: {origin} describes it otherwise than {known[1]}; "
                           f"give one of them another name")
    _LOADED.setdefault(spec.name, (spec, origin))
    return _LOADED[spec.name][0]


def dataset_spec(name: str | os.PathLike | None = None) -> DatasetSpec:
    """The spec `name` means: a built-in (configs/datasets/NAME.yaml), a spec file's path, or the name
    of a spec loaded before in this process (from a file or a shard manifest). None or "": NYU."""
    name = str(name or DEFAULT_DATASET)
    if name in _LOADED and name not in BUILT_IN:
        return _LOADED[name][0]
    path = _spec_path(name)
    if path is None:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(BUILT_IN)}, or the path of a "
                           f"dataset spec file (configs/datasets/*.yaml, docs/datasets.md)")
    if not path.is_file():
        raise DatasetError(f"dataset spec file {path} does not exist (data.dataset is a built-in name: "
                           f"{', '.join(BUILT_IN)}, or the path of a spec YAML file)")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)      # a file edited since is read again
    if key not in _FILES:
        spec = load_spec_file(path)
        if name in BUILT_IN and spec.name != name:
            raise DatasetError(f"{path}: the built-in spec file names dataset {spec.name!r}, expected {name!r}")
        if name not in BUILT_IN and spec.name in BUILT_IN:
            raise DatasetError(f"dataset spec {path}: key 'name': {spec.name!r} is a built-in dataset; give the "
                               f"spec another name")
        _FILES[key] = register(spec, str(path)) if name not in BUILT_IN else spec
    return _FILES[key]


def spec_of(cfg) -> DatasetSpec:
    """The spec a config names (`data.dataset`)."""
    return dataset_spec(getattr(cfg.data, "dataset", DEFAULT_DATASET))


def recorded_dataset(settings: dict | None) -> str:
    """The dataset a shard manifest's settings record (absent: NYU, as every set made before the key)."""
    return (settings or {}).get("dataset") or DEFAULT_DATASET


def manifest_spec(manifest: dict) -> DatasetSpec:
    """The spec a shard manifest was cut with: its recorded `dataset_spec` (registered under its name),
    else the built-in its settings name."""
    name = recorded_dataset(manifest.get("settings"))
    recorded = manifest.get("dataset_spec")
    if isinstance(recorded, dict) and name not in BUILT_IN:
        return register(spec_from_dict(recorded), "a shard manifest")
    return dataset_spec(name)


NYU = dataset_spec("nyu")
QVGA = dataset_spec("qvga")
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (NYU, QVGA)}     # the built-ins

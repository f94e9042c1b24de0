"""What a shard set holds: which source frames go to which split and shard, with which crop settings.

`dataset` names the DatasetSpec (murauer_dist/frames/datasets.py) whose camera, joints and files the shards
were cut with. settings() records it only when it is not NYU: a manifest without it means NYU, so
NYU shard sets keep the settings and fingerprints they had before datasets were data (and stay
resumable and verifiable). The recording's rules (second-actor cube, side-camera swap) come from
frames/sources.py (the spec, or a procedural dataset's own record) and are recorded as before.

The source's splits are "train" and "test" (`source_split`, `source_frames`; manifests made before
the rename say `nyu_split`, `nyu_frames`: from_settings reads both). The fingerprint is computed
over the settings under the old names, so every shard set made before stays resumable.

The plan is a pure function of the config, the rules and the source split lengths, so an interrupted
run restarted with the same arguments plans the same shards (its fingerprint says whether finished
shards fit).
Shard i of a split holds the frames [start + i*shard_size, start + (i+1)*shard_size) of that split;
a skipped frame leaves its shard one sample shorter, it never shifts later frames into other shards.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from murauer_dist import geometry
from murauer_dist.config import Config
from murauer_dist.frames.datasets import DEFAULT_DATASET, DatasetSpec, dataset_spec
from murauer_dist.frames.sources import SourceRules
from murauer_dist.shards.schema import ENCODINGS, SCHEMA_VERSION
from murauer_dist.errors import UserError

SPLIT_CHOICES = {"all": ("train", "val", "test"), "train": ("train", "val"), "test": ("test",)}
LEGACY_NAMES = {"source_split": "nyu_split", "source_frames": "nyu_frames"}   # settings keys before the rename


class PlanError(UserError, ValueError):
    """Shard settings that cannot be planned (split choice, encoding, shard size, val fraction)."""


@dataclass(frozen=True)
class SplitPlan:
    split: str                   # shard split: train | val | test
    source_split: str            # source split the frames come from: train (train, val) or test
    start: int                   # first frame (0-based index in the source split)
    stop: int                    # one past the last frame
    source_frames: int           # frames in the whole source split (for the record)
    crop_size: int
    stored_size: int
    margin: float
    cube_mm: float
    second_actor_cube_mm: float
    second_actor_from: int       # test only; -1 elsewhere
    swap_side_cameras_before: int  # train/val only; 0 elsewhere
    encoding: str
    shard_size: int
    dataset: str = DEFAULT_DATASET   # a dataset name (datasets.dataset_spec)

    @property
    def spec(self) -> DatasetSpec:
        return dataset_spec(self.dataset)

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    @property
    def num_shards(self) -> int:
        return -(-self.num_frames // self.shard_size)

    def shard_frames(self, index: int) -> range:
        first = self.start + index * self.shard_size
        return range(first, min(first + self.shard_size, self.stop))

    def cube_for(self, frame: int) -> float:
        if self.source_split != "test":
            return self.cube_mm
        return geometry.test_cube_mm(frame, self.cube_mm, self.second_actor_cube_mm, self.second_actor_from)

    def physical_camera(self, frame: int, slot: int) -> int:
        """Train frames < swap_side_cameras_before have physical cameras 2 and 3 swapped (NYU)."""
        if self.source_split == "train" and frame < self.swap_side_cameras_before and slot in (2, 3):
            return 5 - slot
        return slot

    def settings(self) -> dict:
        settings = {"schema": SCHEMA_VERSION, **asdict(self)}
        if settings["dataset"] == DEFAULT_DATASET:       # absent means NYU (see the module doc)
            del settings["dataset"]
        return settings

    @property
    def fingerprint(self) -> str:
        return settings_fingerprint(self.settings())

    @classmethod
    def from_settings(cls, settings: dict) -> "SplitPlan":
        """The plan a manifest's settings record (old key names read as the new ones)."""
        names = {old: new for new, old in LEGACY_NAMES.items()}
        values = {names.get(key, key): value for key, value in settings.items() if key != "schema"}
        return cls(**values)


def settings_fingerprint(settings: dict) -> str:
    """The hash of a manifest's settings, over the keys' names before the rename (see the module doc)."""
    legacy = {LEGACY_NAMES.get(key, key): value for key, value in settings.items()}
    return hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:16]


def val_count(train_frames: int, val_fraction: float) -> int:
    """`val` = the last round(val_fraction * N) source train frames."""
    if not 0.0 <= val_fraction < 1.0:
        raise PlanError(f"data.val_fraction must lie in [0, 1), got {val_fraction}")
    return int(round(val_fraction * train_frames))


def plan_splits(cfg: Config, source_lengths: dict[str, int], split: str, rules: SourceRules,
                shard_size: int = 0) -> list[SplitPlan]:
    """The SplitPlans for `split` in {all, train, test}; source_lengths = frames per source split,
    rules = the source's (frames/sources.py)."""
    if split not in SPLIT_CHOICES:
        raise PlanError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    data = cfg.data
    if data.encoding not in ENCODINGS:
        raise PlanError(f"data.encoding must be one of {', '.join(ENCODINGS)}, got {data.encoding!r}")
    size = int(shard_size or data.shard_size)
    if size < 1:
        raise PlanError(f"shard size (--shard-size or data.shard_size) must be >= 1, got {size}")
    common = dict(crop_size=data.crop_size, stored_size=geometry.stored_size(data.crop_size, data.crop_margin),
                  margin=float(data.crop_margin), cube_mm=float(data.cube_mm), encoding=data.encoding,
                  shard_size=size, dataset=dataset_spec(data.dataset).name)
    # the settings record the second-actor cube in every split as before: the data's cube where it
    # never applies (train, val), and where a dataset has no second-actor cube at all
    second_cube = float(rules.second_actor_cube_mm or data.cube_mm)
    plans = []
    for name in SPLIT_CHOICES[split]:
        source_split = "test" if name == "test" else "train"
        total = source_lengths[source_split]
        n_val = val_count(total, data.val_fraction) if source_split == "train" else 0
        start, stop = {"train": (0, total - n_val), "val": (total - n_val, total), "test": (0, total)}[name]
        is_test = source_split == "test"
        plans.append(SplitPlan(
            split=name, source_split=source_split, start=start, stop=stop, source_frames=total,
            second_actor_cube_mm=second_cube if is_test else float(data.cube_mm),
            second_actor_from=int(rules.second_actor_from) if is_test else -1,
            swap_side_cameras_before=0 if is_test else int(rules.swap_side_cameras_before), **common))
    return plans

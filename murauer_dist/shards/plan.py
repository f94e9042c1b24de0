"""What a shard set holds: which NYU frames go to which split and shard, with which crop settings.

`dataset` names the DatasetSpec (murauer_dist/frames/datasets.py) whose camera, joints and files the shards
were cut with. settings() records it only when it is not NYU: a manifest without it means NYU, so
NYU shard sets keep the settings and fingerprints they had before datasets were data (and stay
resumable and verifiable).

The plan is a pure function of the config and the NYU split lengths, so an interrupted run restarted
with the same arguments plans the same shards (its fingerprint says whether finished shards fit).
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
from murauer_dist.shards.schema import ENCODINGS, SCHEMA_VERSION
from murauer_dist.errors import UserError

SPLIT_CHOICES = {"all": ("train", "val", "test"), "train": ("train", "val"), "test": ("test",)}


class PlanError(UserError, ValueError):
    """Shard settings that cannot be planned (split choice, encoding, shard size, val fraction)."""


@dataclass(frozen=True)
class SplitPlan:
    split: str                   # shard split: train | val | test
    nyu_split: str               # NYU folder the frames come from: train (train, val) or test
    start: int                   # first frame (0-based index in the NYU split)
    stop: int                    # one past the last frame
    nyu_frames: int              # frames in the whole NYU split (for the record)
    crop_size: int
    stored_size: int
    margin: float
    cube_mm: float
    second_actor_cube_mm: float
    second_actor_from: int       # test only; -1 elsewhere
    swap_side_cameras_before: int  # train/val only; 0 elsewhere
    encoding: str
    shard_size: int
    dataset: str = DEFAULT_DATASET   # a datasets.DATASETS name

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
        if self.nyu_split != "test":
            return self.cube_mm
        return geometry.test_cube_mm(frame, self.cube_mm, self.second_actor_cube_mm, self.second_actor_from)

    def physical_camera(self, frame: int, slot: int) -> int:
        """NYU train frames < swap_side_cameras_before have physical cameras 2 and 3 swapped."""
        if self.nyu_split == "train" and frame < self.swap_side_cameras_before and slot in (2, 3):
            return 5 - slot
        return slot

    def settings(self) -> dict:
        settings = {"schema": SCHEMA_VERSION, **asdict(self)}
        if settings["dataset"] == DEFAULT_DATASET:       # absent means NYU (see the module doc)
            del settings["dataset"]
        return settings

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def val_count(train_frames: int, val_fraction: float) -> int:
    """`val` = the last round(val_fraction * N) NYU train frames."""
    if not 0.0 <= val_fraction < 1.0:
        raise PlanError(f"data.val_fraction must lie in [0, 1), got {val_fraction}")
    return int(round(val_fraction * train_frames))


def plan_splits(cfg: Config, nyu_lengths: dict[str, int], split: str, shard_size: int = 0) -> list[SplitPlan]:
    """The SplitPlans for `split` in {all, train, test}; nyu_lengths = frames per NYU split."""
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
    plans = []
    for name in SPLIT_CHOICES[split]:
        nyu_split = "test" if name == "test" else "train"
        total = nyu_lengths[nyu_split]
        n_val = val_count(total, data.val_fraction) if nyu_split == "train" else 0
        start, stop = {"train": (0, total - n_val), "val": (total - n_val, total), "test": (0, total)}[name]
        is_test = nyu_split == "test"
        plans.append(SplitPlan(
            split=name, nyu_split=nyu_split, start=start, stop=stop, nyu_frames=total,
            second_actor_cube_mm=float(data.second_actor_cube_mm) if is_test else float(data.cube_mm),
            second_actor_from=int(data.second_actor_from) if is_test else -1,
            swap_side_cameras_before=0 if is_test else int(data.swap_side_cameras_before), **common))
    return plans

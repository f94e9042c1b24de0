"""The recording's rules of one dataset folder: the one place that decides them.

    source_rules(root, spec) -> SourceRules     test subject split, second-actor cube, side-camera swap

They come from the dataset spec (NYU: second subject from test frame 2440, the smaller 249.9 mm cube
from test frame 2441 (the original code switches one frame late), cameras 2 and 3 swapped in train
frames < 29116), except for a procedural dataset: its folder holds its own record (procedural.json,
written by `synth-data`), which gives its subject split; the generator renders neither a camera
swap nor a smaller hand for the smaller cube, so those rules are off there.

make-shards plans the crops with these rules (shards/plan.py records them in every split's
settings) and records the subject split in the test manifest (`source.test_subject_split`), which
`evaluate` reads (subject_split_of_shards) and writes into metrics.json, which `score` reads.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from murauer_dist.errors import UserError
from murauer_dist.frames.datasets import DatasetSpec

PROCEDURAL_RECORD = "procedural.json"          # the procedural dataset's own record (frames/procedural/generate.py)


@dataclass(frozen=True)
class SourceRules:
    test_subject_split: int | None     # 0-based first test frame of the second subject; None: one subject
    second_actor_from: int             # 0-based first test frame cut with second_actor_cube_mm; -1: never
    second_actor_cube_mm: float | None
    swap_side_cameras_before: int      # train frames < this have physical cameras 2 and 3 swapped
    origin: str                        # where the rules come from (for messages)


def procedural_record(root: str | os.PathLike) -> dict | None:
    """ROOT/procedural.json as a dict, or None when the folder is not a procedural dataset."""
    path = Path(root) / PROCEDURAL_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable procedural dataset record ({err}); make the dataset again "
                        f"with `murauer-dist synth-data`") from None
    return record if isinstance(record, dict) else {}


def _int_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def source_rules(root: str | os.PathLike, spec: DatasetSpec) -> SourceRules:
    """The rules make-shards cuts the folder `root` of dataset `spec` with (see the module doc)."""
    record = procedural_record(root)
    if record is not None:
        return SourceRules(_int_or_none(record.get("test_subject_split")), -1, spec.second_actor_cube_mm, 0,
                           f"{Path(root) / PROCEDURAL_RECORD}")
    return SourceRules(spec.test_subject_split, spec.second_actor_from, spec.second_actor_cube_mm,
                       spec.swap_side_cameras_before, f"dataset spec {spec.name!r}")


def subject_split_of_manifest(manifest: dict, spec: DatasetSpec) -> int | None:
    """The test subject split a test split's manifest records (`source.test_subject_split`); a manifest
    made before the key: the rules of its recorded source folder, as make-shards decides them now (that
    folder gone: the spec's split where the settings cut a second actor, as evaluate did before)."""
    source = manifest.get("source") or {}
    if "test_subject_split" in source:
        return _int_or_none(source["test_subject_split"])
    root = source.get("root") or manifest.get("source_root")
    if root and Path(root).is_dir():
        return source_rules(root, spec).test_subject_split
    return spec.test_subject_split if (manifest.get("settings") or {}).get("second_actor_from", -1) >= 0 else None

"""`make-shards --verify OUT`: re-read every shard of a shard set and check it against its manifest.

Per shard: the file exists, its size and SHA-256 match, it parses as a tar, its samples are exactly
the manifest's keys in order, every sample has all members with the schema's sizes, and every
sample's digest matches the one recorded when it was written. A bad shard is named with its first
bad sample key (a flipped byte in a crop, a broken header, a truncation all point at one sample).

The manifest itself is checked against what the samples hold: each sample's meta.json (schema,
split, crop size, stored size, margin, encoding, camera slots) and crop.f32 (cube, scale) must
agree with the manifest's `schema` and `settings`, its frame must lie in its shard's `frames` and
in `settings.start..stop`; the shard list must be the one the settings plan (frame ranges, sample
plus skipped counts) and `fingerprint` must be the hash of `settings`. A mismatch names the
manifest key, the shard and the sample.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from murauer_dist import geometry
from murauer_dist.shards.manifest import MANIFEST, ShardSetError, read_manifest, shard_file, shard_name
from murauer_dist.shards.plan import LEGACY_NAMES, SplitPlan, settings_fingerprint
from murauer_dist.shards.schema import (CROP_FIELDS, CROP_MEMBER, META_MEMBER, SCHEMA_VERSION, SampleLayout,
                                             SchemaError, check_member_size, decode_labels, frame_of_key,
                                             member_names, split_member_name)
from murauer_dist.shards.writer import sample_digest
from murauer_dist.frames.datasets import NYU, DatasetError, DatasetSpec, manifest_spec
from murauer_dist.errors import UserError

PLAN_KEYS = tuple(field.name for field in dataclasses.fields(SplitPlan))
OPTIONAL_PLAN_KEYS = ("dataset",)                                      # absent: NYU (plan.py)
META_SETTINGS = ("crop_size", "stored_size", "margin", "encoding")     # meta.json keys copied from settings


@dataclass
class Problem:
    shard: Path
    key: str          # first bad sample key ("" when the samples are fine but the bytes are not)
    reason: str

    def __str__(self) -> str:
        if self.shard.name == MANIFEST and not self.key:
            return f"{self.shard}: {self.reason}"
        where = f"sample {self.key}" if self.key else "no bad sample (bytes outside the samples)"
        return f"{self.shard}: {where}: {self.reason}"


@dataclass
class Expected:
    """What a split's manifest says the samples of one of its shards hold."""
    schema: object               # manifest["schema"]
    settings: dict               # manifest["settings"]
    spec: DatasetSpec            # the dataset the manifest records (NYU when it names none it knows)
    plan: SplitPlan | None       # None when the settings do not form a plan (reported for the manifest)
    sample_split: str            # meta.json "split" of every sample (labeled subsets keep "train")
    entry: dict                  # the manifest's record of this shard
    entry_key: str               # "shards[3]", for messages

    @property
    def encoding(self) -> str:
        return self.settings.get("encoding", "png")

    @property
    def stored_size(self) -> int:
        return self.settings.get("stored_size", 0)

    @property
    def layout(self) -> SampleLayout:
        return SampleLayout.of_spec(self.spec)


class HashingReader:
    """Read-through wrapper that hashes everything read (one pass for the tar parse and the SHA-256)."""

    def __init__(self, handle):
        self.handle, self.sha256, self.size = handle, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 22):
            pass


def _structure_problem(key: str, members: dict[str, bytes], expected: Expected) -> str | None:
    """Member names and sizes against the schema and the manifest's encoding and stored size."""
    names = set(members)
    wanted = set(member_names(expected.encoding, expected.layout))
    if names != wanted:
        missing, extra = sorted(wanted - names), sorted(names - wanted)
        return f"members differ from the schema (missing {missing}, unexpected {extra})"
    try:
        for name, data in members.items():
            check_member_size(name, data, expected.stored_size, expected.layout)
        frame = json.loads(members[META_MEMBER])["frame"]
    except (SchemaError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        return str(err)
    if frame != frame_of_key(key):
        return f"meta.json says frame {frame}"
    return None


def _differs(manifest_key: str, manifest_value, what: str, value) -> str:
    return f"manifest {manifest_key} = {manifest_value!r}, but the sample's {what} = {value!r}"


def _manifest_mismatch(key: str, members: dict[str, bytes], expected: Expected) -> str | None:
    """The first manifest key that disagrees with what this (intact) sample holds, or None."""
    try:
        meta = json.loads(members[META_MEMBER])
    except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"meta.json unreadable ({err})"
    if not isinstance(meta, dict):
        return "meta.json is not an object"
    settings = expected.settings
    if meta.get("schema") != expected.schema:
        return _differs("schema", expected.schema, "meta.json schema", meta.get("schema"))
    for name in META_SETTINGS:
        if meta.get(name) != settings.get(name):
            return _differs(f"settings.{name}", settings.get(name), f"meta.json {name}", meta.get(name))
    if meta.get("split") != expected.sample_split:
        return _differs("split", expected.sample_split, "meta.json split", meta.get("split"))
    frame = frame_of_key(key)
    frames = expected.entry.get("frames")
    lo, hi = frames if isinstance(frames, list) and len(frames) == 2 else (None, None)
    if not (isinstance(lo, int) and isinstance(hi, int) and lo <= frame < hi):
        return f"frame {frame} lies outside the manifest's {expected.entry_key}.frames {[lo, hi]}"
    start, stop = settings.get("start"), settings.get("stop")
    if not (isinstance(start, int) and isinstance(stop, int) and start <= frame < stop):
        return f"frame {frame} lies outside the manifest's settings.start..stop [{start}, {stop})"
    plan = expected.plan
    if plan is None:
        return None
    layout = expected.layout
    cameras = [plan.physical_camera(frame, slot) for slot in layout.slots]
    if meta.get("cameras") != cameras:
        return (_differs("settings.swap_side_cameras_before", plan.swap_side_cameras_before, "meta.json cameras",
                         meta.get("cameras")) + f" (the settings give {cameras} for frame {frame})")
    crop = decode_labels(CROP_MEMBER, members[CROP_MEMBER], layout).astype(np.float64)
    cube = plan.cube_for(frame)
    second_actor = plan.source_split == "test" and 0 <= plan.second_actor_from <= frame
    cube_key = ("settings.second_actor_cube_mm (frames >= settings.second_actor_from)" if second_actor
                else "settings.cube_mm")
    for slot in layout.slots:
        row = dict(zip(CROP_FIELDS, crop[slot - 1].tolist()))
        if row["cube_mm"] != float(np.float32(cube)):
            return _differs(cube_key, cube, f"crop.f32 cube_mm of camera slot {slot}", row["cube_mm"])
        scale = geometry.CropWindow.around((row["u_c"], row["v_c"], row["d_c"]), cube, plan.stored_size,
                                           margin=plan.margin, camera=expected.spec.camera).scale
        if not math.isclose(row["scale"], scale, rel_tol=1e-5):
            return (f"the sample's crop.f32 scale of camera slot {slot} is {row['scale']:.6g}, but the manifest's "
                    f"settings.stored_size {plan.stored_size}, settings.margin {plan.margin} and cube {cube} give "
                    f"{scale:.6g}")
    return None


def _check_sample(key: str, members: dict[str, bytes], expected_digest: str | None,
                  expected: Expected) -> str | None:
    """Why this sample is bad, or None.

    A sample whose digest differs was damaged after writing: the reason is the first structural fault
    found, else the digest mismatch. An intact sample (digest as written) that disagrees with the
    manifest's schema or settings means the manifest was changed: the reason names that key.
    """
    if expected_digest is None:
        return "key not listed in the manifest"
    try:
        frame_of_key(key)
    except SchemaError as err:
        return str(err)
    if sample_digest(members) != expected_digest:
        return (_structure_problem(key, members, expected)
                or "content differs from what was written (sample digest mismatch)")
    return _manifest_mismatch(key, members, expected) or _structure_problem(key, members, expected)


def _read_samples(reader: HashingReader, digests: dict[str, str], expected: Expected):
    """Walk the tar sample by sample; return (keys passed in order, (first bad key, reason) or None)."""
    order = list(digests)
    seen: list[str] = []
    current, members = None, {}

    def judge() -> str | None:
        wanted = order[len(seen)] if len(seen) < len(order) else None
        if current != wanted:
            return f"unexpected sample here (expected {wanted or 'the end of the shard'})"
        return _check_sample(current, members, digests.get(current), expected)

    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for info in tar:
                key, member = split_member_name(info.name)
                if current is not None and key != current:
                    if reason := judge():
                        return seen, (current, reason)
                    seen.append(current)
                    members = {}
                current = key
                members[member] = tar.extractfile(info).read() if info.isfile() else b""
    except (tarfile.TarError, EOFError, OSError) as err:
        # the break lies inside `current` unless that sample is complete and sound
        if current is not None and judge() is None:
            seen.append(current)
            current = None
        return seen, (current or _next_key(digests, seen), f"unreadable tar ({err})")
    if current is not None:
        if reason := judge():
            return seen, (current, reason)
        seen.append(current)
    return seen, None


def _next_key(digests: dict[str, str], seen: list[str]) -> str:
    remaining = [key for key in digests if key not in set(seen)]
    return remaining[0] if remaining else ""


def verify_shard(path: Path, expected: Expected) -> Problem | None:
    entry = expected.entry
    digests = entry["sample_digests"]
    if not path.is_file():
        return Problem(path, next(iter(digests), ""), "shard file is missing")
    with open(path, "rb") as handle:
        reader = HashingReader(handle)
        seen, bad = _read_samples(reader, digests, expected)
        if bad is not None:
            return Problem(path, bad[0], bad[1])
        reader.drain()
    if len(seen) != entry["samples"]:
        return Problem(path, _next_key(digests, seen), f"{len(seen)} samples, manifest says {entry['samples']}")
    if reader.size != entry["bytes"] or reader.sha256.hexdigest() != entry["sha256"]:
        return Problem(path, "", f"SHA-256/size mismatch ({reader.size} bytes, manifest {entry['bytes']})")
    return None


def _manifest_spec(manifest: dict) -> tuple[DatasetSpec, str | None]:
    """The manifest's dataset (its recorded spec, or a built-in), or (NYU, why not) to go on checking."""
    try:
        return manifest_spec(manifest), None
    except (DatasetError, UserError) as err:
        return NYU, f"manifest settings.dataset = {manifest['settings'].get('dataset')!r}: {err}"


def _settings_plan(settings: dict) -> tuple[SplitPlan | None, str | None]:
    """The SplitPlan the manifest's settings describe (old key names too), or (None, why not)."""
    names = {LEGACY_NAMES.get(key, key) for key in PLAN_KEYS}
    keys = {key for key in settings if key != "schema"}
    renamed = {key for key in PLAN_KEYS if key in keys or LEGACY_NAMES.get(key) in keys}
    missing = [key for key in PLAN_KEYS if key not in renamed and key not in OPTIONAL_PLAN_KEYS]
    unknown = sorted(keys - set(PLAN_KEYS) - names)
    if "schema" not in settings:
        missing.insert(0, "schema")
    if missing or unknown:
        return None, f"manifest settings lack {missing} or hold unknown keys {unknown}"
    return SplitPlan.from_settings(settings), None


def _manifest_problems(manifest: dict, plan: SplitPlan | None) -> list[str]:
    """What in the manifest contradicts itself: fingerprint, schema, sizes, the planned shard list, counts."""
    found = _plan_problems(manifest, plan)
    fingerprint = settings_fingerprint(manifest["settings"])
    if manifest.get("fingerprint") != fingerprint:              # the catch-all, after the specific findings
        found.append(f"manifest fingerprint = {manifest.get('fingerprint')!r} is not the hash of its settings "
                     f"({fingerprint}): the settings were changed after the shards were written")
    return found


def _plan_problems(manifest: dict, plan: SplitPlan | None) -> list[str]:
    settings, split = manifest["settings"], manifest.get("split")
    found = []
    if manifest.get("schema") != SCHEMA_VERSION or settings.get("schema") != manifest.get("schema"):
        found.append(f"manifest schema = {manifest.get('schema')!r} and settings.schema = {settings.get('schema')!r}; "
                     f"these shards follow schema {SCHEMA_VERSION}")
    if plan is None:
        return found
    stored = geometry.stored_size(plan.crop_size, plan.margin)
    if plan.stored_size != stored:
        found.append(f"manifest settings.stored_size = {plan.stored_size}, but settings.crop_size {plan.crop_size} "
                     f"and settings.margin {plan.margin} give {stored}")
    skipped = manifest.get("skipped", [])
    if manifest.get("num_skipped") != len(skipped):
        found.append(f"manifest num_skipped = {manifest.get('num_skipped')!r}, but skipped lists {len(skipped)}")
    for item in skipped:
        if not plan.start <= item.get("frame", -1) < plan.stop:
            found.append(f"manifest skipped frame {item.get('frame')!r} lies outside settings.start..stop "
                         f"[{plan.start}, {plan.stop})")
            break
    if split == "labeled":
        return found
    if settings.get("split") != split:
        found.append(f"manifest settings.split = {settings.get('split')!r}, but split = {split!r}")
    total = plan.source_frames
    bounds = {"train": (0, None), "val": (None, total), "test": (0, total)}.get(split, (None, None))
    if (bounds[0] is not None and plan.start != bounds[0]) or (bounds[1] is not None and plan.stop != bounds[1]) \
            or not 0 <= plan.start <= plan.stop <= total:
        found.append(f"manifest settings.start..stop = [{plan.start}, {plan.stop}) is not a {split} range of "
                     f"settings.source_frames = {total}")
    entries = manifest["shards"]
    if len(entries) != plan.num_shards:
        found.append(f"manifest lists {len(entries)} shard(s), settings.start..stop [{plan.start}, {plan.stop}) and "
                     f"settings.shard_size {plan.shard_size} give {plan.num_shards}")
    for position, entry in enumerate(entries):
        frames = plan.shard_frames(position)
        want = {"index": position, "name": shard_name(position), "frames": [frames.start, frames.stop]}
        for key, value in want.items():
            if entry.get(key) != value:
                found.append(f"manifest shards[{position}].{key} = {entry.get(key)!r}, but the settings give {value!r}")
                break
        else:
            lost = sum(1 for item in skipped if frames.start <= item.get("frame", -1) < frames.stop)
            if entry.get("samples", 0) + lost != len(frames):
                found.append(f"manifest shards[{position}]: {entry.get('samples')} samples + {lost} skipped, but "
                             f"its frames {want['frames']} are {len(frames)}")
    if manifest.get("num_samples", 0) + len(skipped) != plan.num_frames:
        found.append(f"manifest num_samples {manifest.get('num_samples')} + {len(skipped)} skipped != "
                     f"{plan.num_frames} frames in settings.start..stop [{plan.start}, {plan.stop})")
    return found


def verify_split(folder: Path) -> tuple[int, list[Problem]]:
    """(samples checked, problems) of one split folder."""
    manifest = read_manifest(folder)
    where = folder / MANIFEST
    if not isinstance(manifest.get("settings"), dict) or not isinstance(manifest.get("shards"), list):
        return 0, [Problem(where, "", "manifest has no settings object or no shards list")]
    plan, why = _settings_plan(manifest["settings"])
    spec, unknown = _manifest_spec(manifest)
    problems, checked = [], 0
    sample_split = "train" if manifest.get("split") == "labeled" else manifest.get("split")
    for position, entry in enumerate(manifest["shards"]):
        expected = Expected(manifest.get("schema"), manifest["settings"], spec, plan, sample_split, entry,
                            f"shards[{position}]")
        problem = verify_shard(shard_file(folder, entry["name"]), expected)
        if problem:
            problems.append(problem)
        checked += entry["samples"]
    if checked != manifest["num_samples"]:
        problems.append(Problem(where, "", f"shard counts sum to {checked}, "
                                           f"num_samples says {manifest['num_samples']}"))
    reasons = [reason for reason in (why, unknown) if reason] + _manifest_problems(manifest, plan)
    problems += [Problem(where, "", reason) for reason in reasons]
    return checked, problems


def split_folders(out: Path) -> list[Path]:
    folders = [out / name for name in ("train", "val", "test") if (out / name / MANIFEST).is_file()]
    folders += sorted(p.parent for p in (out / "labeled").glob(f"*/{MANIFEST}"))
    return folders


def verify_shard_set(out: str, log=print) -> dict[str, int]:
    """Check every split of OUT; returns {split folder: samples}; raises ShardSetError naming bad shards."""
    out = Path(out)
    folders = split_folders(out)
    if not folders:
        raise ShardSetError(f"{out}: no split folder with a {MANIFEST} (expected {out}/train/{MANIFEST} ...)")
    counts, problems = {}, []
    for folder in folders:
        checked, found = verify_split(folder)
        counts[str(folder.relative_to(out))] = checked
        problems += found
        log(f"{folder.relative_to(out)}: {checked} samples, " + (f"{len(found)} problem(s)" if found else "ok"))
    if problems:
        in_manifests = sum(1 for p in problems if p.shard.name == MANIFEST and not p.key)
        counted = f"{len(problems) - in_manifests} bad shard(s)" + (
            f" and {in_manifests} manifest problem(s)" if in_manifests else "")
        raise ShardSetError(f"{counted} in {out}:\n" + "\n".join(f"  {p}" for p in problems))
    return counts

"""`make-shards --verify OUT`: re-read every shard of a shard set and check it against its manifest.

Per shard: the file exists, its size and SHA-256 match, it parses as a tar, its samples are exactly
the manifest's keys in order, every sample has all members with the schema's sizes, and every
sample's digest matches the one recorded when it was written. A bad shard is named with its first
bad sample key (a flipped byte in a crop, a broken header, a truncation all point at one sample).
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from murauer_dist.data.shards.manifest import MANIFEST, ShardSetError, read_manifest, shard_file
from murauer_dist.data.shards.schema import SchemaError, check_member_size, frame_of_key, member_names
from murauer_dist.data.shards.writer import sample_digest


@dataclass
class Problem:
    shard: Path
    key: str          # first bad sample key ("" when the samples are fine but the bytes are not)
    reason: str

    def __str__(self) -> str:
        where = f"sample {self.key}" if self.key else "no bad sample (bytes outside the samples)"
        return f"{self.shard}: {where}: {self.reason}"


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


def _check_sample(key: str, members: dict[str, bytes], expected_digest: str | None, encoding: str,
                  stored_size: int) -> str | None:
    """Why this sample is bad, or None."""
    if expected_digest is None:
        return "key not listed in the manifest"
    names = set(members)
    wanted = set(member_names(encoding))
    if names != wanted:
        missing, extra = sorted(wanted - names), sorted(names - wanted)
        return f"members differ from the schema (missing {missing}, unexpected {extra})"
    try:
        for name, data in members.items():
            check_member_size(name, data, stored_size)
        frame = json.loads(members["meta.json"])["frame"]
    except (SchemaError, json.JSONDecodeError, KeyError) as err:
        return str(err)
    if frame != frame_of_key(key):
        return f"meta.json says frame {frame}"
    if sample_digest(members) != expected_digest:
        return "content differs from what was written (sample digest mismatch)"
    return None


def _read_samples(reader: HashingReader, digests: dict[str, str], encoding: str, stored_size: int):
    """Walk the tar sample by sample; return (keys passed in order, (first bad key, reason) or None)."""
    order = list(digests)
    seen: list[str] = []
    current, members = None, {}

    def judge() -> str | None:
        expected = order[len(seen)] if len(seen) < len(order) else None
        if current != expected:
            return f"unexpected sample here (expected {expected or 'the end of the shard'})"
        return _check_sample(current, members, digests.get(current), encoding, stored_size)

    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for info in tar:
                key, _, member = info.name.partition(".")
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


def verify_shard(path: Path, entry: dict, encoding: str, stored_size: int) -> Problem | None:
    digests = entry["sample_digests"]
    if not path.is_file():
        return Problem(path, next(iter(digests), ""), "shard file is missing")
    with open(path, "rb") as handle:
        reader = HashingReader(handle)
        seen, bad = _read_samples(reader, digests, encoding, stored_size)
        if bad is not None:
            return Problem(path, bad[0], bad[1])
        reader.drain()
    if len(seen) != entry["samples"]:
        return Problem(path, _next_key(digests, seen), f"{len(seen)} samples, manifest says {entry['samples']}")
    if reader.size != entry["bytes"] or reader.sha256.hexdigest() != entry["sha256"]:
        return Problem(path, "", f"SHA-256/size mismatch ({reader.size} bytes, manifest {entry['bytes']})")
    return None


def verify_split(folder: Path) -> tuple[int, list[Problem]]:
    """(samples checked, problems) of one split folder."""
    manifest = read_manifest(folder)
    settings = manifest["settings"]
    problems, checked = [], 0
    for entry in manifest["shards"]:
        problem = verify_shard(shard_file(folder, entry["name"]), entry, settings["encoding"], settings["stored_size"])
        if problem:
            problems.append(problem)
        checked += entry["samples"]
    if checked != manifest["num_samples"]:
        problems.append(Problem(folder / MANIFEST, "", f"shard counts sum to {checked}, "
                                                       f"num_samples says {manifest['num_samples']}"))
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
        log(f"{folder.relative_to(out)}: {checked} samples, " + (f"{len(found)} bad shard(s)" if found else "ok"))
    if problems:
        raise ShardSetError(f"{len(problems)} bad shard(s) in {out}:\n" + "\n".join(f"  {p}" for p in problems))
    return counts

"""Reading shards for the loaders: finding and checking tars (the schema itself: schema.py).

A header-only scan of each tar (no payload read) gives the sample keys and members; it serves the
sample counts, the rank partitions of the reference loader, the labeled-frame set and the checks:
an empty or missing shard folder is one error naming it; a sample without a member the stream needs
is skipped and counted (loader.bad_samples="skip") or an error naming shard and key ("error").
"""
from __future__ import annotations

import json
import os
import tarfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from murauer_dist.shards.manifest import MANIFEST, ShardSetError, listed_shards, read_manifest
from murauer_dist.shards.schema import META_MEMBER, SampleLayout, check_version, frame_of_key, split_member_name
from murauer_dist.frames.datasets import DatasetSpec, manifest_spec, recorded_dataset, spec_of
from murauer_dist.errors import UserError

MAKE_HINT = "make them with `murauer-dist make-shards --root ROOT --out SHARDS`"


class ShardError(UserError, FileNotFoundError):
    """A shard folder or tar that cannot serve the loader."""


@dataclass(frozen=True)
class TarIndex:
    path: str
    keys: tuple[str, ...]                       # sample keys in tar order
    members: dict                               # key -> frozenset of member suffixes ("real1.png", ...)


def split_tars(shards_dir: str | Path, split: str) -> list[str]:
    """Tars of SHARDS/{split}/ (or of a folder given directly): the manifest's shard list when it
    has one (a full labeled subset points at the train shards), else the sorted shard-*.tar."""
    folder = Path(shards_dir) / split if split else Path(shards_dir)
    manifest = folder / MANIFEST
    tars: list[str] = []
    if manifest.is_file():
        try:
            tars = [str(path) for path in listed_shards(folder, read_manifest(folder))]
        except ShardSetError as err:
            raise ShardError(f"{err}; {MAKE_HINT}") from err
    if not tars:
        tars = sorted(str(p) for p in folder.glob("shard-*.tar"))
    if not tars:
        state = "does not exist" if not folder.exists() else "holds no shard-*.tar"
        raise ShardError(f"no shards: {folder}/shard-*.tar {state}; {MAKE_HINT}")
    missing = [t for t in tars if not Path(t).is_file()]
    if missing:
        raise ShardError(f"{manifest}: lists {missing[0]}, which does not exist ({len(missing)} missing); {MAKE_HINT}")
    return tars


@lru_cache(maxsize=256)
def _scan(path: str, mtime_ns: int) -> TarIndex:
    keys: list[str] = []
    members: dict[str, set] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, suffix = split_member_name(info.name)
                if key not in members:
                    keys.append(key)
                    members[key] = set()
                members[key].add(suffix)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ShardError(f"shard {path}: unreadable tar ({err}); re-make it with make-shards") from err
    return TarIndex(path, tuple(keys), {k: frozenset(v) for k, v in members.items()})


def scan_tar(path: str) -> TarIndex:
    return _scan(str(path), Path(path).stat().st_mtime_ns)


def complete_samples(tars: list[str], needed: list[str], policy: str) -> list[tuple[str, str]]:
    """(tar, key) of every sample holding all `needed` members, in order; the rest skipped or an error."""
    samples, skipped = [], []
    for path in tars:
        index = scan_tar(path)
        for key in index.keys:
            missing = [m for m in needed if m not in index.members[key]]
            if not missing:
                samples.append((path, key))
            elif policy == "error":
                raise ShardError(f"shard {path}, sample {key}: missing {', '.join(missing)}")
            else:
                skipped.append(f"{Path(path).name}:{key}")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} incomplete samples (first: {', '.join(skipped[:3])})", stacklevel=2)
    if not samples:
        raise ShardError(f"no complete samples with {needed} in {tars[0]} ... ({len(tars)} tars)")
    return samples


def count_skipped(tars: list[str], needed: list[str]) -> int:
    total = 0
    for path in tars:
        index = scan_tar(path)
        total += sum(1 for key in index.keys if any(m not in index.members[key] for m in needed))
    return total


def frames_in(tars: list[str]) -> list[int]:
    return [frame_of_key(key, f"shard {path}") for path in tars for key in scan_tar(path).keys]


def first_meta(tars: list[str]) -> dict:
    """meta.json of the first sample; checks the schema version."""
    with tarfile.open(tars[0], "r:") as tar:
        for info in tar:
            if split_member_name(info.name)[1] == META_MEMBER:
                meta = json.loads(tar.extractfile(info).read())
                check_version(meta, f"shard {tars[0]}")
                return meta
    raise ShardError(f"shard {tars[0]}: no {META_MEMBER} member")


def sample_layout(tars: list[str], spec: DatasetSpec) -> SampleLayout:
    """The camera slots (the first sample's meta.json), joints and domains (the dataset's: schema 1
    records neither)."""
    return SampleLayout.of(first_meta(tars), spec)


def check_dataset(cfg, shards_dir: str | Path, split: str) -> DatasetSpec:
    """The config's dataset spec (data.dataset), checked against the one SHARDS/{split}/manifest.json
    records (absent: NYU); a folder without a manifest is taken as the config says."""
    spec = spec_of(cfg)
    manifest = (Path(shards_dir) / split if split else Path(shards_dir)) / MANIFEST
    if manifest.is_file():
        try:
            recorded = read_manifest(manifest.parent)
        except ShardSetError as err:
            raise ShardError(f"{err}; {MAKE_HINT}") from err
        name = recorded_dataset(recorded.get("settings"))
        if name != spec.name:
            other = manifest_spec(recorded)
            raise ShardError(f"{manifest}: shards of dataset {name!r}, but the config says data.dataset="
                             f"{spec.name}; set data.dataset={name} model.num_joints={other.joints.count}, or "
                             f"point data.shards at shards of {spec.name!r}")
    return spec


def check_geometry(tars: list[str], crop_size: int, stored_size: int, encoding: str) -> None:
    meta = first_meta(tars)
    got = (meta.get("crop_size"), meta.get("stored_size"), meta.get("encoding"))
    if got != (crop_size, stored_size, encoding):
        raise ShardError(f"shard {tars[0]}: crop_size/stored_size/encoding {got}, the config expects "
                         f"{(crop_size, stored_size, encoding)}; re-make the shards or set data.crop_size, "
                         f"data.crop_margin and data.encoding to match")


def partition(count: int, part: int, parts: int) -> range:
    """The contiguous index range of `part` of `parts` (DALI's reader split: count*i//parts)."""
    return range(count * part // parts, count * (part + 1) // parts)


def dali_index_paths(tars: list[str]) -> list[str]:
    """DALI index files (`<tar>.idx`) for `tars`, made once with DALI's own wds2idx tool.

    Without them DALI's reader scans every tar each time a pipeline is built (every epoch and
    stream) and logs a warning for each. Written to a temp file and renamed, so ranks racing to
    make the same index are harmless; an index older than its tar is made again.
    """
    from wds2idx import IndexCreator  # lazy: optional: wds2idx (ships with the DALI wheel)

    paths = []
    for tar in tars:
        index = Path(tar + ".idx")
        if not index.is_file() or index.stat().st_mtime_ns < Path(tar).stat().st_mtime_ns:
            tmp = index.with_name(f".{index.name}.{os.getpid()}")
            with IndexCreator(tar, str(tmp), verbose=False) as creator:
                creator.create_index()
            os.replace(tmp, index)
        paths.append(str(index))
    return paths

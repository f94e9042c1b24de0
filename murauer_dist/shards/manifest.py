"""Per-split manifest (manifest.json) and per-shard sidecars; the shard list loaders read.

manifest.json of a split folder:
    {"schema": 1, "split": ..., "source_root": ..., "fingerprint": ..., "settings": {plan},
     "source": {"root", "joint_data" (the labels file), "shards_digest", test: "test_subject_split"},
     "dataset_spec": {the dataset spec, datasets.DatasetSpec.to_dict}, "config": {data section used},
     "num_samples": int, "num_skipped": int,
     "shards": [{"name", "index", "frames": [lo, hi), "samples", "bytes", "sha256", "sample_digests",
                 "source_digest"}],
     "skipped": [{"frame", "key", "reason"}]}
Shard names are relative to the split folder (a full labeled subset points at ../../train/...).
Sidecars (.parts/shard-NNNNNN.json) hold the same per-shard record; they make a run resumable.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from murauer_dist.atomic import atomic_write_text
from murauer_dist.shards.schema import SCHEMA_VERSION
from murauer_dist.errors import UserError

MANIFEST = "manifest.json"
PARTS = ".parts"
MAKE_HINT = "make it with `murauer-dist make-shards ROOT OUT` (or shards/make_shards.py)"


class ShardSetError(UserError, RuntimeError):
    """A shard set that is missing, incomplete, or was made with other settings."""


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def sidecar_path(folder: Path, name: str) -> Path:
    return Path(folder) / PARTS / (Path(name).stem + ".json")


def write_sidecar(folder: Path, record: dict) -> None:
    atomic_write_text(sidecar_path(folder, record["name"]), json.dumps(record, sort_keys=True))


def read_sidecar(folder: Path, name: str) -> dict | None:
    path = sidecar_path(folder, name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ShardSetError(f"{path}: unreadable shard record ({err}); delete it to rewrite that shard") from err


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def shards_source_digest(records: list[dict]) -> str | None:
    """One digest over the shards' source digests (None when a record has none)."""
    digest = hashlib.blake2b(digest_size=16)
    for record in sorted(records, key=lambda record: record["index"]):
        if not record.get("source_digest"):
            return None
        digest.update(f"{record['index']} {record['source_digest']}\n".encode())
    return digest.hexdigest()


def build_manifest(split: str, source_root: str, fingerprint: str, settings: dict, config: dict,
                   records: list[dict], source: dict | None = None) -> dict:
    """`source`: what the shards were cut from (root, joint_data.mat digest, shards' source digest)."""
    records = sorted(records, key=lambda record: record["index"])
    skipped = [item for record in records for item in record["skipped"]]
    shards = [{key: value for key, value in record.items() if key not in ("skipped", "fingerprint", "source_root")}
              for record in records]
    manifest = {"schema": settings.get("schema", SCHEMA_VERSION), "split": split, "source_root": source_root,
                "fingerprint": fingerprint, "settings": settings, "config": config,
                "num_samples": sum(record["samples"] for record in records), "num_skipped": len(skipped),
                "shards": shards, "skipped": skipped}
    if source is not None:
        manifest["source"] = source
    return manifest


def write_manifest(folder: Path, manifest: dict) -> Path:
    path = Path(folder) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a split folder (SHARDS/train, SHARDS/labeled/seed1-n100, ...)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ShardSetError(f"{path} is missing: {Path(folder)} is not a finished shard split; {MAKE_HINT}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ShardSetError(f"{path}: not valid JSON ({err})") from err


def shard_file(folder: str | os.PathLike, name: str) -> Path:
    return Path(os.path.normpath(Path(folder) / name))


def listed_shards(folder: str | os.PathLike, manifest: dict) -> list[Path]:
    """The tars a split folder's manifest lists that hold samples, in order (a full labeled subset
    lists the train shards). Shards whose frames were all skipped are empty tars: readers choke on them."""
    return [shard_file(folder, shard["name"]) for shard in manifest.get("shards", [])
            if isinstance(shard, dict) and "name" in shard and shard.get("samples", 1) > 0]


def shard_paths(shards_dir: str | os.PathLike, split: str = "train") -> list[Path]:
    """Tar files of SHARDS/{split} that hold samples, in order; split may be `labeled/seed1-n100`."""
    return folder_shard_paths(Path(shards_dir) / split)


def folder_shard_paths(folder: str | os.PathLike) -> list[Path]:
    """shard_paths of one split folder, e.g. the Path that ensure_labeled_shards returns."""
    folder = Path(folder)
    paths = listed_shards(folder, read_manifest(folder))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ShardSetError(f"{folder}: {len(missing)} shard(s) listed in {MANIFEST} are missing, first {missing[0]}; "
                            f"rerun make-shards with the same arguments to rewrite them")
    return paths


def num_samples(shards_dir: str | os.PathLike, split: str = "train") -> int:
    return int(read_manifest(Path(shards_dir) / split)["num_samples"])

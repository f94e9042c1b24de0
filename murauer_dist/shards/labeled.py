"""Labeled subsets: which real frames carry labels for (seed, n), written as a small shard set.

The choice follows the original code (docs/method.md §5.6): rng = np.random.RandomState(seed);
the first permutation(N_train) is consumed (by the pre-training loader there); the labeled frames
are the first n of the second permutation. N_train = source train frames minus the val tail. So the
subsets are nested (n=10 is inside n=100 ...). The samples are copied out of the train shards into
SHARDS/labeled/seed{S}-n{n}/ (a folder renamed into place when complete); when n covers all train
frames the train shards are hard-linked instead of copied.
"""
from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import numpy as np

from murauer_dist.shards.manifest import (MANIFEST, ShardSetError, build_manifest, read_manifest, shard_file,
                                               shard_name, write_manifest)
from murauer_dist.shards.schema import frame_of_key, sample_key, split_member_name
from murauer_dist.shards.writer import HashingFile, deterministic_tar_writer, sample_digest
from murauer_dist.errors import with_path


def labeled_frames(n_train: int, n: int, seed: int) -> np.ndarray:
    """The labeled frame indices (0-based, into the train frames) in draw order: §5.6's recipe."""
    if n_train < 1 or n < 1:
        raise ValueError(f"need n_train >= 1 and n >= 1, got n_train={n_train}, n={n}")
    rng = np.random.RandomState(seed)
    rng.permutation(np.arange(n_train))               # 1st draw: consumed by pre-training in the original
    return rng.permutation(np.arange(n_train))[:n]


def labeled_dir(shards_dir: str | os.PathLike, n: int, seed: int) -> Path:
    return Path(shards_dir) / "labeled" / f"seed{seed}-n{n}"


def _read_samples(tar_path: Path, keys: set[str]) -> dict[str, dict[str, bytes]]:
    """Members of the wanted keys from one train shard (headers are skipped over, not read)."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path, mode="r:") as tar:
        for info in tar:
            key, member = split_member_name(info.name)
            if key in keys:
                samples.setdefault(key, {"__key__": key})[member] = tar.extractfile(info).read()
    return samples


def _copy_samples(train_dir: Path, train: dict, frames: list[int], folder: Path) -> list[dict]:
    """Write the chosen frames' samples (frame order) as shards of train's shard size; return records."""
    by_shard: dict[int, list[str]] = {}
    size = train["settings"]["shard_size"]
    for frame in frames:
        by_shard.setdefault((frame - train["settings"]["start"]) // size, []).append(sample_key(frame))
    entries = {entry["index"]: entry for entry in train["shards"]}
    samples = []
    for index, keys in sorted(by_shard.items()):
        entry = entries[index]
        found = _read_samples(shard_file(train_dir, entry["name"]), set(keys))
        for key in keys:
            if key not in entry["sample_digests"]:
                continue                               # skipped when the train shards were made
            if key not in found or sample_digest(found[key]) != entry["sample_digests"][key]:
                raise ShardSetError(f"{train_dir / entry['name']}: sample {key} is missing or differs from its "
                                    f"manifest digest; run `murauer-dist make-shards --verify` on the shard set")
            samples.append(found[key])
    records = []
    for start in range(0, len(samples), size):
        records.append(_write_tar(folder, start // size, samples[start:start + size]))
    return records


def _write_tar(folder: Path, index: int, samples: list[dict]) -> dict:
    path = folder / shard_name(index)
    try:
        with open(path, "wb") as raw:
            hashing = HashingFile(raw)
            with deterministic_tar_writer(hashing) as tar:
                for sample in samples:
                    tar.write(sample)
    except OSError as err:
        raise with_path(err, err.filename or path) from None
    frames = [frame_of_key(s["__key__"]) for s in samples]
    return {"name": path.name, "index": index, "frames": [min(frames), max(frames) + 1], "samples": len(samples),
            "bytes": hashing.size, "sha256": hashing.sha256.hexdigest(),
            "sample_digests": {s["__key__"]: sample_digest(s) for s in samples}, "skipped": []}


def _link_shard(train_dir: Path, entry: dict, folder: Path) -> dict:
    source, target = shard_file(train_dir, entry["name"]), folder / entry["name"]
    try:
        os.link(source, target)
    except OSError:                                    # file system without hard links
        shutil.copyfile(source, target)
    return {**entry, "skipped": []}


def _subset_manifest(train_dir: Path, train: dict, n: int, seed: int, chosen: np.ndarray, folder: Path) -> dict:
    """Write the subset's shards into `folder` and return its manifest."""
    n_train = train["settings"]["stop"] - train["settings"]["start"]
    frames = sorted(int(f) + train["settings"]["start"] for f in chosen)
    if len(frames) == n_train:                         # all of train: the same files, hard-linked
        records = [_link_shard(train_dir, entry, folder) for entry in train["shards"]]
    else:
        records = _copy_samples(train_dir, train, frames, folder)
    manifest = build_manifest("labeled", train["source_root"], train["fingerprint"], train["settings"],
                              train["config"], records, source=train.get("source"))
    if "dataset_spec" in train:                        # the dataset travels with every split folder
        manifest["dataset_spec"] = train["dataset_spec"]
    skipped_in_train = {item["frame"]: item for item in train["skipped"]}
    manifest["skipped"] = [skipped_in_train[f] for f in frames if f in skipped_in_train]
    manifest["num_skipped"] = len(manifest["skipped"])
    manifest["labeled"] = {"seed": seed, "n": n, "n_train": n_train,
                           "frames_in_draw_order": [int(f) + train["settings"]["start"] for f in chosen]}
    return manifest


def check_labeled_request(shards_dir: str | os.PathLike, n: int, seed: int) -> tuple[dict, int, Path]:
    """(train manifest, labeled pool size, subset folder) when SHARDS can serve the labeled subset (seed, n);
    a ShardSetError naming the pool size, or the subset folder cut from other train shards, otherwise.
    Reads manifests only, writes nothing: a training run calls it before its first step."""
    train_dir = Path(shards_dir) / "train"
    train = read_manifest(train_dir)
    n_train = train["settings"]["stop"] - train["settings"]["start"]
    n = int(n)
    if n > n_train:
        raise ShardSetError(f"data.n_labeled={n} is larger than the labeled pool: {train_dir} holds {n_train} train "
                            f"frames (the train split without the data.val_fraction tail); choose data.n_labeled "
                            f"<= {n_train}, or make shards from a larger dataset")
    folder = labeled_dir(shards_dir, n, seed)
    if (folder / MANIFEST).is_file():
        existing = read_manifest(folder)
        if existing["fingerprint"] != train["fingerprint"]:
            raise ShardSetError(f"{folder} was cut from other train shards (fingerprint {existing['fingerprint']}, "
                                f"train now {train['fingerprint']}); delete {folder} to remake it")
        if existing.get("source") != train.get("source"):
            old, new = existing.get("source") or {}, train.get("source") or {}
            raise ShardSetError(f"{folder} was cut from train shards made from another source ({old.get('root')}, "
                                f"shards digest {old.get('shards_digest')}; train now {new.get('root')}, "
                                f"{new.get('shards_digest')}); delete {folder} to remake it")
    return train, n_train, folder


def ensure_labeled_shards(shards_dir: str | os.PathLike, n: int, seed: int) -> Path:
    """SHARDS/labeled/seed{seed}-n{n}/ holding the labeled train samples; made once, atomically.

    n larger than the labeled pool (the train frames: the train split without the val tail) is a
    ShardSetError naming the pool size; n equal to it links the train shards."""
    train_dir = Path(shards_dir) / "train"
    train, n_train, folder = check_labeled_request(shards_dir, n, seed)
    n = int(n)
    if (folder / MANIFEST).is_file():
        return folder
    chosen = labeled_frames(n_train, n, seed)
    temp = folder.parent / f".tmp-{folder.name}.{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        manifest = _subset_manifest(train_dir, train, n, seed, chosen, temp)   # a sibling: same relative paths
        write_manifest(temp, manifest)
        os.rename(temp, folder)
    except OSError:
        if not (folder / MANIFEST).is_file():          # not a concurrent maker that won the rename
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return folder

"""What a training run checks before its first step.

check_training_inputs: everything the config, the manifests and the files can tell before any work,
for every stage the run will train (not only the first): no make-shards is writing the shard set; the
train shards exist, are of the config's dataset, crop size and encoding, and every tar has the size
its manifest records; the validation shards likewise when data.val_fraction > 0; the labeled subset
(data.n_labeled of data.label_seed) can be cut from the labeled pool, or, where it was cut already,
has the sizes its manifest records. A refused run has written nothing (no config.yaml, no metrics),
so the corrected command starts it.
"""
from __future__ import annotations

from pathlib import Path

from murauer_dist import geometry
from murauer_dist.data.batch import stream_sizes
from murauer_dist.folder_lock import check_not_locked

LABELED_STREAMS = ("pairs", "views")


def reads_shards(stream_factory) -> bool:
    """True for the loop's own stream factory (the shard loaders); in-memory test streams read no shards."""
    return (getattr(stream_factory, "__module__", "") == "murauer_dist.train.loop"
            and getattr(stream_factory, "__name__", "") == "default_stream_factory")


def repair_hint(shards: Path) -> str:
    """How to find and repair a damaged shard of the set `shards` (a sentence without its first capital)."""
    return (f"check the set with `murauer-dist make-shards --verify {shards}` and repair it with `murauer-dist "
            f"make-shards ROOT {shards}` (the same arguments as before: it rewrites damaged shards)")


def check_shard_sizes(folder: Path, shards: Path) -> None:
    """ShardError unless every tar the manifest of `folder` lists has the size the manifest records (stat
    calls only: a shard cut short or rewritten after its manifest is refused before training)."""
    from murauer_dist.data.shards.manifest import read_manifest, shard_file
    from murauer_dist.data.shards.read import ShardError
    manifest = read_manifest(folder)
    for entry in manifest.get("shards", []):
        if not isinstance(entry, dict) or "name" not in entry or "bytes" not in entry:
            continue
        path = shard_file(folder, entry["name"])
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ShardError(f"{path} is missing (listed in {folder / 'manifest.json'}); {repair_hint(shards)}") from None
        if size != entry["bytes"]:
            raise ShardError(f"{path}: {size} bytes, but its manifest records {entry['bytes']}: the shard is damaged "
                             f"(cut short?) or was rewritten after its manifest; {repair_hint(shards)}")


def _check_split(cfg, shards: Path, split: str) -> None:
    from murauer_dist.data.shards import read as shard_read
    folder = shards / split
    tars = shard_read.split_tars(shards, split)
    shard_read.check_dataset(cfg, shards, split)
    stored = geometry.stored_size(cfg.data.crop_size, cfg.data.crop_margin)
    shard_read.check_geometry(tars, cfg.data.crop_size, stored, cfg.data.encoding)
    if (folder / "manifest.json").is_file():
        check_shard_sizes(folder, shards)


def check_training_inputs(cfg, plan: list[str], stream_factory) -> None:
    """Refuse, before anything is written, a run that would fail later on its data (see the module doc)."""
    if not reads_shards(stream_factory):
        return
    from murauer_dist.data.shards.labeled import check_labeled_request, labeled_dir
    from murauer_dist.data.shards.manifest import MANIFEST
    shards = Path(cfg.data.shards)
    check_not_locked(shards, "data.shards", "train on them")
    _check_split(cfg, shards, "train")
    if cfg.data.val_fraction > 0:
        _check_split(cfg, shards, "val")
    if any(stream_sizes(cfg, stage).get(name, 0) > 0 for stage in plan for name in LABELED_STREAMS):
        folder = labeled_dir(shards, cfg.data.n_labeled, cfg.data.label_seed)
        if not folder.is_dir():                       # the loader cuts it at stage 2: it must be possible
            check_labeled_request(shards, cfg.data.n_labeled, cfg.data.label_seed)
        elif (folder / MANIFEST).is_file():           # the loader reads it as it is
            check_shard_sizes(folder, shards)

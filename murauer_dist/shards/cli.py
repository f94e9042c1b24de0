"""`murauer-dist make-shards ROOT OUT [--split all|train|test] [--shard-size N] [--workers K] [--preset P]
[--overwrite] [section.key=value ...]` and `murauer-dist make-shards --verify OUT`."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from murauer_dist.config import load_config
from murauer_dist.frames.readers import FrameReader, open_split
from murauer_dist.shards.build import build_split, check_source
from murauer_dist.shards.manifest import MANIFEST, read_manifest
from murauer_dist.shards.plan import SPLIT_CHOICES, PlanError, plan_splits
from murauer_dist.shards.verify import verify_shard_set
from murauer_dist.frames.datasets import DatasetSpec, spec_of
from murauer_dist.frames.sources import source_rules
from murauer_dist.errors import UserError
from murauer_dist.folder_lock import FolderLock, check_not_locked
from murauer_dist.paths import output_folder, what_is


def _log(message: str) -> None:
    print(message, flush=True)


def open_splits(root: str | Path, source_names: set[str], spec: DatasetSpec) -> dict[str, FrameReader]:
    """Readers of `spec`'s dataset with their labels loaded and at least one depth PNG per domain, else
    one clear LayoutError."""
    splits = {}
    for name in sorted(source_names):
        split = open_split(root, name, spec)
        len(split)                                      # loads and checks the labels file now
        split.check_images()
        splits[name] = split
    return splits


def _drop_stale_labeled(out: Path, train: dict, log) -> None:
    """After --overwrite rewrote train shards: remove the labeled subsets cut from the old ones."""
    for manifest_path in sorted((out / "labeled").glob(f"*/{MANIFEST}")):
        subset = read_manifest(manifest_path.parent)
        if subset.get("source") != train.get("source") or subset.get("fingerprint") != train["fingerprint"]:
            shutil.rmtree(manifest_path.parent)
            log(f"removed {manifest_path.parent}: cut from the train shards before --overwrite (made again on use)")


def unlabeled_note(split: FrameReader, log) -> dict:
    """The manifest note on frames with depth images but no labels (none: {}); says so in the log."""
    extra = split.frames_without_labels()
    if not extra:
        return {}
    labeled = len(split)
    log(f"warning: {split.folder}: {len(extra)} frame(s) have depth images but no labels in {split.labels_path} (it "
        f"labels frames 0..{labeled - 1}; images go up to frame {extra[-1]}): they are not in the shards, and the "
        f"manifest records them as frames_without_labels. If the labels file is cut short, replace it and run "
        f"make-shards again")
    return {"frames_without_labels": {"count": len(extra), "first": extra[0], "last": extra[-1],
                                      "labels_file": f"{split.split}/{split.labels_path.name}",
                                      "labeled_frames": labeled}}


def make_shard_set(root: str, out: str, split: str = "all", shard_size: int = 0, workers: int = 2,
                   preset: str = "", overrides=(), log=_log, overwrite: bool = False) -> dict[str, dict]:
    """Write SHARDS/{train,val,test} for `split`; returns {split: manifest}. Resumes finished shards.

    Finished shards made from another source stop the run (ShardSetError) unless `overwrite`: then
    they are rewritten, and labeled subsets cut from replaced train shards are removed. Frames with
    images but no labels are counted, logged and recorded in the manifests (frames_without_labels).
    One make-shards at a time writes into OUT (an advisory lock, folder_lock.py)."""
    cfg = load_config(preset or None, list(overrides))
    root, out = root or cfg.data.root, out or cfg.data.shards
    if split not in SPLIT_CHOICES:
        raise PlanError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    output_folder(out, "make-shards OUT")
    source_names = {"test" if name == "test" else "train" for name in SPLIT_CHOICES[split]}
    spec = spec_of(cfg)
    splits = open_splits(root, source_names, spec)
    rules = source_rules(root, spec)
    plans = plan_splits(cfg, {name: len(s) for name, s in splits.items()}, split, rules, shard_size)
    config = {"preset": preset, "overrides": [str(o) for o in overrides], "data": cfg.to_dict()["data"]}
    with FolderLock(out, "make-shards OUT"):
        if not overwrite:                               # stop before writing any split, not after some
            for plan in plans:
                check_source(splits[plan.source_split], plan, Path(out))
        notes = {name: unlabeled_note(reader, log) for name, reader in splits.items()}
        manifests, started = {}, time.perf_counter()
        for plan in plans:
            manifests[plan.split] = build_split(splits[plan.source_split], plan, Path(out), config, workers=workers,
                                                log=log, overwrite=overwrite, notes=notes[plan.source_split],
                                                subject_split=rules.test_subject_split)
        if overwrite and "train" in manifests:
            _drop_stale_labeled(Path(out), manifests["train"], log)
    frames = sum(plan.num_frames for plan in plans)
    log(f"done: {frames} frames in {time.perf_counter() - started:.1f} s -> {out}")
    return manifests


def make_shards_command(root: str = "", out: str = "", split: str = "all", shard_size: int = 0, workers: int = 2,
                        preset: str = "", verify: str = "", overrides=(), overwrite: bool = False) -> None:
    """The `make-shards` command; a bad dataset or a bad shard set is a UserError naming it."""
    if verify:
        if not Path(verify).is_dir():
            raise UserError(f"make-shards --verify {verify}: it {what_is(verify)}; give the OUT folder of make-shards")
        check_not_locked(verify, "make-shards --verify OUT", "verify it")
        counts = verify_shard_set(verify, log=_log)
        _log(f"verified {sum(counts.values())} samples in {len(counts)} split folder(s) of {verify}: all ok")
        return
    make_shard_set(root, out, split=split, shard_size=shard_size, workers=workers, preset=preset,
                   overrides=overrides, overwrite=overwrite)

"""Write the shards of one split in parallel (each worker process writes whole shards), resumably.

A restarted run with the same arguments keeps every shard whose sidecar matches the plan's
fingerprint and this run's source (dataset root and the digest of what the shard reads) and whose
bytes still hash to the recorded SHA-256; it rewrites the rest and removes stale temporary files.
Shards made with other settings are an error, never silently mixed in; shards made from another
source are an error too, unless the run was asked to overwrite them (`--overwrite`).
"""
from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from murauer_dist.frames.readers import FrameReader
from murauer_dist.shards.manifest import (MANIFEST, PARTS, ShardSetError, build_manifest, read_sidecar,
                                               sha256_file, shard_name, shards_source_digest, write_manifest)
from murauer_dist.shards.plan import SplitPlan
from murauer_dist.shards.writer import TEMP_PREFIX, source_digest, source_root, write_shard

_WORKER_STATE: dict = {}


def _init_worker(split: FrameReader, plan: SplitPlan, folder: Path) -> None:
    _WORKER_STATE.update(split=split, plan=plan, folder=folder)


def _write_one(index: int) -> dict:
    return write_shard(_WORKER_STATE["split"], _WORKER_STATE["plan"], _WORKER_STATE["folder"], index)


def _context() -> multiprocessing.context.BaseContext:
    # fork shares the loaded joint_data.mat with the workers; elsewhere spawn pickles it once per worker
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _source_change(record: dict, root: str, digest: str) -> str | None:
    """How the source of a finished shard differs from this run's, or None when it is the same."""
    old_root, old_digest = record.get("source_root"), record.get("source_digest")
    if old_root is None or old_digest is None:
        return "its record names no source (written by an older make-shards)"
    if old_root != root:
        return f"made from {old_root}"
    if old_digest != digest:
        return (f"made from {old_root} when its frames were different (a depth PNG's size or mtime, or its "
                f"labels, changed since)")
    return None


def _sidecar(split: FrameReader, folder: Path, plan: SplitPlan, index: int,
             root: str) -> tuple[dict | None, str | None]:
    """(record, None) if shard `index` has a sidecar of this plan and source; (None, None) without a
    sidecar; (None, how its source differs) if made from another source. Other settings raise."""
    record = read_sidecar(folder, shard_name(index))
    if record is None:
        return None, None
    if record.get("fingerprint") != plan.fingerprint:
        raise ShardSetError(
            f"{folder / shard_name(index)} was made with other settings (fingerprint {record.get('fingerprint')}, "
            f"this run {plan.fingerprint}: crop size, margin, cube, encoding, shard size, val fraction or dataset "
            f"length differ); write to a fresh OUT or delete {folder}")
    change = _source_change(record, root, source_digest(split, plan, index))
    return (None, change) if change is not None else (record, None)


def _intact(folder: Path, record: dict) -> bool:
    path = folder / record["name"]
    return path.is_file() and path.stat().st_size == record["bytes"] and sha256_file(path) == record["sha256"]


def _other_source(out: Path, plan: SplitPlan, root: str, changed: list[tuple[int, str]], overwrite: bool,
                  log) -> None:
    """Stop (or, with overwrite, announce the rewrite) when finished shards came from another source."""
    if not changed:
        return
    first, change = changed[0]
    what = (f"{len(changed)} of {plan.num_shards} {plan.split} shard(s) were made from another source, first "
            f"{Path(out) / plan.split / shard_name(first)}: {change}; this run reads {root}")
    if not overwrite:
        raise ShardSetError(f"{Path(out)}: {what}. Rerun with --overwrite to rewrite those shards from {root}, "
                            f"or write to a fresh OUT")
    log(f"{plan.split}: --overwrite: rewriting {len(changed)} shard(s) ({what})")


def check_source(split: FrameReader, plan: SplitPlan, out: Path) -> None:
    """Raise ShardSetError if OUT/{plan.split} holds finished shards made with other settings or from
    another source (stat calls and sidecar reads only; lets a run stop before it writes any split)."""
    folder, root = Path(out) / plan.split, source_root(split)
    if not (folder / PARTS).is_dir():
        return
    changed = []
    for index in range(plan.num_shards):
        _, change = _sidecar(split, folder, plan, index, root)
        if change is not None:
            changed.append((index, change))
    _other_source(out, plan, root, changed, overwrite=False, log=None)


def _check_no_strangers(folder: Path, plan: SplitPlan) -> None:
    expected = {shard_name(i) for i in range(plan.num_shards)}
    strangers = sorted(p.name for p in folder.glob("shard-*.tar") if p.name not in expected)
    if strangers:
        raise ShardSetError(f"{folder} holds shards this run would not write ({strangers[0]} ...; "
                            f"made with another shard size or dataset?); write to a fresh OUT or delete {folder}")


def _remove_stale_temps(folder: Path) -> None:
    for temp in list(folder.glob(f"{TEMP_PREFIX}*")) + list((folder / PARTS).glob(".*.json.*")):
        temp.unlink(missing_ok=True)


def _run(split: FrameReader, plan: SplitPlan, folder: Path, todo: list[int], workers: int, log) -> list[dict]:
    records, started = [], time.perf_counter()
    if workers <= 1 or len(todo) <= 1:
        for index in todo:
            records.append(write_shard(split, plan, folder, index))
            log(f"  {plan.split}: shard {index + 1}/{plan.num_shards} written")
        return records
    with _context().Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(split, plan, folder)) as pool:
        for record in pool.imap_unordered(_write_one, todo):
            records.append(record)
            rate = sum(len(plan.shard_frames(r["index"])) for r in records) / (time.perf_counter() - started)
            log(f"  {plan.split}: {len(records)}/{len(todo)} shards written ({rate:.1f} frames/s)")
    return records


def split_source(split: FrameReader, records: list[dict], plan: SplitPlan, subject_split: int | None) -> dict:
    """The manifest's `source`: resolved root, the labels file (size, SHA-256; key `joint_data` as in
    every manifest before), digest over the shards' sources; a test split adds its subject split."""
    labels = split.labels_path
    source = {"root": source_root(split), "shards_digest": shards_source_digest(records),
              "joint_data": {"name": f"{split.split}/{labels.name}", "bytes": labels.stat().st_size,
                             "sha256": sha256_file(labels)}}
    if plan.source_split == "test":
        source["test_subject_split"] = subject_split
    return source


def build_split(split: FrameReader, plan: SplitPlan, out: Path, config: dict, workers: int = 1,
                log=print, overwrite: bool = False, notes: dict | None = None,
                subject_split: int | None = None) -> dict:
    """Write (or finish) SHARDS/{plan.split}; return its manifest.

    Finished shards made from another source (root, depth PNGs, labels) stop the run with a
    ShardSetError before anything is written, or are rewritten when `overwrite` is set. `notes` are
    added to the manifest (e.g. frames_without_labels); `subject_split` (frames/sources.py) goes into
    a test split's `source`; the dataset spec into `dataset_spec`.
    """
    folder = Path(out) / plan.split
    (folder / PARTS).mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(folder)
    _check_no_strangers(folder, plan)
    root = source_root(split)
    done, changed = {}, []
    for index in range(plan.num_shards):
        record, change = _sidecar(split, folder, plan, index, root)
        if change is not None:
            changed.append((index, change))
        elif record is not None and _intact(folder, record):
            done[index] = record
    _other_source(out, plan, root, changed, overwrite, log)
    todo = [index for index in range(plan.num_shards) if index not in done]
    log(f"{plan.split}: frames {plan.start}..{plan.stop - 1} of source split {plan.source_split} -> {plan.num_shards} shard(s) "
        f"in {folder} ({len(done)} already finished, {len(todo)} to write)")
    records = list(done.values()) + _run(split, plan, folder, todo, workers, log)
    manifest = build_manifest(plan.split, root, plan.fingerprint, plan.settings(), config, records,
                              source=split_source(split, records, plan, subject_split))
    manifest["dataset_spec"] = split.spec.to_dict()
    manifest.update(notes or {})
    write_manifest(folder, manifest)
    log(f"{plan.split}: {manifest['num_samples']} samples, {manifest['num_skipped']} frame(s) skipped -> "
        f"{folder / MANIFEST}")
    for item in manifest["skipped"][:5]:
        log(f"  skipped {item['key']}: {item['reason']}")
    if manifest["num_skipped"] > 5:
        log(f"  ... {manifest['num_skipped'] - 5} more in the manifest")
    return manifest

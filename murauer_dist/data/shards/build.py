"""Write the shards of one split in parallel (each worker process writes whole shards), resumably.

A restarted run with the same arguments keeps every shard whose sidecar matches the plan's
fingerprint and whose bytes still hash to the recorded SHA-256; it rewrites the rest and removes
stale temporary files. Shards made with other settings are an error, never silently mixed in.
"""
from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from murauer_dist.data import nyu
from murauer_dist.data.shards.manifest import (MANIFEST, PARTS, ShardSetError, build_manifest, read_sidecar,
                                               sha256_file, shard_name, write_manifest)
from murauer_dist.data.shards.plan import SplitPlan
from murauer_dist.data.shards.writer import TEMP_PREFIX, write_shard

_WORKER_STATE: dict = {}


def _init_worker(split: nyu.NyuSplit, plan: SplitPlan, folder: Path) -> None:
    _WORKER_STATE.update(split=split, plan=plan, folder=folder)


def _write_one(index: int) -> dict:
    return write_shard(_WORKER_STATE["split"], _WORKER_STATE["plan"], _WORKER_STATE["folder"], index)


def _context() -> multiprocessing.context.BaseContext:
    # fork shares the loaded joint_data.mat with the workers; elsewhere spawn pickles it once per worker
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _finished(folder: Path, plan: SplitPlan, index: int) -> dict | None:
    """The sidecar record of shard `index` if that shard is complete and belongs to this plan."""
    record = read_sidecar(folder, shard_name(index))
    if record is None:
        return None
    if record.get("fingerprint") != plan.fingerprint:
        raise ShardSetError(
            f"{folder / shard_name(index)} was made with other settings (fingerprint {record.get('fingerprint')}, "
            f"this run {plan.fingerprint}: crop size, margin, cube, encoding, shard size, val fraction or dataset "
            f"length differ); write to a fresh OUT or delete {folder}")
    path = folder / shard_name(index)
    if path.is_file() and path.stat().st_size == record["bytes"] and sha256_file(path) == record["sha256"]:
        return record
    return None


def _check_no_strangers(folder: Path, plan: SplitPlan) -> None:
    expected = {shard_name(i) for i in range(plan.num_shards)}
    strangers = sorted(p.name for p in folder.glob("shard-*.tar") if p.name not in expected)
    if strangers:
        raise ShardSetError(f"{folder} holds shards this run would not write ({strangers[0]} ...; "
                            f"made with another shard size or dataset?); write to a fresh OUT or delete {folder}")


def _remove_stale_temps(folder: Path) -> None:
    for temp in list(folder.glob(f"{TEMP_PREFIX}*")) + list((folder / PARTS).glob(".*.json.*")):
        temp.unlink(missing_ok=True)


def _run(split: nyu.NyuSplit, plan: SplitPlan, folder: Path, todo: list[int], workers: int, log) -> list[dict]:
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


def build_split(split: nyu.NyuSplit, plan: SplitPlan, out: Path, config: dict, workers: int = 1,
                log=print) -> dict:
    """Write (or finish) SHARDS/{plan.split}; return its manifest."""
    folder = Path(out) / plan.split
    (folder / PARTS).mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(folder)
    _check_no_strangers(folder, plan)
    done = {}
    for index in range(plan.num_shards):
        record = _finished(folder, plan, index)
        if record is not None:
            done[index] = record
    todo = [index for index in range(plan.num_shards) if index not in done]
    log(f"{plan.split}: frames {plan.start}..{plan.stop - 1} of NYU {plan.nyu_split} -> {plan.num_shards} shard(s) "
        f"in {folder} ({len(done)} already finished, {len(todo)} to write)")
    records = list(done.values()) + _run(split, plan, folder, todo, workers, log)
    manifest = build_manifest(plan.split, str(Path(split.root).resolve()), plan.fingerprint, plan.settings(),
                              config, records)
    write_manifest(folder, manifest)
    log(f"{plan.split}: {manifest['num_samples']} samples, {manifest['num_skipped']} frame(s) skipped -> "
        f"{folder / MANIFEST}")
    for item in manifest["skipped"][:5]:
        log(f"  skipped {item['key']}: {item['reason']}")
    if manifest["num_skipped"] > 5:
        log(f"  ... {manifest['num_skipped'] - 5} more in the manifest")
    return manifest

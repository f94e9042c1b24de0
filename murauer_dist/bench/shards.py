"""`murauer-dist bench shards [--root ROOT] [--frames 300] [--workers 1,2] [--out FILE]`.

Shard writing speed (frames/s per worker, scaling over worker counts, extrapolated time for the
full NYU train set on 16 cores) and the two crop encodings side by side: bytes per crop, encode
time, decode time (PIL / numpy) and, when DALI is installed, DALI CPU decode of the written shards.
Without --root a small hand-made NYU-layout folder is generated first.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds

from murauer_dist.frames.datasets import NYU
from murauer_dist.frames.sources import source_rules
from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.machine import describe, machine
from murauer_dist.config import load_config
from murauer_dist.frames import nyu
from murauer_dist.shards.build import build_split
from murauer_dist.shards.handmade import make_nyu_layout
from murauer_dist.shards.manifest import shard_paths
from murauer_dist.shards.plan import plan_splits
from murauer_dist.shards.schema import META_MEMBER, SampleLayout, crop_member, crop_members, decode_crop, encode_crop

NYU_TRAIN_FRAMES = 72_757
FULL_CORES = 16


def _quiet(*_args, **_kwargs) -> None:
    pass


def _write_run(split: nyu.NyuSplit, frames: int, workers: int, encoding: str, folder: Path) -> dict:
    cfg = load_config(None, [f"data.encoding={encoding}", "data.val_fraction=0"])
    plan = plan_splits(cfg, {"train": len(split)}, "train", source_rules(split.root, split.spec),
                       shard_size=max(1, frames // 8))[0]
    plan = dataclasses.replace(plan, stop=min(frames, plan.stop))
    cpu_before, started = _cpu_seconds(), time.perf_counter()
    manifest = build_split(split, plan, folder, {}, workers=workers, log=_quiet)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
    size = sum(shard["bytes"] for shard in manifest["shards"])
    return {"seconds": seconds, "cpu_seconds": cpu, "frames": plan.num_frames,
            "bytes_per_frame": size / max(1, manifest["num_samples"]), "skipped": manifest["num_skipped"]}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes: a per-core rate that shared,
    busy machines do not distort the way wall time is."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def _median_time(function, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def encoding_table(folder: Path) -> dict[str, dict]:
    """Per-crop size, encode and decode time of both encodings on real crops of the written shards."""
    crops = []
    for sample in wds.WebDataset([str(p) for p in shard_paths(folder, "train")][:1], shardshuffle=False):
        meta = json.loads(sample[META_MEMBER])
        members = crop_members(meta["encoding"], SampleLayout.of_spec(NYU))      # a hand-made NYU layout
        crops += [decode_crop(sample[member], member, meta["stored_size"]) for member in members]
    table = {}
    for encoding in ("png", "raw"):
        member = crop_member("real", 1, encoding)
        encoded = [encode_crop(crop, encoding) for crop in crops]
        size = crops[0].shape[0]
        table[encoding] = {
            "bytes_per_crop": float(np.mean([len(e) for e in encoded])),
            "encode_ms": 1e3 * _median_time(lambda: [encode_crop(c, encoding) for c in crops]) / len(crops),
            "decode_ms": 1e3 * _median_time(lambda: [decode_crop(e, member, size) for e in encoded]) / len(crops)}
    return table


def dali_decode_rate(folder: Path, encoding: str) -> float | None:
    """Samples/s of DALI (CPU, 2 threads) reading and decoding real1 of every sample of the shards."""
    try:
        from nvidia.dali import fn, pipeline_def, types  # lazy: optional: nvidia.dali
    except ImportError:
        return None
    paths = [str(p) for p in shard_paths(folder, "train")]
    size = json.loads((folder / "train" / "manifest.json").read_text())["settings"]["stored_size"]

    @pipeline_def(batch_size=32, num_threads=2, device_id=None, seed=0)
    def pipe():
        if encoding == "png":
            data = fn.readers.webdataset(paths=paths, ext=[crop_member("real", 1, encoding)], name="R")
            return fn.decoders.image(data, output_type=types.ANY_DATA, dtype=types.UINT16)
        data = fn.readers.webdataset(paths=paths, ext=[crop_member("real", 1, encoding)], dtypes=[types.UINT16],
                                     name="R")
        return fn.reshape(data, shape=[size, size, 1])

    pipeline = pipe()
    pipeline.build()
    pipeline.run()                                        # warm-up
    started, batches = time.perf_counter(), 10
    for _ in range(batches):
        pipeline.run()
    return 32 * batches / (time.perf_counter() - started)


def _dataset(root: str, frames: int, scratch: Path) -> nyu.NyuSplit:
    if not root:
        print(f"generating a hand-made NYU-layout folder with {frames} train frames ...", flush=True)
        root = str(make_nyu_layout(scratch / "nyu", frames_train=frames, frames_test=1, seed=0))
    split = nyu.NyuSplit(root, "train", NYU)
    len(split)
    return split


def _worker_counts(workers) -> list[int]:
    if isinstance(workers, (int, float)):
        return [int(workers)]
    items = workers.split(",") if isinstance(workers, str) else workers
    return [int(item) for item in items]


def _print_tables(result: dict) -> None:
    print(f"\n{result['source']}; {result['cpu_count']} cores, load average "
          f"{', '.join(f'{x:.1f}' for x in result['load_average'])}")
    print(describe(result["machine"]))
    print("\n| workers | frames | wall s | frames/s | frames/s per worker | scaling vs 1 | frames per CPU-second |")
    print("|---|---|---|---|---|---|---|")
    for row in result["writing"]:
        print(f"| {row['workers']} | {row['frames']} | {row['seconds']:.2f} | {row['frames_per_s']:.1f} | "
              f"{row['frames_per_s_per_worker']:.1f} | {row['scaling']:.2f} | {row['frames_per_cpu_s']:.1f} |")
    full = result["full_nyu_train"]
    print(f"\nfull NYU train ({NYU_TRAIN_FRAMES} frames x 6 crops) on {FULL_CORES} cores: "
          f"{full['minutes_cpu_bound']:.1f} min at {full['frames_per_cpu_s']:.1f} frames per CPU-second per worker; "
          f"{full['minutes_wall_efficiency']:.1f} min with this machine's wall-clock parallel efficiency "
          f"{full['wall_efficiency']:.2f}")
    print("\n| encoding | bytes/crop | encode ms/crop | decode ms/crop | DALI CPU decode samples/s | "
          "bytes/frame (6 crops + labels) | full NYU train GB |")
    print("|---|---|---|---|---|---|---|")
    for name, row in result["encodings"].items():
        dali = f"{row['dali_samples_per_s']:.0f}" if row.get("dali_samples_per_s") else "n/a"
        print(f"| {name} | {row['bytes_per_crop']:.0f} | {row['encode_ms']:.3f} | {row['decode_ms']:.3f} | {dali} | "
              f"{row['bytes_per_frame']:.0f} | {row['bytes_per_frame'] * NYU_TRAIN_FRAMES / 1e9:.1f} |")


def main(root: str = "", frames: int = 300, workers="1,2", out: str = "", repeats: int = 1) -> dict:
    counts = _worker_counts(workers)
    host = machine()                                      # before the runs: the load of other jobs
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as scratch:
        scratch = Path(scratch)
        split = _dataset(root, frames, scratch)
        rows = []
        for count in counts:
            runs = [_write_run(split, frames, count, "png", scratch / f"png-w{count}-{r}") for r in range(repeats)]
            seconds = statistics.median(run["seconds"] for run in runs)
            cpu = statistics.median(run["cpu_seconds"] for run in runs)
            rows.append({"workers": count, "frames": runs[0]["frames"], "seconds": seconds,
                         "frames_per_s": runs[0]["frames"] / seconds, "frames_per_cpu_s": runs[0]["frames"] / cpu,
                         "bytes_per_frame": runs[0]["bytes_per_frame"]})
        base = next((row for row in rows if row["workers"] == 1), rows[0])
        for row in rows:
            row["frames_per_s_per_worker"] = row["frames_per_s"] / row["workers"]
            row["scaling"] = row["frames_per_s"] / base["frames_per_s"]
        raw = _write_run(split, frames, 1, "raw", scratch / "raw")
        encodings = encoding_table(scratch / "raw")
        encodings["png"].update(bytes_per_frame=base["bytes_per_frame"],
                                dali_samples_per_s=dali_decode_rate(scratch / f"png-w{base['workers']}-0", "png"))
        encodings["raw"].update(bytes_per_frame=raw["bytes_per_frame"],
                                dali_samples_per_s=dali_decode_rate(scratch / "raw", "raw"))
    widest = rows[-1]
    efficiency = min(1.0, widest["frames_per_s"] / (widest["workers"] * base["frames_per_s_per_worker"]))
    per_core = statistics.median(row["frames_per_cpu_s"] for row in rows)
    full_cpu = NYU_TRAIN_FRAMES / (per_core * FULL_CORES)
    result = {"source": root or "hand-made NYU layout", "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
              "machine": host,
              "writing": rows, "encodings": encodings, "raw_write_frames_per_s": raw["frames"] / raw["seconds"],
              "full_nyu_train": {"frames_per_cpu_s": per_core, "minutes_cpu_bound": full_cpu / 60,
                                 "wall_efficiency": efficiency, "minutes_wall_efficiency": full_cpu / efficiency / 60}}
    _print_tables(result)
    if out:
        atomic_write_text(out, json.dumps(result, indent=1))
    return result

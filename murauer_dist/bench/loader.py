"""`murauer-dist bench loader`: DALI vs reference vs original-style loader on the same data.

All three produce synthetic crops with full augmentation (random camera, rotation, centre jitter,
depth noise) at the config's crop size: DALI and the reference loader from the shards (pre-training
stream, batch train.pretrain_batch), the original-style loader from the NYU-layout root (full-frame
PNG decode and crop per sample). Reported per loader (medians over repeats): samples/s, samples per
CPU-second (process + worker CPU time: "per core"), the wait per step of a consumer that does
nothing, and the wait fraction for a training step of `step_ms`. DALI also runs the full MURAUER step
(all five streams). Prints a table; writes JSON with --out.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import psutil

from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.machine import describe, machine
from murauer_dist.config import load_config


def _cpu_seconds() -> float:
    proc = psutil.Process()
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


def _measure(next_batch, samples_per_batch: int, batches: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        next_batch()
    waits = []
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        start = time.perf_counter()
        next_batch()
        waits.append(time.perf_counter() - start)
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    samples = samples_per_batch * batches
    return {"samples_per_s": samples / wall, "samples_per_cpu_s": samples / max(cpu, 1e-9),
            "cpu_cores_busy": cpu / wall, "wait_ms_per_step": 1000 * statistics.median(waits),
            "batch_ms": 1000 * wall / batches}


def _stream_runner(cfg, stage: str):
    from murauer_dist.data.loaders import build_train_stream
    stream = build_train_stream(cfg, stage, 0, 1, "cpu")
    from murauer_dist.data.batch import stream_sizes
    return (lambda: next(stream)), sum(stream_sizes(cfg, stage).values()), stream


def _original_runner(cfg, root: str):
    from murauer_dist.data.original_loader import OriginalStyleLoader
    loader = OriginalStyleLoader(root, cfg)
    size = cfg.train.pretrain_batch
    return (lambda: loader.batch(size)), size, loader


def _median_runs(make, batches: int, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        next_batch, per_batch, handle = make()
        runs.append(_measure(next_batch, per_batch, batches))
        close = getattr(handle, "close", None)
        if close:
            close()
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main(shards: str = "", root: str = "", batches: int = 30, out: str = "", preset: str = "nyu",
         repeats: int = 3, step_ms: float = 100.0, device: str = "cpu", *overrides: str) -> dict:
    """Benchmark the loaders on SHARDS (and the NYU-layout ROOT for the original-style loader)."""
    host = machine()                                      # before the runs: the load of other jobs
    base = [*overrides, f"loader.device={device}"]
    base += [f"data.shards={shards}"] if shards else []
    base += [f"data.root={root}"] if root else []
    results = {}
    for name, overrides_of_run, stage in (("dali", ["loader.backend=dali"], "pretrain"),
                                          ("reference", ["loader.backend=reference"], "pretrain"),
                                          ("dali_main_step", ["loader.backend=dali"], "main")):
        cfg = load_config(preset, base + overrides_of_run)
        results[name] = _median_runs(lambda: _stream_runner(cfg, stage), batches, repeats)
    cfg = load_config(preset, base)
    results["original_style"] = _median_runs(lambda: _original_runner(cfg, cfg.data.root),
                                             max(3, batches // 5), repeats)
    for row in results.values():
        row["wait_fraction_at_step"] = max(0.0, row["batch_ms"] - step_ms) / max(row["batch_ms"], step_ms)
    summary = {"crop_size": cfg.data.crop_size, "batch": cfg.train.pretrain_batch, "threads": cfg.loader.num_threads,
               "device": device, "cpus": os.cpu_count(), "machine": host, "step_ms": step_ms, "loaders": results,
               "dali_vs_original_per_core": results["dali"]["samples_per_cpu_s"]
               / results["original_style"]["samples_per_cpu_s"]}
    _print(summary)
    if out:
        atomic_write_text(out, json.dumps(summary, indent=2))
    return summary


def _print(summary: dict) -> None:
    print(f"crop {summary['crop_size']}, batch {summary['batch']}, {summary['threads']} threads, "
          f"device {summary['device']}, step {summary['step_ms']:.0f} ms")
    print(describe(summary["machine"]))
    print(f"| loader | samples/s | samples/CPU-s | cores busy | wait/step (ms, idle consumer) | wait @ step |")
    print("|---|---|---|---|---|---|")
    for name, row in summary["loaders"].items():
        print(f"| {name} | {row['samples_per_s']:.0f} | {row['samples_per_cpu_s']:.0f} | {row['cpu_cores_busy']:.2f} "
              f"| {row['wait_ms_per_step']:.1f} | {100 * row['wait_fraction_at_step']:.0f}% |")
    print(f"DALI vs original-style, per CPU-second: {summary['dali_vs_original_per_core']:.1f}x")

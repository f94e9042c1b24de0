"""`murauer-dist bench loader`: DALI vs reference vs original-style loader on the same data.

All three produce synthetic crops with full augmentation (random camera, rotation, centre jitter,
depth noise) at the config's crop size: DALI and the reference loader from the shards (pre-training
stream, batch train.pretrain_batch), the original-style loader from the NYU-layout root (full-frame
PNG decode and crop per sample). Reported per loader (medians over repeats): samples/s, samples per
CPU-second (process + worker CPU time: "per core"), the wait per step of a consumer that does
nothing, and the wait fraction for a training step of `step_ms`. DALI also runs the full MURAUER step
(all five streams). Prints a table; writes JSON with --out.

`--rollover`: the MURAUER training streams (all five, DALI and reference) over `--epochs` epochs of
`--iters` steps, each step followed by `step_ms` of sleep (a training step that leaves the CPU to the
loader, as a GPU step does). Reported per backend (medians over repeats): the data wait of the
rollover steps (the first step of epochs 1..) against the median wait of ordinary steps, the largest
ordinary wait, and the memory (PSS of the process and its loader workers) at its median and peak.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import psutil

from murauer_dist.atomic import atomic_write_text
from murauer_dist.batches.batch import stream_sizes
from murauer_dist.batches.loaders import build_train_stream
from murauer_dist.bench.machine import describe, machine
from murauer_dist.bench.original_loader import OriginalStyleLoader
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
    stream = build_train_stream(cfg, stage, 0, 1, "cpu")
    return (lambda: next(stream)), sum(stream_sizes(cfg, stage).values()), stream


def _original_runner(cfg, root: str):
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


def _memory_mb() -> float:
    """Proportional set size (PSS) of this process and its children (loader workers), MB: pages the
    forked workers share with this process count once, as they would not in a sum of RSS."""
    total = 0
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def _rollover_run(cfg, epochs: int, iters: int, step_ms: float, device: str) -> dict:
    """One pass over `epochs` epochs: the wait of every step, split into rollover and ordinary steps."""
    stream = build_train_stream(cfg, "main", 0, 1, "cuda" if device == "gpu" else "cpu")
    waits, memory = [], []
    try:
        for _ in range(epochs * iters):
            start = time.perf_counter()
            next(stream)
            waits.append(time.perf_counter() - start)
            memory.append(_memory_mb())
            time.sleep(step_ms / 1000)
    finally:
        stream.close()
    rollover = [waits[k] for k in range(iters, len(waits), iters)]
    ordinary = [w for k, w in enumerate(waits) if k % iters]      # the very first step builds from cold
    return {"rollover_ms": 1000 * statistics.median(rollover), "rollover_max_ms": 1000 * max(rollover),
            "ordinary_ms": 1000 * statistics.median(ordinary), "ordinary_max_ms": 1000 * max(ordinary),
            "rollover_vs_ordinary": statistics.median(rollover) / max(statistics.median(ordinary), 1e-9),
            "memory_median_mb": statistics.median(memory), "memory_peak_mb": max(memory)}


def _run_overrides(overrides, device: str, shards: str, root: str = "") -> list[str]:
    """The overrides every run of a loader benchmark shares: the user's, then the loader device and data folders."""
    return [*overrides, f"loader.device={device}", *([f"data.shards={shards}"] if shards else []),
            *([f"data.root={root}"] if root else [])]


def _report(summary: dict, out: str, print_table) -> dict:
    """Print the table; write the summary as JSON to `out` when given."""
    print_table(summary)
    if out:
        atomic_write_text(out, json.dumps(summary, indent=2))
    return summary


def rollover_bench(shards: str, out: str, preset: str, repeats: int, step_ms: float, device: str, epochs: int,
                   iters: int, *overrides: str) -> dict:
    """The data wait at each epoch rollover vs ordinary steps, DALI and reference (see the module doc)."""
    if epochs < 2 or iters < 2:
        raise SystemExit(f"--rollover needs at least 2 epochs of 2 steps, got --epochs {epochs} --iters {iters}")
    host = machine()
    base = _run_overrides([*overrides, f"train.iters_per_epoch={iters}"], device, shards)
    results = {}
    for backend in ("dali", "reference"):
        cfg = load_config(preset, base + [f"loader.backend={backend}"])
        runs = [_rollover_run(cfg, epochs, iters, step_ms, device) for _ in range(repeats)]
        results[backend] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    summary = {"mode": "rollover", "crop_size": cfg.data.crop_size, "threads": cfg.loader.num_threads,
               "shuffle_buffer": cfg.loader.shuffle_buffer, "device": device, "epochs": epochs, "iters": iters,
               "step_ms": step_ms, "repeats": repeats, "machine": host, "backends": results}
    return _report(summary, out, _print_rollover)


def _print_rollover(summary: dict) -> None:
    print(f"rollover: {summary['epochs']} epochs of {summary['iters']} steps, step {summary['step_ms']:.0f} ms, "
          f"crop {summary['crop_size']}, {summary['threads']} threads, shuffle buffer {summary['shuffle_buffer']}, "
          f"device {summary['device']}, median of {summary['repeats']}")
    print(describe(summary["machine"]))
    print("| backend | rollover wait (ms) | max rollover (ms) | ordinary wait (ms) | max ordinary (ms) "
          "| rollover / ordinary | memory median / peak (PSS, MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, row in summary["backends"].items():
        print(f"| {name} | {row['rollover_ms']:.1f} | {row['rollover_max_ms']:.1f} | {row['ordinary_ms']:.1f} "
              f"| {row['ordinary_max_ms']:.1f} | {row['rollover_vs_ordinary']:.1f}x "
              f"| {row['memory_median_mb']:.0f} / {row['memory_peak_mb']:.0f} |")


def main(shards: str = "", root: str = "", batches: int = 30, out: str = "", preset: str = "nyu",
         repeats: int = 3, step_ms: float = 100.0, device: str = "cpu", *overrides: str, rollover: bool = False,
         epochs: int = 4, iters: int = 20) -> dict:
    """Benchmark the loaders on SHARDS (and the NYU-layout ROOT for the original-style loader);
    --rollover: the data wait at epoch rollovers instead (--epochs, --iters steps per epoch)."""
    if rollover:
        return rollover_bench(shards, out, preset, repeats, step_ms, device, epochs, iters, *overrides)
    host = machine()                                      # before the runs: the load of other jobs
    base = _run_overrides(overrides, device, shards, root)
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
    return _report(summary, out, _print)


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

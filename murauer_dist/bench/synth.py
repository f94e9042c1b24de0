"""`murauer-dist bench synth-data`: frames per second of the procedural generator.

A frame is all six 640x480 depth PNGs (real and synthetic, 3 cameras) plus its labels. Start-up
(process spawn, imports, the pose sequence, the first chunk of each worker) is excluded: the rate is
measured between the first finished chunk of each worker and the last. Median of `repeats` runs.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from statistics import median

from murauer_dist.atomic import atomic_write_bytes
from murauer_dist.bench.machine import describe, machine
from murauer_dist.frames.procedural.generate import CHUNK_FRAMES, synth_data


def _parse_workers(workers) -> list[int]:
    if isinstance(workers, int):
        return [workers]
    values = [int(w) for w in str(workers).replace("(", "").replace(")", "").split(",") if str(w).strip()]
    if not values or min(values) < 1:
        raise SystemExit(f"workers must be positive integers like '1,2', got {workers!r}")
    return values


def measure(frames: int, workers: int, realism: str = "default") -> dict:
    """One run into a temporary folder: steady-state frames/s and the whole run's wall time."""
    timings: list = []
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        start, cpu_start = time.perf_counter(), time.process_time()
        synth_data(Path(tmp) / "data", frames_train=frames, frames_test=1, seed=0, workers=workers,
                   progress=False, timings=timings, realism=realism)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    warm = min(workers, len(timings) - 1)                 # skip each worker's first chunk
    (t0, done0), (t1, done1) = timings[warm - 1] if warm else (start, 0), timings[-1]
    result = {"frames_per_s": (done1 - done0) / (t1 - t0), "wall_s": total}
    if workers == 1:                                      # all work in this process: its CPU time per frame
        result["cpu_ms_per_frame"] = 1000.0 * cpu / (frames + 1)
    return result


def main(frames: int = 200, workers="1,2", out: str = "", repeats: int = 3, realism: str = "default") -> dict:
    """--realism: the generator's realism profile (default, nyu-fit)."""
    counts = _parse_workers(workers)
    host = machine()                                      # before the runs: the load of other jobs
    if frames < 4 * CHUNK_FRAMES * max(counts):
        raise SystemExit(f"frames must be at least {4 * CHUNK_FRAMES * max(counts)} to measure a steady rate")
    rows = []
    for count in counts:
        runs = [measure(int(frames), count, realism) for _ in range(int(repeats))]
        rate = median(r["frames_per_s"] for r in runs)
        rows.append({"workers": count, "frames_per_s": round(rate, 2),
                     "frames_per_s_per_process": round(rate / count, 2),
                     "s_per_4800_frames": round(4800 / rate, 1),
                     "wall_s_median": round(median(r["wall_s"] for r in runs), 2)})
        if count == 1:
            rows[-1]["cpu_ms_per_frame"] = round(median(r["cpu_ms_per_frame"] for r in runs), 1)
    load = os.getloadavg()[0]
    profile = "" if realism == "default" else f" ({realism} realism)"
    print(f"synth-data{profile}: {frames} frames per run, median of {repeats} runs, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at the end")
    print(describe(host))
    print("| workers | frames/s | frames/s per process | 4,800 frames (s) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['frames_per_s']:.1f} | {row['frames_per_s_per_process']:.1f} "
              f"| {row['s_per_4800_frames']:.0f} |")
    for row in rows:
        if "cpu_ms_per_frame" in row:
            print(f"CPU time per frame in one process: {row['cpu_ms_per_frame']:.0f} ms "
                  f"(an idle core would make {1000 / row['cpu_ms_per_frame']:.1f} frames/s)")
    result = {"benchmark": "synth-data", "realism": realism, "frames": int(frames), "repeats": int(repeats), "cpus": os.cpu_count(),
              "load_average": round(load, 2), "machine": host, "rows": rows}
    if out:
        atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    return result

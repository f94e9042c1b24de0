"""Benchmarks, run as commands (not timed tests): `murauer-dist bench WHAT [options]`.

Each benchmark prints a table and writes it as JSON (`--out FILE`); medians of repeated runs,
side by side in one process, because the machines we measure on are shared and noisy. Every
result records the machine it ran on (bench/machine.py: CPU model, cores, load, GPU).
"""
from __future__ import annotations

import importlib

BENCHMARKS = {
    "synth-data": "murauer_dist.bench.synth",
    "shards": "murauer_dist.bench.shards",
    "loader": "murauer_dist.bench.loader",
    "train": "murauer_dist.bench.train",
    "dist": "murauer_dist.bench.dist",
    "gpu-check": "murauer_dist.bench.gpu_check",
    "infer": "murauer_dist.bench.infer",
    "demo": "murauer_dist.bench.demo",
    "step-cost": "murauer_dist.bench.step_cost",
}


def bench_command(what: str, *args, **kwargs) -> None:
    if what not in BENCHMARKS:
        raise SystemExit(f"unknown benchmark {what!r}; choose one of: {', '.join(BENCHMARKS)}")
    importlib.import_module(BENCHMARKS[what]).main(*args, **kwargs)

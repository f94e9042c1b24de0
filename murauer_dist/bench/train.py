"""`murauer-dist bench train [--preset demo-cpu] [--steps 20] [--out FILE]`: training throughput.

Per stage (pre-training, MURAUER), median step time split into data wait / forward (incl. losses)
/ discriminator step / backward + optimizer, and samples/s (frames drawn per step / step time).
Batches come from the in-memory fake stream (pure compute) and, when the preset's shards exist,
from the real loaders.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.machine import describe, machine
from murauer_dist.config import load_config
from murauer_dist.batches.batch import stream_sizes, to_device
from murauer_dist.batches.loaders import build_train_stream
from murauer_dist.models import build_discriminator, build_model
from murauer_dist.train.engine_factory import build_engines
from murauer_dist.train.fake_stream import FakeTrainStream
from murauer_dist.train.step import train_step

WARMUP = 3
PHASES = ("data_wait", "forward", "disc", "backward")


class PhaseTimer:
    """train_step's on_phase hook: seconds since the previous phase end, added to `timings[phase]`
    (CUDA is synchronised first, so GPU work lands in its own phase)."""

    def __init__(self, timings: dict, device: torch.device):
        self.timings, self.device = timings, device
        self.last = self._now()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = self._now()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - self.last
        self.last = now


def _device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def measure(cfg, stage: str, stream, steps: int, device: torch.device) -> dict:
    """Median per-phase seconds and samples/s over `steps` timed steps (after a warm-up)."""
    torch.manual_seed(cfg.train.seed)
    model, disc = build_model(cfg).to(device), build_discriminator(cfg).to(device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    engines = build_engines(cfg, model, disc, 0, 1, device)
    stream.set_epoch(1)
    batches, rows = iter(stream), []
    for index in range(WARMUP + steps):
        timings, started = {}, time.perf_counter()
        batch = to_device(next(batches), device)
        timings["data_wait"] = time.perf_counter() - started
        train_step(engines, batch, cfg, stage, on_phase=PhaseTimer(timings, device))
        timings["total"] = time.perf_counter() - started
        if index >= WARMUP:
            rows.append(timings)
    samples = sum(stream_sizes(cfg, stage).values())
    median = {phase: statistics.median(row.get(phase, 0.0) for row in rows) for phase in (*PHASES, "total")}
    return {"stage": stage, "samples_per_step": samples, **{f"{k}_ms": 1e3 * v for k, v in median.items()},
            "samples_per_s": samples / median["total"], "steps": steps}


def _sources(cfg, stage: str, device):
    yield "fake", FakeTrainStream(cfg, stage, 0, device)
    if (Path(cfg.data.shards) / "train" / "manifest.json").is_file():
        yield f"{cfg.loader.backend} loader", build_train_stream(cfg, stage, 0, 1, device)
    else:
        print(f"(no shards at {cfg.data.shards}: real-loader rows skipped; run `murauer-dist make-shards` first)")


def main(preset: str = "demo-cpu", steps: int = 20, out: str = "", *overrides: str) -> list[dict]:
    cfg = load_config(preset, [f"train.iters_per_epoch={WARMUP + int(steps) + 1}", *overrides])
    device = _device()
    host = machine()                                      # before the runs: the load of other jobs
    rows = []
    for stage in ("pretrain", "main"):
        for source, stream in _sources(cfg, stage, device):
            rows.append({"source": source, **measure(cfg, stage, stream, int(steps), device)})
    header = f"{'stage':9} {'source':13} {'samples/s':>10} {'step ms':>8} {'data ms':>8} {'fwd ms':>8} " \
             f"{'D ms':>6} {'bwd ms':>8}"
    print(f"bench train: preset {preset}, device {device}, threads {torch.get_num_threads()}, "
          f"median of {steps} steps")
    print(describe(host))
    print(header)
    for r in rows:
        print(f"{r['stage']:9} {r['source']:13} {r['samples_per_s']:10.1f} {r['total_ms']:8.1f} "
              f"{r['data_wait_ms']:8.1f} {r['forward_ms']:8.1f} {r['disc_ms']:6.1f} {r['backward_ms']:8.1f}")
    if out:
        atomic_write_text(out, json.dumps({"preset": preset, "device": str(device), "machine": host,
                                           "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    return rows

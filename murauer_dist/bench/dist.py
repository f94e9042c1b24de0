"""`murauer-dist bench dist`: data-parallel scaling, 1 vs 2 processes, plus the all-reduce budget.

Measured: training steps of PRESET (in-memory batches of the MURAUER stage, so only compute and
gradient all-reduce are timed) under torchrun with 1 and 2 processes on this machine; median step
time over `steps` steps after 2 warm-up steps. Samples/s counts every crop of every stream on
every rank. On paper: the bytes each step all-reduces (model + discriminator gradients of the
nyu preset) and the per-GPU efficiency a ring all-reduce allows at 100/200/400 Gb/s, given a
GPU step time (`gpu_step_s`, stated, since this machine has no GPU) and no overlap of
communication with the backward pass (a lower bound; DDP overlaps buckets with backward).

    murauer-dist bench dist --preset tiny --steps 10 --out bench-results/dist.json
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from murauer_dist import dist
from murauer_dist.atomic import atomic_write_text
from murauer_dist.batches.batch import fake_batch, stream_sizes
from murauer_dist.bench.machine import describe, machine
from murauer_dist.config import load_config
from murauer_dist.models import build_discriminator, build_model
from murauer_dist.train.engine_factory import build_engines
from murauer_dist.train.step import train_step

LINK_GBITS = (100, 200, 400)


def _worker(preset: str, steps: int, result_file: str, engine: str) -> None:
    """One rank of the measurement (run under torchrun)."""
    cfg = load_config(preset, [f"train.engine={engine}"])
    info = dist.init_distributed("cpu")
    torch.manual_seed(cfg.train.seed)
    model, disc = build_model(cfg), build_discriminator(cfg)
    engines = build_engines(cfg, model, disc, info.rank, info.world_size, info.device)
    sizes = stream_sizes(cfg, "main")
    batch = fake_batch(sizes, cfg.data.crop_size, cfg.model.num_joints, seed=info.rank, labeled_fraction=0.5)
    model.train()
    disc.train()
    times = []
    for index in range(steps + 2):
        dist.barrier()
        started = time.perf_counter()
        train_step(engines, batch, cfg, "main")
        if index >= 2:
            times.append(time.perf_counter() - started)
    step_s = torch.tensor(statistics.median(times))
    dist.all_reduce_mean(step_s)
    if info.is_main:
        Path(result_file).write_text(json.dumps({"median_step_s": step_s.item(), "samples_per_rank": sum(sizes.values())}))
    dist.clean_exit(0)


def measure(preset: str, steps: int, nproc: int, engine: str = "ddp") -> dict:
    """Median step time of `nproc` processes under torchrun (CPU, gloo)."""
    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "result.json"
        threads = max(1, (os.cpu_count() or 2) // nproc)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled", "DS_ACCELERATOR": "cpu"}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "murauer_dist.bench.dist", preset, str(steps), str(result_file), engine]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"bench dist: {nproc} process(es) failed (exit {done.returncode}):\n"
                               f"{(done.stdout + done.stderr)[-3000:]}")
        result = json.loads(result_file.read_text())
    step_s = result["median_step_s"]
    return {"processes": nproc, "engine": engine, "median_step_s": step_s, "steps_per_s": 1.0 / step_s,
            "samples_per_s": nproc * result["samples_per_rank"] / step_s}


def allreduce_budget(gpu_step_s: float, gpus: int) -> dict:
    """Gradient bytes per step of the nyu preset and the ring all-reduce share of a step."""
    cfg = load_config("nyu")
    counts = {"model": sum(p.numel() for p in build_model(cfg).parameters()),
              "disc": sum(p.numel() for p in build_discriminator(cfg).parameters())}
    params = sum(counts.values())
    rows = []
    for bytes_per_value, precision in ((4, "fp32 gradients"), (2, "bf16 gradients")):
        volume = params * bytes_per_value
        for gbits in LINK_GBITS:
            # ring all-reduce: every rank sends and receives 2 (N-1)/N of the buffer
            comm_s = 2 * (gpus - 1) / gpus * volume / (gbits * 1e9 / 8)
            rows.append({"gradients": precision, "link_gbit_s": gbits, "allreduce_ms": comm_s * 1e3,
                         "efficiency_no_overlap": gpu_step_s / (gpu_step_s + comm_s)})
    return {"nyu_parameters": counts, "gradient_mb_fp32": params * 4 / 1e6, "gpus": gpus,
            "gpu_step_s": gpu_step_s, "links": rows}


def main(preset: str = "tiny", steps: int = 10, out: str = "", engine: str = "ddp", gpu_step_s: float = 0.05,
         gpus: int = 16) -> dict:
    """1 vs 2 processes of PRESET (median of `steps` steps each) and the multi-node estimate."""
    host = machine()                                      # before the runs: the load of other jobs
    runs = [measure(preset, steps, nproc, engine) for nproc in (1, 2)]
    scaling = runs[1]["samples_per_s"] / (2 * runs[0]["samples_per_s"])
    budget = allreduce_budget(gpu_step_s, gpus)
    print(describe(host))
    print(f"| processes | engine | median step (s) | steps/s | samples/s |\n|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['processes']} | {run['engine']} | {run['median_step_s']:.3f} | {run['steps_per_s']:.2f} | "
              f"{run['samples_per_s']:.1f} |")
    print(f"\n2-process scaling efficiency ({preset}, CPU, {os.cpu_count()} cores): {scaling:.0%}")
    print(f"\nnyu preset: model {budget['nyu_parameters']['model']:,} + discriminator "
          f"{budget['nyu_parameters']['disc']:,} parameters = {budget['gradient_mb_fp32']:.1f} MB fp32 gradients "
          f"per step; ring all-reduce over {gpus} GPUs, GPU step {gpu_step_s * 1e3:.0f} ms (stated), no overlap:")
    print("| gradients | link (Gb/s) | all-reduce (ms) | per-GPU efficiency |\n|---|---|---|---|")
    for row in budget["links"]:
        print(f"| {row['gradients']} | {row['link_gbit_s']} | {row['allreduce_ms']:.2f} | "
              f"{row['efficiency_no_overlap']:.1%} |")
    result = {"preset": preset, "steps": steps, "runs": runs, "scaling_efficiency_2proc": scaling,
              "cpu_count": os.cpu_count(), "machine": host, "allreduce": budget}
    if out:
        atomic_write_text(out, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "ddp")

"""`murauer-dist bench step-cost [--preset nyu]`: what one training step asks of a GPU, by arithmetic.

The step runs on the `meta` device (shapes only, no values: seconds on any CPU, no GPU needed) and is
counted: floating-point operations (torch's FlopCounterMode), operators that launch a kernel (eager
mode; Adam's multi-tensor implementation, which torch uses on CUDA), and host syncs (meta_audit.py).
From those and an H100's peak it prints what the 100 iterations/s target needs:

    compute   GFLOP/step x 100 it/s, as a share of the H100 SXM's dense bf16 peak (989 TFLOP/s)
    launches  kernels/step x the host's cost per launch (eager: ~5 us of Python dispatch and launch
              each) = the iterations/s the host can issue, whatever the GPU

The counts are of fp32 steps: bf16 autocast adds a cast kernel in front of each conv/linear input.
"""
from __future__ import annotations

import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.machine import describe, machine
from murauer_dist.bench.meta_audit import HostSyncCounter, OpCounter
from murauer_dist.config import load_config
from murauer_dist.batches.batch import fake_batch, stream_sizes, to_device
from murauer_dist.models import build_discriminator, build_model, count_parameters
from murauer_dist.train.engine_factory import build_engines
from murauer_dist.train.step import train_step

H100_BF16_DENSE_TFLOPS = 989.0      # H100 SXM5, dense (no sparsity), NVIDIA's datasheet
TARGET_ITERS_PER_S = 100.0
HOST_US_PER_KERNEL = 5.0            # eager PyTorch: dispatch + launch per operator, order of magnitude


def _engines(cfg, stage: str) -> dict:
    model, disc = build_model(cfg).to("meta"), build_discriminator(cfg).to("meta")
    engines = build_engines(cfg, model, disc, 0, 1, "meta", stage)
    for engine in engines.values():
        for group in engine.optimizer.param_groups:
            group["foreach"] = True          # what Adam picks on CUDA
    return engines


def measure(cfg, stage: str) -> dict:
    """Counts of the second step (Adam's state exists from the first)."""
    torch.manual_seed(cfg.train.seed)
    engines = _engines(cfg, stage)
    batch = to_device(fake_batch(stream_sizes(cfg, stage), cfg.data.crop_size, num_joints=cfg.model.num_joints),
                      "meta")
    with HostSyncCounter() as syncs:
        train_step(engines, batch, cfg, stage)
        first = syncs.count()
        flops, ops = FlopCounterMode(display=False), OpCounter()
        with flops, ops:
            train_step(engines, batch, cfg, stage)
    gflop = flops.get_total_flops() / 1e9
    kernels = ops.kernels()
    return {"stage": stage, "method": cfg.train.method, "parameters": count_parameters(engines["model"].module),
            "samples_per_step": sum(stream_sizes(cfg, stage).values()), "gflop_per_step": gflop,
            "operators_per_step": sum(ops.counts.values()), "kernels_per_step": kernels,
            "host_syncs_per_step": syncs.count() - first,
            "tflops_at_target": gflop * TARGET_ITERS_PER_S / 1e3,
            "share_of_h100_peak_at_target": gflop * TARGET_ITERS_PER_S / 1e3 / H100_BF16_DENSE_TFLOPS,
            "launch_bound_iters_per_s": 1e6 / (kernels * HOST_US_PER_KERNEL),
            "top_operators": dict(sorted(ops.counts.items(), key=lambda item: -item[1])[:8])}


def main(preset: str = "nyu", method: str = "murauer", out: str = "", *overrides: str) -> list[dict]:
    cfg = load_config(preset, [f"train.method={method}", "train.precision=fp32", *overrides])
    host = machine()
    rows = [measure(cfg, stage) for stage in ("pretrain", "main")]
    print(f"bench step-cost: preset {preset}, method {method}, counted on the meta device (fp32, eager, "
          f"Adam foreach as on CUDA)")
    print(describe(host))
    print(f"{'stage':9} {'params':>10} {'samples':>7} {'GFLOP':>7} {'kernels':>8} {'syncs':>5} "
          f"{'TFLOP/s@100':>11} {'%H100':>6} {'launch-bound it/s':>17}")
    for r in rows:
        print(f"{r['stage']:9} {r['parameters']:10,d} {r['samples_per_step']:7d} {r['gflop_per_step']:7.1f} "
              f"{r['kernels_per_step']:8d} {r['host_syncs_per_step']:5d} {r['tflops_at_target']:11.2f} "
              f"{100 * r['share_of_h100_peak_at_target']:5.2f}% {r['launch_bound_iters_per_s']:17.0f}")
    if out:
        atomic_write_text(out, json.dumps({"benchmark": "step-cost", "preset": preset, "machine": host,
                                           "h100_bf16_dense_tflops": H100_BF16_DENSE_TFLOPS,
                                           "host_us_per_kernel": HOST_US_PER_KERNEL, "rows": rows}, indent=2))
    return rows

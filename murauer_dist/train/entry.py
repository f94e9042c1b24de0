"""`murauer-dist train PRESET [overrides]`: config, process group, run directory, loop, clean exit.

Single process without torchrun's environment; under `torchrun --nproc_per_node=N` every rank
runs this (gloo on CPU, nccl on GPU). Every process ends through dist.clean_exit, which avoids the
gloo exit abort of docs/stack-notes.md §4.
"""
from __future__ import annotations

import traceback
from pathlib import Path

from murauer_dist import dist
from murauer_dist.config import load_config, save_config


def train_command(preset: str, overrides=()) -> None:
    """Train PRESET with `section.key=value` overrides; exits the process (code 0 on success)."""
    cfg = load_config(preset, list(overrides))
    info = dist.init_distributed(cfg.loader.device)
    code = 0
    try:
        if info.is_main:
            run_dir = Path(cfg.train.out)
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            print(f"training {preset} on {info.world_size} rank(s), device {info.device}, run dir {run_dir}",
                  flush=True)
        from murauer_dist.train.loop import train
        summary = train(cfg, info)
        if info.is_main:
            print(f"training {summary['status']}: {summary}", flush=True)
    except KeyboardInterrupt:
        code = 130
    except Exception:      # reported here, then every rank leaves through clean_exit
        traceback.print_exc()
        code = 1
    dist.clean_exit(code)

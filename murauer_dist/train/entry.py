"""`murauer-dist train PRESET [overrides]`: config, process group, run directory, loop, clean exit.

Single process without torchrun's environment; under `torchrun --nproc_per_node=N` every rank
runs this (gloo on CPU, nccl on GPU). Every process ends through dist.clean_exit, which avoids the
gloo exit abort of docs/stack-notes.md §4. A UserError (bad input, a run directory that does not
fit, a full disk, the non-finite guards) is one line `murauer-dist: message` and exit code 1, like
the CLI's own errors (`--debug` or MURAUER_DEBUG=1: the traceback). So are a fault of the machine (a full
disk, a read-only folder: errors.machine_error) and a shard that cannot be read while training runs
(train/preflight.py, shard_fault: it names the shard and the last good checkpoint). Anything else is a
bug and keeps its traceback. The main rank holds an advisory lock on the run folder (folder_lock.py),
so two runs never train into one folder. The loop writes RUN/config.yaml (train/run_config.py,
check_run_config).
"""
from __future__ import annotations

import math
import os
import sys
import traceback
from pathlib import Path

from murauer_dist import dist
from murauer_dist.config import load_config
from murauer_dist.errors import UserError, machine_error
from murauer_dist.folder_lock import folder_lock
from murauer_dist.paths import output_folder
from murauer_dist.tracking.run_logger import read_metrics
from murauer_dist.tracking.secrets import redact_text
from murauer_dist.train.loop import train
from murauer_dist.train.preflight import shard_fault


def _debug() -> bool:
    return "--debug" in sys.argv or os.environ.get("MURAUER_DEBUG", "") not in ("", "0")


def report_user_error(err: UserError, rank: int = 0) -> None:
    """One line on stderr (credentials redacted); the traceback only in debug mode."""
    if _debug():
        traceback.print_exc()
    where = "" if rank == 0 else f" (rank {rank})"
    print(redact_text(f"murauer-dist{where}: {err}"), file=sys.stderr, flush=True)


def _validation_text(summary: dict, run_dir: Path) -> str:
    """The run's validation error: this process's, else the last one metrics.jsonl recorded (a finished run
    started again trains nothing and validates nothing)."""
    value = summary.get("val_mean_error_mm", float("nan"))
    if math.isfinite(value):
        return f"validation mean error {value:.2f} mm"
    found = None
    if (run_dir / "metrics.jsonl").is_file():
        for record in read_metrics(run_dir):
            for key, recorded in record.items():
                if key.endswith("/val_mean_error_mm") and isinstance(recorded, (int, float)):
                    found = (key.split("/")[0], int(record.get("step", -1)), float(recorded))
    if found is None:
        return "no validation (data.val_fraction=0, or no epoch has finished)"
    stage, step, value = found
    return (f"no validation in this run (nothing was left to train, or it resumed after the last one); last "
            f"validation mean error {value:.2f} mm at step {step} (stage {stage}, metrics.jsonl)")


def summary_line(summary: dict, run_dir: Path) -> str:
    """What a finished or stopped run prints: status, step, validation, skipped samples, checksum."""
    return (f"training {summary['status']} at step {summary['global_step']}: {_validation_text(summary, run_dir)}; "
            f"{summary['skipped_total']} sample(s) skipped; model checksum {summary['model_checksum']:.6g}")


def train_command(preset: str, overrides=()) -> None:
    """Train PRESET with `section.key=value` overrides; exits the process (code 0 on success)."""
    cfg = load_config(preset, list(overrides))
    info = dist.init_distributed(cfg.train.device)
    code = 0
    try:
        run_dir = Path(cfg.train.out)
        if info.is_main:
            output_folder(run_dir, "train.out")
        # One run per run folder (an advisory lock, main rank); released on every way out of here.
        with folder_lock(run_dir, "train.out", enabled=info.is_main):
            if info.is_main:
                print(f"training {preset} on {info.world_size} rank(s), device {info.device}, run dir "
                      f"{run_dir}", flush=True)
            summary = train(cfg, info)
            if info.is_main:
                print(summary_line(summary, run_dir), flush=True)
    except KeyboardInterrupt:
        code = 130
    except UserError as err:
        report_user_error(err, info.rank)
        code = 1
    except Exception as err:      # reported here, then every rank leaves through clean_exit
        fault = machine_error(err) or shard_fault(err, cfg)
        if fault is None:
            traceback.print_exc()
        else:
            report_user_error(fault, info.rank)
        code = 1
    dist.clean_exit(code)

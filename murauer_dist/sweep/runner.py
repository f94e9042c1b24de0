"""Run one sweep combination as its own training process and record how it ended.

Each run is `python -m murauer_dist.cli train PRESET key=value ... train.out=OUT/run-XX
logging.group=SWEEP logging.name=SWEEP-run-XX logging.wandb_mode=offline`, its console output in
OUT/run-XX/train.log. The result (parameters, exit code, metric) goes to OUT/run-XX/sweep-run.json,
written atomically after the process ends: a directory with a finished result is skipped on resume.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from murauer_dist.atomic import atomic_write_text
from murauer_dist.config import ConfigError
from murauer_dist.sweep.spec import SweepSpec, format_value
from murauer_dist.tracking.run_logger import read_metrics

RESULT_FILE = "sweep-run.json"
# runner(argv, log_path) -> exit code; tests inject a fake one, the default runs a subprocess.
Runner = Callable[[list[str], Path], int]


def subprocess_runner(argv: list[str], log_path: Path) -> int:
    with open(log_path, "w") as log:
        return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def train_argv(preset: str, overrides: tuple[str, ...], params: dict, run_dir: Path, spec: SweepSpec) -> list[str]:
    return [sys.executable, "-m", "murauer_dist.cli", "train", preset, *overrides,
            *(f"{name}={format_value(value)}" for name, value in params.items()),
            f"train.out={run_dir}", f"logging.group={spec.name}",
            f"logging.name={spec.name}-{run_dir.name}", "logging.wandb_mode=offline"]


def metric_values(run_dir: Path, metric: str) -> list[float]:
    """Every finite value of `metric` the run logged, in order (empty when there is no metrics file)."""
    if not (run_dir / "metrics.jsonl").is_file():
        return []
    values = [record[metric] for record in read_metrics(run_dir) if metric in record and record["step"] >= 0]
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def read_result(run_dir: Path) -> dict | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg}); delete it to run this combination again") from None


def finished_result(run_dir: Path, params: dict) -> dict | None:
    """The earlier result of this run if it finished with the same parameters; None to (re)run it."""
    result = read_result(run_dir)
    if result is None or result.get("status") != "finished":
        return None
    if result.get("params") != json.loads(json.dumps(params)):
        raise ConfigError(f"{run_dir / RESULT_FILE} was run with {result.get('params')}, now {params}: "
                          "the sweep file changed; use a new --out folder")
    return result


def run_combination(index: int, params: dict, spec: SweepSpec, out: Path, preset: str,
                    overrides: tuple[str, ...], runner: Runner) -> dict:
    """Train one combination (or reuse its finished result) and return its result record."""
    run_dir = out / f"run-{index:02d}"
    earlier = finished_result(run_dir, params)
    if earlier is not None:
        return {**earlier, "skipped": True}
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = train_argv(preset, overrides, params, run_dir, spec)
    started = time.monotonic()
    exit_code = runner(argv, run_dir / "train.log")
    values = metric_values(run_dir, spec.metric)
    best_of = min if spec.goal == "minimize" else max
    result = {
        "run": run_dir.name, "dir": str(run_dir), "params": params,
        "status": "finished" if exit_code == 0 else "failed", "exit_code": exit_code,
        "best": best_of(values) if values else None, "final": values[-1] if values else None,
        "evaluations": len(values), "seconds": round(time.monotonic() - started, 1),
        "command": argv[1:],
    }
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    return {**result, "skipped": False}

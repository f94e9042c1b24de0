"""gpu-check's train_resume section: a real `murauer-dist train`, stopped and resumed.

`python -m murauer_dist.cli train PRESET data.root=... data.shards=... train.out=...` on the dataset
section's shards, the preset's stages shortened (spec.RESUME: a few hundred nyu steps on a GPU, a
few dozen tiny ones on a CPU). Once stage 2 has logged a step to RUN/metrics.jsonl the process gets
SIGTERM: the loop finishes the step, writes a checkpoint and ends with status "stopped" (exit 0).
The same command then resumes from that checkpoint to the end, which must be the planned final
global_step. What each run did is read from the run folder (its newest checkpoint, metrics.jsonl),
not from its printed lines. Reported per run: exit code, status, global step, steps trained, wall
time, steps/s (whole process, and of the training alone from the metrics' timestamps).
Bit-exactness is the tests' job (tests/test_train.py), not this one's.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from murauer_dist.bench.gpu_check.child import child_environment, exit_text, kill_group, output_tail
from murauer_dist.bench.gpu_check.measure import torch_device
from murauer_dist.bench.gpu_check.spec import RESUME, Budget, Options, Skip
from murauer_dist.config import load_config
from murauer_dist.train.stages import planned_steps

POLL_S = 0.02


class MetricsTail:
    """The records appended to RUN/metrics.jsonl since the last look (whole lines only)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.records = path, 0, []

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        new = [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
        self.records += new
        return new


def _steps(records: list[dict]) -> list[tuple[int, float]]:
    """(global step, time) of the records that log training steps (not the summary record, step -1)."""
    return [(int(record["step"]), float(record["time"])) for record in records if record.get("step", -1) > 0]


def _training_rate(records: list[dict]) -> float | None:
    """Steps/s between the first and the last step record of a run (no start-up, no set-up)."""
    steps = _steps(records)
    if len(steps) < 2 or steps[-1][1] <= steps[0][1]:
        return None
    return (steps[-1][0] - steps[0][0]) / (steps[-1][1] - steps[0][1])


def _newest_checkpoint(run_dir: Path) -> dict:
    """The checkpoint a resume would start from: name, stage, whether the stage was done, global step."""
    from murauer_dist.train.checkpoint import find_resumable  # lazy: optional: torch (see spec.py)
    path, state = find_resumable(run_dir, map_location="cpu")
    if path is None:
        return {}
    return {"name": path.name, "stage": state["stage"], "stage_done": bool(state["stage_done"]),
            "global_step": int(state["global_step"])}


def _train(command: list[str], run_dir: Path, name: str, budget: Budget, metrics: MetricsTail,
           stop_after_step: int | None = None) -> dict:
    """Run the train command; with `stop_after_step`, SIGTERM once stage 2 has logged a step beyond it."""
    timeout = budget.left()
    if timeout <= 0:
        raise Skip(f"time budget of {budget.budget_s:.0f} s used up before the {name} run")
    log = run_dir.parent / f"train-{name}.log"
    first_record = len(metrics.records)
    started = time.perf_counter()
    signalled_at, signalled_step = None, None
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   env=child_environment(), start_new_session=True)
        try:
            while process.poll() is None:
                if time.perf_counter() - started > timeout:
                    kill_group(process)
                    raise RuntimeError(f"the {name} run did not finish within the {timeout:.0f} s left of the time "
                                       f"budget; killed. Its output:\n{output_tail(log, 20)}")
                new = metrics.read()
                if stop_after_step is not None and signalled_at is None:
                    logged = [record["step"] for record in new if record.get("step", -1) > stop_after_step
                              and any(key.startswith("main/") for key in record)]
                    if logged:
                        process.send_signal(signal.SIGTERM)
                        signalled_at, signalled_step = time.perf_counter() - started, logged[-1]
                time.sleep(POLL_S)
        finally:
            if process.poll() is None:
                kill_group(process)
    wall = time.perf_counter() - started
    metrics.read()
    records = metrics.records[first_record:]
    checkpoint = _newest_checkpoint(run_dir)
    logged = _steps(records)
    out = {"run": name, "exit": process.returncode,
           "status": ("done" if checkpoint.get("stage_done") else "stopped") if checkpoint else None,
           "global_step": checkpoint.get("global_step"), "checkpoint": checkpoint.get("name"),
           "first_logged_step": logged[0][0] if logged else None, "wall_s": wall,
           "training_steps_per_s": _training_rate(records)}
    if signalled_at is not None:
        out.update({"sigterm_at_s": signalled_at, "sigterm_after_step": signalled_step,
                    "stop_s": wall - signalled_at})
    if process.returncode != 0 or not checkpoint:
        out["output_tail"] = output_tail(log)
    return out


def _check_stopped(run: dict, stage1: int, planned: int) -> str:
    if run["exit"] != 0:
        return f"the run sent SIGTERM ended with {exit_text(run['exit'])} (expected exit code 0)"
    if run["status"] != "stopped":
        return (f"the run sent SIGTERM ended with its newest checkpoint {run['checkpoint']} "
                f"(status {run['status']}), not a stage-2 checkpoint of a stopped run")
    if not stage1 < run["global_step"] < planned:
        return f"stopped at global step {run['global_step']}, not within stage 2 ({stage1 + 1}..{planned - 1})"
    return ""


def _check_resumed(run: dict, stopped: dict, planned: int, log_every: int) -> str:
    if run["exit"] != 0:
        return f"the resumed run ended with {exit_text(run['exit'])}"
    if run["status"] != "done" or run["global_step"] != planned:
        return (f"the resumed run ended at global step {run['global_step']} (newest checkpoint "
                f"{run['checkpoint']}), planned {planned}")
    first, last = stopped["global_step"] + 1, min(stopped["global_step"] + log_every, planned)
    if run["first_logged_step"] is None or not first <= run["first_logged_step"] <= last:
        return (f"the resumed run's first logged step is {run['first_logged_step']}, expected {first}..{last} "
                f"(a resume from the stop checkpoint at step {stopped['global_step']})")
    return ""


def train_resume_section(opts: Options, budget: Budget, data: dict, folder: Path, dali: bool) -> dict:
    torch_device(opts)                   # skips without CUDA in --device cuda
    run_dir = folder / "train-run"
    overrides = [*data["overrides"], f"train.out={run_dir}",
                 *(f"{key}={value}" for key, value in RESUME[opts.device].items()),
                 f"train.device={'gpu' if opts.device == 'cuda' else 'cpu'}",
                 "logging.wandb_mode=disabled", "logging.progress=false"]
    if not dali:
        overrides.append("loader.backend=reference")
    cfg = load_config(opts.preset, overrides)
    stage1, stage2 = planned_steps(cfg, "pretrain"), planned_steps(cfg, "main")
    planned = stage1 + stage2
    command = [sys.executable, "-m", "murauer_dist.cli", "train", opts.preset, *overrides]
    metrics = MetricsTail(run_dir / "metrics.jsonl")
    result = {"preset": opts.preset, "loader": cfg.loader.backend, "planned_steps": planned,
              "stage1_steps": stage1, "stage2_steps": stage2, "overrides": overrides[len(data["overrides"]):],
              "runs": []}
    stopped = _train(command, run_dir, "stopped", budget, metrics, stop_after_step=stage1)
    result["runs"].append(stopped)
    problem = _check_stopped(stopped, stage1, planned)
    if not problem:
        stopped["steps"] = stopped["global_step"]
        resumed = _train(command, run_dir, "resumed", budget, metrics)
        result["runs"].append(resumed)
        problem = _check_resumed(resumed, stopped, planned, cfg.train.log_every)
        if not problem:
            resumed["resumed_from_step"] = stopped["global_step"]
            resumed["steps"] = resumed["global_step"] - stopped["global_step"]
    for run in result["runs"]:
        if run.get("steps"):
            run["steps_per_s"] = run["steps"] / run["wall_s"]
    if problem:
        result.update({"status": "failed", "reason": problem})
    return result

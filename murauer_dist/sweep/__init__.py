"""`murauer-dist sweep FILE`: run a wandb sweep file locally, without a W&B server.

The file is checked completely first (spec.py), the runs are planned (expand.py), each runs as its
own training process logged offline and grouped under the sweep's name (runner.py), and the
summary table sorted by the metric is rewritten after every run (summary.py). Re-running the same
command resumes: finished runs are skipped.
"""
from __future__ import annotations

import sys
from pathlib import Path

from murauer_dist.config import load_config
from murauer_dist.errors import UserError
from murauer_dist.folder_lock import FolderLock
from murauer_dist.paths import output_folder
from murauer_dist.sweep.expand import bayes_next, planned_runs, run_limit
from murauer_dist.sweep.runner import Runner, read_result, run_combination, subprocess_runner
from murauer_dist.sweep.spec import SweepSpec, format_value, load_sweep
from murauer_dist.sweep.summary import write_summary


class SweepError(UserError):
    """Runs of a sweep that failed (the summary is written; running the command again retries them)."""


__all__ = ["load_sweep", "planned_runs", "run_sweep", "sweep_command"]


def _say(text: str) -> None:
    print(f"[sweep] {text}", file=sys.stderr, flush=True)


def _describe(result: dict, spec: SweepSpec, position: str) -> str:
    params = " ".join(f"{k}={format_value(v)}" for k, v in result["params"].items())
    if result["skipped"]:
        return f"{result['run']} {position} {params}: already finished, skipped"
    if result["status"] != "finished":
        return (f"{result['run']} {position} {params}: FAILED (exit {result['exit_code']}), "
                f"see {result['dir']}/train.log")
    best = "never logged" if result["best"] is None else f"{result['best']:.4g}"
    return f"{result['run']} {position} {params}: {spec.metric} best {best} ({result['seconds']:.0f} s)"


def _bayes_params(spec: SweepSpec, out: Path, index: int, results: list[dict]) -> dict:
    """A run directory from an earlier attempt keeps its parameters; otherwise ask the engine."""
    earlier = read_result(out / f"run-{index:02d}")
    return earlier["params"] if earlier is not None else bayes_next(spec, results)


def run_sweep(spec: SweepSpec, out: Path, preset: str, overrides: tuple[str, ...] = (), max_runs: int = 0,
              seed: int = 0, runner: Runner = subprocess_runner) -> list[dict]:
    """Run every planned combination (bayes: one proposal at a time) and return the ranked rows."""
    plan = planned_runs(spec, max_runs, seed)
    total = len(plan) if plan is not None else run_limit(spec, max_runs)
    _say(f"{spec.name}: {spec.method} search, {total} run(s), preset {preset}, results in {out}")
    results: list[dict] = []
    for index in range(total):
        params = plan[index] if plan is not None else _bayes_params(spec, out, index, results)
        result = run_combination(index, params, spec, out, preset, overrides, runner)
        results.append(result)
        _say(_describe(result, spec, f"({index + 1}/{total})"))
        write_summary(spec, results, out)
    rows = write_summary(spec, results, out)
    failed = sum(row["status"] != "finished" for row in rows)
    _say(f"done: {len(rows) - failed} finished, {failed} failed; table in {out / 'summary.md'}")
    return rows


def sweep_command(sweep_file: str, overrides=(), max_runs: int = 0, preset: str = "demo-cpu", out: str = "",
                  seed: int = 0, runner: Runner = subprocess_runner) -> list[dict]:
    """CLI entry: check the file and the overrides, then run the sweep into OUT (default runs/sweeps/NAME)."""
    overrides = tuple(str(item) for item in overrides)
    load_config(preset or None, overrides)          # bad preset or overrides fail before anything runs
    spec = load_sweep(sweep_file, preset, overrides)
    planned_runs(spec, max_runs, seed)              # e.g. a continuous distribution in a grid
    out_dir = output_folder(Path(out) if out else Path("runs") / "sweeps" / spec.name, "sweep --out")
    with FolderLock(out_dir, "sweep --out"):
        rows = run_sweep(spec, out_dir, preset, overrides, max_runs=max_runs, seed=seed, runner=runner)
    failed = [row["run"] for row in rows if row["status"] != "finished"]
    if failed:
        # The summary is written; the exit status still tells scripts that the sweep is incomplete.
        raise SweepError(f"sweep: {len(failed)} of {len(rows)} runs failed ({', '.join(failed)}); "
                         "run the same command again to retry them")
    return rows

"""gpu-check's runner and command: options, the sections in order, the JSON and table after each.

The sections that run torch kernels (train_step, loaders, dali_parity, rollover, ddp, deepspeed,
compile) run in child processes (child.py, Check.child), each killed at the end of the time budget;
train_resume drives `murauer-dist train` processes (runs.py). This process itself only probes,
makes the data, starts processes and writes the results.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.gpu_check.child import run_section
from murauer_dist.bench.gpu_check.measure import memory_section
from murauer_dist.bench.gpu_check.probes import dataset, environment, gpu_tests
from murauer_dist.bench.gpu_check.report import render, status_cell
from murauer_dist.bench.gpu_check.runs import train_resume_section
from murauer_dist.bench.gpu_check.spec import (DEFAULTS, SECTIONS, TARGET_CROPS_PER_S, TARGET_DATA_WAIT,
                                               TARGET_ITERS_PER_S, Budget, Options, Skip, error_text)
from murauer_dist.bench.machine import machine
from murauer_dist.errors import UserError

PACKAGE = "murauer_dist.bench.gpu_check"


class Check:
    """Runs the sections in order, each isolated, and rewrites the JSON after each one."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.started = time.perf_counter()
        self.budget = Budget(time.time() + opts.budget_s, opts.budget_s)
        self.result = {"benchmark": "gpu-check", "machine": machine(),
                       "options": {**dataclasses.asdict(opts), "out_dir": str(opts.out_dir), "skip": list(opts.skip)},
                       "targets": {"iters_per_s": TARGET_ITERS_PER_S, "crops_per_s": TARGET_CROPS_PER_S,
                                   "data_wait_fraction": TARGET_DATA_WAIT},
                       "sections": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def run(self, name: str, function, budgeted: bool = True) -> dict:
        started = time.perf_counter()
        print(f"[gpu-check] {name} ...", flush=True)
        try:
            if name in self.opts.skip:
                raise Skip("--skip")
            if budgeted:
                self.budget.require_time(name)
            data = function() or {}
            section = {"status": data.pop("status", "ok"), **data}
        except Skip as why:
            section = {"status": "skipped", "reason": str(why)}
        except Exception as err:  # noqa: BLE001 - one failing section is reported, the rest still runs
            section = {"status": "failed", "reason": error_text(err), "traceback": traceback.format_exc()[-4000:]}
        section["seconds"] = time.perf_counter() - started
        self.result["sections"][name] = section
        print(f"[gpu-check] {name}: {status_cell(section)} ({section['seconds']:.1f} s)", flush=True)
        self.write()
        return section

    def child(self, name: str, function: str, needs=(), **kwargs) -> dict:
        """Section `name`: PACKAGE.function(opts, budget, **kwargs) in its own process, once each of
        `needs` (callables raising Skip) has passed."""
        def run():
            for need in needs:
                need()
            return run_section(f"{PACKAGE}.{function}", self.opts, self.budget, **kwargs)
        return self.run(name, run)

    def write(self) -> None:
        self.result["seconds"] = self.elapsed()
        out = self.opts.out_dir
        atomic_write_text(out / "gpu-check.json", json.dumps(self.result, indent=2, default=str) + "\n")
        atomic_write_text(out / "gpu-check.md", render(self.result))


def _made(section: dict, what: str):
    """A need: section `what` ran."""
    def need() -> None:
        if section.get("status") != "ok":
            raise Skip(f"the {what} section did not run ({section.get('status')})")
    return need


def _importable(environment_section: dict, package: str) -> tuple[bool, str]:
    probe = environment_section.get("packages", {}).get(package)
    if probe is None:           # the environment section failed: let the section find out itself
        return True, ""
    return bool(probe.get("importable")), probe.get("reason", "")


def _imports(environment_section: dict, package: str, label: str):
    """A need: the environment section found `package` importable."""
    def need() -> None:
        importable, reason = _importable(environment_section, package)
        if not importable:
            raise Skip(f"{label} is not importable" + (f" ({reason})" if reason else ""))
    return need


def _c_compiler_works(environment_section: dict) -> bool:
    return environment_section.get("compilers", {}).get("c", {}).get("builds", True)


def _options(out_dir: str, device: str, preset: str, steps: int, warmup: int, frames: int, compile_backend: str,
             budget_s: float, loader_threads: int, skip, keep_data: bool) -> Options:
    if not out_dir:
        raise UserError("usage: murauer-dist bench gpu-check OUT_DIR [--device cuda|cpu] "
                        "(OUT_DIR receives gpu-check.json)")
    device = str(device).lower()
    if device == "gpu":
        device = "cuda"
    if device not in DEFAULTS:
        raise UserError(f"--device must be cuda or cpu, got {device!r}")
    defaults = DEFAULTS[device]
    if isinstance(skip, str):
        skip = [item.strip() for item in skip.split(",") if item.strip()]
    skip = tuple(skip or ())
    unknown = sorted(set(skip) - set(SECTIONS))
    if unknown:
        raise UserError(f"--skip: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name, value in (("steps", steps), ("frames", frames)):
        if value and int(value) < 1:
            raise UserError(f"--{name} must be positive, got {value}")
    return Options(out_dir=Path(out_dir), device=device, preset=preset or defaults["preset"],
                   steps=int(steps or defaults["steps"]), warmup=int(warmup if warmup >= 0 else defaults["warmup"]),
                   frames=int(frames or defaults["frames"]),
                   compile_backend=compile_backend or defaults["compile_backend"],
                   budget_s=float(budget_s or defaults["budget_s"]), loader_threads=int(loader_threads),
                   skip=skip, keep_data=bool(keep_data))


def main(out_dir: str = "", device: str = "cuda", preset: str = "", steps: int = 0, warmup: int = -1,
         frames: int = 0, compile_backend: str = "", budget_s: float = 0.0, loader_threads: int = 0,
         skip="", keep_data: bool = False) -> dict:
    """Check this node: environment, gpu tests, data, training step variants, loaders, DALI parity,
    epoch rollover, DDP, DeepSpeed, a stopped and resumed training run, torch.compile, memory.

    Writes OUT_DIR/gpu-check.json and OUT_DIR/gpu-check.md. Defaults per device: cuda = nyu preset,
    50 steps after 10 warm-up, 256 frames, compile backend inductor, 600 s budget; cpu = tiny, 3
    steps after 1, 24 frames, backend eager, 600 s. --skip takes section names (e.g. gpu_tests,compile).
    Raises UserError (exit 1, one line) when a section failed; skipped sections are not failures.
    """
    opts = _options(out_dir, device, preset, steps, warmup, frames, compile_backend, budget_s, loader_threads,
                    skip, keep_data)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    if opts.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    check = Check(opts)
    env = check.run("environment", lambda: environment(opts), budgeted=False)
    check.run("gpu_tests", lambda: gpu_tests(opts, check.budget))
    scratch = Path(tempfile.mkdtemp(prefix=".gpu-check-data-", dir=opts.out_dir))
    try:
        data = check.run("dataset", lambda: dataset(opts, scratch))
        shards, has_data = {"overrides": data.get("overrides", [])}, _made(data, "dataset")
        check.child("train_step", "measure:train_step_section")
        check.child("loaders", "loaders:loaders_section", needs=[has_data], data=shards)
        check.child("dali_parity", "loaders:dali_parity_section", needs=[has_data, _imports(env, "dali", "DALI")],
                    data=shards)
        check.child("rollover", "loaders:rollover_section", needs=[has_data], data=shards)
        check.child("ddp", "measure:ddp_section")
        check.child("deepspeed", "measure:deepspeed_section", needs=[_imports(env, "deepspeed", "DeepSpeed")])

        def train_resume() -> dict:
            has_data()
            return train_resume_section(opts, check.budget, shards, scratch, dali=_importable(env, "dali")[0])
        check.run("train_resume", train_resume)
        check.child("compile", "measure:compile_section", c_compiler=_c_compiler_works(env))
    finally:
        if not opts.keep_data:
            shutil.rmtree(scratch, ignore_errors=True)
    check.run("memory", lambda: memory_section(opts, check.result["sections"]), budgeted=False)
    check.write()
    table = render(check.result)
    print("\n" + table, end="", flush=True)
    print(f"written: {opts.out_dir / 'gpu-check.json'}, {opts.out_dir / 'gpu-check.md'}")
    failed = [name for name, section in check.result["sections"].items() if section["status"] == "failed"]
    if failed:
        raise UserError(f"gpu-check: {len(failed)} section(s) failed: {', '.join(failed)} "
                        f"(reasons and tracebacks in {opts.out_dir / 'gpu-check.json'})")
    return check.result

"""launch/gpu-check.sh in CPU mode: the same sequence a GPU node runs, on the tiny preset.

Runs the shell script as a user does (the environment of a user's shell: no thread counts, no
WANDB_MODE, nothing the test runner sets) into a temporary folder and checks that every section is
reported with a status, the table is printed, nothing but the two result files is left, and the
command exits 0. A second run hides DALI, DeepSpeed and wandb (an environment with only torch and
the light dependencies) and sets OMP_NUM_THREADS=2 as a user may: the missing packages must be
reported as missing / skipped, and the command must still exit cleanly. The section processes
themselves (child.py): a crash or an overrun is reported in its section.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from murauer_dist.bench.gpu_check import SECTIONS, Options
from murauer_dist.bench.gpu_check.child import run_section
from murauer_dist.bench.gpu_check.spec import PARITY_TOLERANCE, Budget, Skip

REPO = Path(__file__).resolve().parent.parent
MACHINE_FIELDS = ("cpu_model", "cpu_cores", "load_average_1min", "gpu")

# Imported first by every python started with this folder on PYTHONPATH: the named packages then
# fail to import, as if they were not installed.
BLOCKER = """
import importlib.abc, os, sys

BLOCKED = set(filter(None, os.environ.get("GPU_CHECK_TEST_BLOCK", "").split(",")))


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
"""


# Set by the test runner (launch/test.sh, CI) or by a developer's shell, never by a user who runs
# the check on a new node: the script must choose them itself.
NOT_A_USERS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_EXTENSIONS_DIR", "DS_ACCELERATOR", "PYTHONPATH")
NOT_A_USERS_PREFIXES = ("WANDB_", "MURAUER_", "PYTEST_", "GPU_CHECK_")


def user_environment() -> dict:
    """The environment of a user's shell: the test runner's own settings removed."""
    return {key: value for key, value in os.environ.items()
            if key not in NOT_A_USERS and not key.startswith(NOT_A_USERS_PREFIXES)}


def _run(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**user_environment(), "PY": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(REPO / "launch" / "gpu-check.sh"), str(out), "--device", "cpu", *args],
                          cwd=REPO, env=environment, capture_output=True, text=True, timeout=900)


def _result(out: Path, done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "gpu-check.md"]   # scratch data removed
    return json.loads((out / "gpu-check.json").read_text())


def test_gpu_check_cpu_mode_reports_every_section(tmp_path):
    out = tmp_path / "check"
    done = _run(out)
    result = _result(out, done)
    sections = result["sections"]
    assert list(sections) == list(SECTIONS)
    for name, section in sections.items():
        assert section["status"] in ("ok", "skipped"), (name, section)
        assert section["seconds"] >= 0
    assert {"environment", "gpu_tests", "dataset", "train_step", "loaders", "rollover", "ddp", "train_resume",
            "compile"} <= {name for name, section in sections.items() if section["status"] == "ok"}
    assert sections["memory"]["status"] == "skipped" and "no GPU" in sections["memory"]["reason"]
    for field in MACHINE_FIELDS:
        assert field in result["machine"]

    env = sections["environment"]
    assert env["torch"]["version"] and {"dali", "deepspeed", "wandb"} <= set(env["packages"])
    # The script chose the threads as launch/torchrun.sh does: the cores shared by the ranks (2 without a GPU).
    ranks = env["gpu_count"] or 2
    assert env["threads"]["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // ranks))
    assert env["torch"]["threads"] == int(env["threads"]["OMP_NUM_THREADS"])
    assert {"found", "builds"} <= set(env["compilers"]["c"])
    tests = sections["gpu_tests"]
    assert tests["failed"] == 0 and tests["errors"] == 0
    data = sections["dataset"]
    assert data["samples"] > 0 and data["test_samples"] > 0 and data["crop_size"] == 32

    step = sections["train_step"]
    assert [row["name"] for row in step["rows"]] == ["fp32", "bf16", "bf16 + channels-last"]
    timed = [*step["rows"], sections["compile"], sections["ddp"]]
    if env["packages"]["deepspeed"]["importable"]:
        deepspeed = sections["deepspeed"]
        assert deepspeed["status"] == "ok" and deepspeed["zero_stage"] == 1
        assert deepspeed["config"] == "configs/deepspeed/zero1-bf16.json"
        timed.append(deepspeed)
    for row in timed:
        assert row["iters_per_s"] > 0 and row["nonfinite_skipped_steps"] == 0
        assert abs(row["crops_per_s"] - row["iters_per_s"] * step["crops_per_step"]) < 1e-6 * row["crops_per_s"]
    compiled = sections["compile"]
    assert compiled["compile_backend"] == "eager" and compiled["compile_s"] >= 0
    assert "compile_networks" in compiled["compiled"] and compiled["ddp_backend"] == "gloo"
    assert sections["ddp"]["backend"] == "gloo"

    loaders = {row["backend"]: row for row in sections["loaders"]["rows"] if row["status"] == "ok"}
    assert "reference" in loaders
    if env["packages"]["dali"]["importable"]:
        assert loaders["dali"]["loader_device"] == "cpu"
    for row in loaders.values():
        assert 0.0 <= row["data_wait_fraction"] <= 1.0
        assert row["threads"] == 2                             # the tiny preset's loader.num_threads

    parity = sections["dali_parity"]
    if env["packages"]["dali"]["importable"]:
        assert parity["status"] == "ok" and parity["compared"] == "DALI CPU vs reference"
        assert parity["frames"] == data["test_samples"]
        assert max(parity["max_abs_diff"]["depth"], parity["max_abs_diff"]["target"]) <= PARITY_TOLERANCE
    else:
        assert parity["status"] == "skipped"

    rollover = sections["rollover"]
    assert rollover["steps"] == rollover["epochs"] * rollover["iters_per_epoch"] + 1 and rollover["epochs"] >= 2
    assert len(rollover["rollover_wait_ms"]) == rollover["epochs"] and rollover["step_ms_median"] > 0
    assert rollover["loss_finite_steps"] == rollover["steps"]

    resume = sections["train_resume"]
    stopped, resumed = resume["runs"]
    assert resume["planned_steps"] == resume["stage1_steps"] + resume["stage2_steps"] == 6 + 18
    assert (stopped["exit"], stopped["status"]) == (0, "stopped")
    assert resume["stage1_steps"] < stopped["global_step"] < resume["planned_steps"]       # mid stage 2
    assert stopped["sigterm_after_step"] > resume["stage1_steps"]
    assert stopped["checkpoint"] == f"ckpt-{stopped['global_step']:09d}.pt"          # written at the stop
    assert (resumed["exit"], resumed["status"], resumed["checkpoint"]) == (0, "done", "final-main.pt")
    assert resumed["resumed_from_step"] == stopped["global_step"] == resumed["first_logged_step"] - 1
    assert resumed["global_step"] == resume["planned_steps"]
    assert stopped["steps"] + resumed["steps"] == resume["planned_steps"]
    assert all(run["wall_s"] > 0 and run["steps_per_s"] > 0 for run in resume["runs"])

    table = (out / "gpu-check.md").read_text()
    assert table in done.stdout
    for text in ("| section | status |", "MURAUER step (tiny", "fed by the loaders", "machine:", "Targets",
                 "Epoch rollover", "murauer-dist train tiny (24 steps planned", "| stopped | 0 | stopped |",
                 "| resumed | 0 | done | 24 |"):
        assert text in table
    for name in SECTIONS:
        assert f"| {name} |" in table


def test_gpu_check_without_dali_deepspeed_wandb(tmp_path):
    blockers = tmp_path / "blockers"
    blockers.mkdir()
    (blockers / "sitecustomize.py").write_text(BLOCKER)
    out = tmp_path / "check"
    done = _run(out, "--skip", "gpu_tests,ddp,train_resume,compile", "--frames", "16",
                env={"PYTHONPATH": str(blockers), "GPU_CHECK_TEST_BLOCK": "nvidia.dali,deepspeed,wandb",
                     "OMP_NUM_THREADS": "2"})
    result = _result(out, done)
    sections = result["sections"]
    packages = sections["environment"]["packages"]
    for name in ("dali", "deepspeed", "wandb"):
        assert packages[name]["importable"] is False and "hidden by the test" in packages[name]["reason"]
    assert packages["numpy"]["importable"] is True
    assert sections["environment"]["threads"]["OMP_NUM_THREADS"] == "2"          # the user's value is kept
    for name in ("gpu_tests", "ddp", "train_resume", "compile"):
        assert sections[name] == {"status": "skipped", "reason": "--skip", "seconds": sections[name]["seconds"]}
    assert sections["train_step"]["status"] == "ok"        # bf16 on 2 threads: no crash, in or after the section
    rows = {row["name"].split(" ")[0]: row for row in sections["loaders"]["rows"]}
    assert rows["reference"]["status"] == "ok"
    assert rows["DALI"]["status"] == "skipped" and "DALI is not installed" in rows["DALI"]["reason"]
    for name, label in (("dali_parity", "DALI"), ("deepspeed", "DeepSpeed")):
        assert sections[name]["status"] == "skipped" and f"{label} is not importable" in sections[name]["reason"]
    assert sections["rollover"]["status"] == "ok" and sections["rollover"]["backend"] == "reference"
    assert "missing: dali, deepspeed, wandb" in done.stdout


SECTION_FUNCTIONS = """
import os, signal, time

def crash(opts, budget):
    print("about to crash", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)

def overrun(opts, budget):
    time.sleep(60)

def answer(opts, budget, value=0):
    budget.require_time("answer")
    return {"value": value}
"""


def test_a_section_process_that_crashes_or_overruns_is_reported(tmp_path, monkeypatch):
    (tmp_path / "gpu_check_sections.py").write_text(SECTION_FUNCTIONS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    opts = Options(out_dir=tmp_path, device="cpu", preset="tiny", steps=1, warmup=0, frames=8, compile_backend="eager",
                   budget_s=60.0, loader_threads=0, skip=(), keep_data=False)
    assert run_section("gpu_check_sections:answer", opts, Budget(time.time() + 60, 60), value=7) == {
        "status": "ok", "value": 7}
    crashed = run_section("gpu_check_sections:crash", opts, Budget(time.time() + 60, 60))
    assert crashed["status"] == "failed" and "SIGSEGV" in crashed["reason"]
    assert "about to crash" in crashed["output_tail"]
    started = time.perf_counter()
    overran = run_section("gpu_check_sections:overrun", opts, Budget(time.time() + 4, 60))
    assert overran["status"] == "failed" and overran["timed_out"] and "time budget" in overran["reason"]
    assert time.perf_counter() - started < 30
    with pytest.raises(Skip, match="time budget"):
        run_section("gpu_check_sections:answer", opts, Budget(time.time() - 1, 60))

"""launch/gpu-check.sh in CPU mode: the same sequence a GPU node runs, on the tiny preset.

Runs the shell script (as a user does) into a temporary folder and checks that every section is
reported with a status, the table is printed, and nothing but the two result files is left. A
second run hides DALI, DeepSpeed and wandb (an environment with only torch and the light
dependencies): they must be reported as missing / skipped, never crash the check.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from murauer_dist.bench.gpu_check import SECTIONS

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


def _run(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
                   **(env or {})}
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
    assert {"environment", "gpu_tests", "dataset", "train_step", "loaders", "ddp", "compile"} <= {
        name for name, section in sections.items() if section["status"] == "ok"}
    assert sections["memory"]["status"] == "skipped" and "no GPU" in sections["memory"]["reason"]
    for field in MACHINE_FIELDS:
        assert field in result["machine"]

    env = sections["environment"]
    assert env["torch"]["version"] and {"dali", "deepspeed", "wandb"} <= set(env["packages"])
    tests = sections["gpu_tests"]
    assert tests["failed"] == 0 and tests["errors"] == 0
    assert sections["dataset"]["samples"] > 0 and sections["dataset"]["crop_size"] == 32

    step = sections["train_step"]
    assert [row["name"] for row in step["rows"]] == ["fp32", "bf16", "bf16 + channels-last"]
    for row in [*step["rows"], sections["compile"], sections["ddp"]]:
        assert row["iters_per_s"] > 0
        assert abs(row["crops_per_s"] - row["iters_per_s"] * step["crops_per_step"]) < 1e-6 * row["crops_per_s"]
    assert sections["compile"]["compile_backend"] == "eager" and sections["compile"]["compile_s"] >= 0
    assert sections["ddp"]["backend"] == "gloo"

    loaders = {row["backend"]: row for row in sections["loaders"]["rows"] if row["status"] == "ok"}
    assert "reference" in loaders
    if env["packages"]["dali"]["importable"]:
        assert loaders["dali"]["loader_device"] == "cpu"
    for row in loaders.values():
        assert 0.0 <= row["data_wait_fraction"] <= 1.0

    table = (out / "gpu-check.md").read_text()
    assert table in done.stdout
    for text in ("| section | status |", "MURAUER step (tiny", "fed by the loaders", "machine:", "Targets"):
        assert text in table
    for name in SECTIONS:
        assert f"| {name} |" in table


def test_gpu_check_without_dali_deepspeed_wandb(tmp_path):
    blockers = tmp_path / "blockers"
    blockers.mkdir()
    (blockers / "sitecustomize.py").write_text(BLOCKER)
    out = tmp_path / "check"
    done = _run(out, "--skip", "gpu_tests,train_step,ddp,compile", "--frames", "16",
                env={"PYTHONPATH": str(blockers), "GPU_CHECK_TEST_BLOCK": "nvidia.dali,deepspeed,wandb"})
    result = _result(out, done)
    sections = result["sections"]
    packages = sections["environment"]["packages"]
    for name in ("dali", "deepspeed", "wandb"):
        assert packages[name]["importable"] is False and "hidden by the test" in packages[name]["reason"]
    assert packages["numpy"]["importable"] is True
    for name in ("gpu_tests", "train_step", "ddp", "compile"):
        assert sections[name] == {"status": "skipped", "reason": "--skip", "seconds": sections[name]["seconds"]}
    rows = {row["name"].split(" ")[0]: row for row in sections["loaders"]["rows"]}
    assert rows["reference"]["status"] == "ok"
    assert rows["DALI"]["status"] == "skipped" and "DALI is not installed" in rows["DALI"]["reason"]
    assert "missing: dali, deepspeed, wandb" in done.stdout

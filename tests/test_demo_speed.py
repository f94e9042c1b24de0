"""The demo's per-phase settings and `bench demo`: threads, freed memory, phase timing of a tiny demo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from murauer_dist import memory
from murauer_dist.recipes import workflow
from murauer_dist.bench import BENCHMARKS
from murauer_dist.bench import demo as bench_demo
from murauer_dist.config import load_config


def test_torch_threads_leave_the_loaders_cores(monkeypatch):
    cfg = load_config("demo-cpu", ["loader.num_threads=2"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(workflow, "usable_cores", lambda: 2)
    assert workflow.torch_threads(cfg) == 1
    monkeypatch.setattr(workflow, "usable_cores", lambda: 16)
    assert workflow.torch_threads(cfg) == 14
    monkeypatch.setenv("OMP_NUM_THREADS", "3")                      # the user's setting wins
    assert workflow.torch_threads(cfg) == 3


def test_training_child_gets_the_thread_count(monkeypatch, tmp_path):
    """run_training hands the child OMP_NUM_THREADS without changing this process's environment."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(workflow, "usable_cores", lambda: 2)
    seen = {}

    def fake_run(command, env, **kwargs):
        seen["env"] = env
        return subprocess.CompletedProcess(command, 0)
    monkeypatch.setattr(workflow.subprocess, "run", fake_run)
    workflow.run_training("demo-cpu", ["loader.num_threads=1"])
    assert seen["env"]["OMP_NUM_THREADS"] == "1" and "OMP_NUM_THREADS" not in os.environ
    import torch
    before = torch.get_num_threads()
    with workflow.torch_thread_count(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_keep_freed_memory_names_the_glibc_variables():
    assert memory.keep_freed_memory() == {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
                                          "MALLOC_TRIM_THRESHOLD_": str(512 * 1024 * 1024)}


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_tree_cpu_counts_live_children():
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.6\n"
                              "while time.process_time() < end: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 60
        while bench_demo.tree_cpu(child.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bench_demo.tree_cpu(os.getpid()) >= bench_demo.tree_cpu(child.pid) >= 0.5
    finally:
        child.kill()
        child.wait()


def test_bench_demo_times_every_phase_of_a_tiny_demo(tmp_path):
    assert BENCHMARKS["demo"] == "murauer_dist.bench.demo"
    result = bench_demo.main("data.synth_frames_train=48", "data.synth_frames_test=8", "data.n_labeled=10",
                             "data.shard_size=20", "train.pretrain_epochs=1", "train.epochs=1",
                             "train.iters_per_epoch=4", "train.checkpoint_every=1000", "logging.wandb_mode=disabled",
                             out=str(tmp_path / "out"), work=str(tmp_path / "work"), keep=True)
    assert [row["phase"] for row in result["phases"]] == list(bench_demo.PHASES)
    for row in result["phases"]:
        assert row["wall_s"] >= 0 and row["cpu_s"] >= 0
    assert sum(row["wall_s"] for row in result["phases"]) == pytest.approx(result["total"]["wall_s"], abs=0.5)
    assert result["phases"][0]["cpu_s"] > 0.5                      # the generator's workers are counted
    assert result["test_frames"] == 8 and result["mean_error_mm"] > 0
    # NYU-like test split: frames 0-1 by the training actor; the demo and the table report both subjects
    assert result["subject_split"] == 2 and result["subject1_mean_error_mm"] > 0 and result["subject2_mean_error_mm"] > 0
    assert "training actor (test frames 0-1)" in (tmp_path / "out" / "demo.log").read_text()
    written = json.loads((tmp_path / "out" / "bench-demo.json").read_text())
    assert written["phases"] == result["phases"] and "cpu_model" in written["machine_at_start"]
    table = (tmp_path / "out" / "bench-demo.md").read_text()
    assert "| stage 2 |" in table and "mean joint error" in table and "second actor from frame 2" in table
    assert "[data] done" in (tmp_path / "out" / "demo.log").read_text()


def test_comparison_table_gives_per_phase_ratios():
    def run(commit, walls, cpus, error):
        phases = [{"phase": phase, "wall_s": wall, "cpu_s": cpu} for phase, wall, cpu in zip(bench_demo.PHASES, walls, cpus)]
        machine = {"cpu_model": "cpu", "cpu_cores": 2, "load_average_1min": 0.5}
        return {"source_commit": commit, "phases": phases, "total": {"wall_s": sum(walls), "cpu_s": sum(cpus)},
                "mean_error_mm": error, "test_frames": 800, "machine_at_start": machine, "machine_at_end": machine}
    old = run("aaa", [100, 50, 40, 200, 10], [190, 90, 80, 400, 20], 17.68)
    new = run("bbb", [50, 50, 20, 100, 10], [95, 45, 80, 200, 20], 17.80)
    text = bench_demo.comparison_table(old, new)
    assert "| data | 100.0 | 50.0 | 2.00x | 190.0 | 95.0 | 2.00x |" in text
    assert "| total | 400.0 | 230.0 | 1.74x | 780.0 | 440.0 | 1.77x |" in text
    assert "baseline aaa: mean joint error 17.68 mm" in text and "source bbb: mean joint error 17.80 mm" in text


def test_bench_demo_names_a_folder_that_is_no_checkout(tmp_path):
    from murauer_dist.errors import UserError
    with pytest.raises(UserError, match="--baseline .*no murauer_dist package"):
        bench_demo.main(out=str(tmp_path / "out"), baseline=str(tmp_path))

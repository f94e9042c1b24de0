"""Two runs never share a folder: a second `train` into a run folder in use, a `make-shards` or an
`experiment` writing into it, are refused in one line naming the holder; a lock left by a process that
died is taken over, saying whose it was (real commands; the training runs on the in-memory streams)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nyu_fixture import make_nyu_layout
from test_reliability_train import LAUNCHER, child_env, one_line_error

LOCK_NAME = ".murauer-lock"          # murauer_dist/folder_lock.py


def cli(tmp_path: Path, *args: str, launcher: bool = False) -> subprocess.CompletedProcess:
    """`murauer-dist ARGS` as a child process that must be done within 60 s (a refused command is)."""
    command = [str(tmp_path / "launch.py")] if launcher else ["-m", "murauer_dist.cli"]
    return subprocess.run([sys.executable, *command, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=child_env(tmp_path))


def start_training(tmp_path: Path, out: Path) -> subprocess.Popen:
    """A training run that goes on until it is stopped (in-memory streams), once it holds its lock."""
    (tmp_path / "launch.py").write_text(LAUNCHER)
    process = subprocess.Popen([sys.executable, str(tmp_path / "launch.py"), "train", "tiny", f"train.out={out}",
                                "train.iters_per_epoch=100000", "train.checkpoint_every=20",
                                "logging.wandb_mode=disabled"], cwd=tmp_path, env=child_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("ckpt-*.pt")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the first run wrote no checkpoint within 120 s"
        time.sleep(0.1)
    return process


def metric_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_a_second_command_in_a_folder_in_use_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    first = start_training(tmp_path, out)
    try:
        second = cli(tmp_path, "train", "tiny", f"train.out={out}", "train.iters_per_epoch=100000",
                     "train.checkpoint_every=20", "logging.wandb_mode=disabled", launcher=True)
        line = one_line_error(second)
        assert f"train.out={out} is in use by pid {first.pid} on host" in line and "choose another train.out" in line
        assert "resuming" not in second.stdout
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and "train.out=" in holder["command"]

        root = make_nyu_layout(tmp_path / "nyu", frames_train=4, frames_test=2, seed=3)
        shards = cli(tmp_path, "make-shards", str(root), str(out), "data.crop_size=32")
        line = one_line_error(shards)
        assert f"make-shards OUT={out} is in use by pid {first.pid}" in line, line
        assert not (out / "train").exists()
        experiment = cli(tmp_path, "experiment", "label-efficiency", "--out", str(out), "--preset", "tiny")
        line = one_line_error(experiment)
        assert f"experiment --out={out} is in use by pid {first.pid}" in line, line

        steps = metric_steps(out)
        assert steps == sorted(steps) and len(steps) == len(set(steps))       # one writer: no interleaving
    finally:
        os.kill(first.pid, signal.SIGKILL)                   # dies holding the lock: the kernel drops it
        first.communicate(timeout=60)
    assert (out / LOCK_NAME).is_file()                       # left behind by the dead process
    before = set((out / "checkpoints").glob("ckpt-*.pt"))

    resumed = subprocess.Popen([sys.executable, str(tmp_path / "launch.py"), "train", "tiny", f"train.out={out}",
                                "train.iters_per_epoch=100000", "train.checkpoint_every=20",
                                "logging.wandb_mode=disabled"], cwd=tmp_path, env=child_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not set((out / "checkpoints").glob("ckpt-*.pt")) - before:        # it trains on
        assert resumed.poll() is None, resumed.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    resumed.send_signal(signal.SIGTERM)                      # a clean stop: checkpoint, lock file removed
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"taking over the lock left by pid {first.pid}" in stderr, stderr
    assert "resuming from" in stdout and "training stopped" in stdout, stdout
    assert not (out / LOCK_NAME).exists()


def test_a_second_generator_on_the_same_data_root_stops_and_deletes_nothing(tmp_path):
    """Two experiments that share data.root: the second one's generator (with overwrite, as the
    workflow calls it) must not clear the files the first one is writing."""
    import pytest
    from murauer_dist.folder_lock import FolderLock, FolderLockedError
    from murauer_dist.frames.procedural.generate import synth_data
    root = tmp_path / "data"
    synth_data(root, frames_train=2, frames_test=1, seed=3, workers=1, progress=False)
    before = sorted(path.name for path in (root / "train").iterdir())
    with FolderLock(root, "synth-data OUT"):                 # the first generator, still writing
        with pytest.raises(FolderLockedError, match="synth-data OUT"):
            synth_data(root, frames_train=2, frames_test=1, seed=3, workers=1, progress=False, overwrite=True)
        assert sorted(path.name for path in (root / "train").iterdir()) == before
    again = synth_data(root, frames_train=2, frames_test=1, seed=3, workers=1, progress=False, overwrite=True)
    assert sorted(path.name for path in (again / "train").iterdir()) == before and not (root / ".murauer-lock").exists()

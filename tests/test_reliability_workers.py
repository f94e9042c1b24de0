"""A worker dies, the process does not: a shard cut short while `murauer-dist train` reads it (DALI, CPU)
ends the run with one line naming the shard and the last good checkpoint, never a bus error; after
`make-shards --verify` and the repair, the same command resumes from that checkpoint."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from murauer_dist.shards.cli import make_shard_set
from murauer_dist.train import checkpoint as ckpt
from nyu_fixture import SHARD_ARGS, layout_with_shards
from test_reliability_train import child_env, one_line_error

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return layout_with_shards(tmp_path_factory.mktemp("workers"), frames_train=40)


def train_args(dataset: dict, out: Path) -> list[str]:
    """A one-stage run (synthetic stream only) of 150 steps, a checkpoint every 5."""
    return [sys.executable, "-m", "murauer_dist.cli", "train", "tiny", f"data.root={dataset['root']}",
            f"data.shards={dataset['shards']}", f"train.out={out}", "train.method=synth_only", "train.pretrain_epochs=0",
            "train.iters_per_epoch=150", "train.checkpoint_every=5", "loader.num_threads=1"]


def test_a_shard_cut_short_during_training_is_one_line_and_the_run_resumes_after_repair(dataset, tmp_path):
    out = tmp_path / "run"
    env = child_env(tmp_path)
    process = subprocess.Popen(train_args(dataset, out), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list((out / "checkpoints").glob("ckpt-*.pt")) and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.1)
        shard = dataset["shards"] / "train" / "shard-000000.tar"
        data = shard.read_bytes()
        with open(shard, "r+b") as handle:                   # cut short in place, as a failing copy would
            handle.truncate(len(data) // 3)
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert process.returncode == 1, (process.returncode, stderr[-2000:])          # not killed by a signal
    line = one_line_error(result)
    assert f"shard {shard} could not be read" in line and "shorter than its index" in line, line
    last = ckpt.find_resumable(out)[0]
    assert f"the last good checkpoint is {last}" in line, line
    assert f"make-shards --verify {dataset['shards']}" in line and "resumes from that checkpoint" in line, line

    verify = subprocess.run([sys.executable, "-m", "murauer_dist.cli", "make-shards", "--verify",
                             str(dataset["shards"])], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert verify.returncode != 0 and "shard-000000.tar" in verify.stdout + verify.stderr
    make_shard_set(str(dataset["root"]), str(dataset["shards"]), workers=1, overrides=SHARD_ARGS,
                   log=lambda *a, **k: None)                 # the repair: the same make-shards again
    again = subprocess.run(train_args(dataset, out), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {last}" in again.stdout, again.stdout
    done = [line for line in again.stdout.splitlines() if line.startswith("training done")]
    assert len(done) == 1 and "150" in done[0], again.stdout                 # all 150 steps trained

"""Faults of the machine end in one line, not a traceback: an output that is a file where a folder is needed
(or the reverse), a read-only output, a full disk. Each line names the path and what to do, and what was
written before stays valid (real commands; a small or read-only file system from tests/machine_faults.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from machine_faults import read_only, run_on, small_disk
from murauer_dist import cli
from murauer_dist.config import load_config
from murauer_dist.models import build_model
from murauer_dist.train import checkpoint as ckpt
from nyu_fixture import make_nyu_layout
from test_reliability_train import LAUNCHER, child_env, cli as train_cli, one_line_error


def main_line(argv: list[str]) -> str:
    """The one line `murauer-dist ARGV` (the CLI entry, in this process) ends with."""
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    message = caught.value.code
    assert isinstance(message, str) and message.startswith("murauer-dist: ") and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def pose_run(tmp_path_factory) -> Path:
    """A run folder with an (untrained) tiny pose model as checkpoints/final-main.pt."""
    run = tmp_path_factory.mktemp("pose") / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = load_config("tiny")
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "stage": "main"},
               run / "checkpoints" / "final-main.pt")
    return run


def original_model_file(path: Path) -> Path:
    """A model file in the original code's layout (import-original's input) for the tiny preset."""
    from murauer_dist.import_original import original_names
    model = build_model(load_config("tiny", ["model.released_affine_blocks=true"]))
    names = original_names(model)
    torch.save({names[key]: value for key, value in model.state_dict().items()}, path)
    return path


def result_file(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    uvd = np.stack([rng.uniform(200, 400, (4, 14)), rng.uniform(150, 300, (4, 14)), rng.uniform(600, 800, (4, 14))],
                   axis=-1)
    np.savetxt(path, uvd.reshape(4, -1), fmt="%.4f")
    return path


# 1. an output that is a file where a folder is needed, or a folder where a file is ------------------

def test_an_output_in_the_way_is_one_line_naming_it(pose_run, tmp_path, capsys):
    in_the_way = tmp_path / "notes.txt"
    in_the_way.write_text("my notes\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    frames = make_nyu_layout(tmp_path / "nyu", frames_train=1, frames_test=2, seed=3)      # hands to predict
    pred, gt = result_file(tmp_path / "pred.txt", 1), result_file(tmp_path / "gt.txt", 2)
    source = original_model_file(tmp_path / "model.mdl")
    checkpoint = str(pose_run / "checkpoints" / "final-main.pt")
    cases = {
        "predict --out": ["predict", str(pose_run), str(frames), "--out", str(in_the_way)],
        "score --out": ["score", str(pred), str(gt), "--out", str(in_the_way)],
        "evaluate --out": ["evaluate", str(pose_run), "--out", str(in_the_way)],
        "import-original OUT": ["import-original", str(source), str(folder), "--preset", "tiny"],
        "export --out": ["export", checkpoint, "--format", "torchscript", "--out", str(folder)],
    }
    for what, argv in cases.items():
        line = main_line(argv)
        target = folder if what in ("import-original OUT", "export --out") else in_the_way
        assert f"{what}={target}" in line, line
        if target == in_the_way:
            assert "is a text file, not a folder" in line and "give a folder" in line, line
        else:
            assert "is a folder, but a file is written there" in line, line
    assert in_the_way.read_text() == "my notes\n" and list(folder.iterdir()) == []       # nothing touched
    capsys.readouterr()

    result = train_cli(tmp_path, "train", "tiny", f"train.out={in_the_way}", launcher=True)
    line = one_line_error(result)
    assert f"train.out={in_the_way} is a text file, not a folder" in line, line
    assert in_the_way.read_text() == "my notes\n"


# 2. a read-only output ---------------------------------------------------------------------------

def test_a_read_only_output_is_one_line(pose_run, tmp_path):
    mounted = tmp_path / "mounted"
    (mounted / "checkpoints").mkdir(parents=True)
    checkpoint = mounted / "checkpoints" / "final-main.pt"
    checkpoint.write_bytes((pose_run / "checkpoints" / "final-main.pt").read_bytes())
    result = run_on(read_only(mounted), ["-m", "murauer_dist.cli", "export", str(checkpoint), "--format",
                                         "torchscript"], env=child_env(tmp_path), cwd=tmp_path)
    line = one_line_error(result)
    assert f"export --out={mounted / 'checkpoints' / 'final-main.torchscript.pt'} (the default: beside the " \
           f"checkpoint): {mounted / 'checkpoints'} is on a read-only file system" in line, line
    assert "read-only file system" in line and "writable disk" in line, line
    assert sorted(p.name for p in (mounted / "checkpoints").iterdir()) == ["final-main.pt"]


# 3. a full disk ------------------------------------------------------------------------------------

def test_a_full_disk_while_training_is_one_line_and_the_checkpoints_stay_loadable(tmp_path):
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    (tmp_path / "launch.py").write_text(LAUNCHER)
    result = run_on(small_disk(disk, "300k"), [str(tmp_path / "launch.py"), "train", "tiny",
                                               f"train.out={disk / 'run'}", "logging.wandb_mode=disabled"],
                    env=child_env(tmp_path), cwd=tmp_path, copy_out=(disk, kept))
    line = one_line_error(result)
    assert "no space left on the device" in line and str(disk / "run" / "checkpoints") in line, line
    assert "free" in line and "run the same command again" in line, line
    written = sorted((kept / "run" / "checkpoints").iterdir())
    assert written and all(not p.name.startswith(".") for p in written), written      # no temp file left
    for path in written:
        assert ckpt.load_checkpoint(path)["global_step"] >= 1                          # every one loads


def test_a_full_disk_while_making_shards_is_one_line_and_the_run_resumes(tmp_path):
    from murauer_dist.shards.cli import make_shard_set
    root = make_nyu_layout(tmp_path / "nyu", frames_train=40, frames_test=4, seed=3)
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    args = ["data.crop_size=32", "--shard-size", "8", "--workers", "1"]
    result = run_on(small_disk(disk, "500k"), ["-m", "murauer_dist.cli", "make-shards", str(root), str(disk / "out"),
                                               *args], env=child_env(tmp_path), cwd=tmp_path, copy_out=(disk, kept))
    line = one_line_error(result)
    assert "no space left on the device writing " + str(disk / "out" / "train" / "shard-") in line, line
    assert "the same command run again continues" in line, line
    out = kept / "out"
    finished = sorted((out / "train" / ".parts").glob("shard-*.json"))
    assert finished and not list((out / "train").glob(".tmp-*"))
    for sidecar in finished:                                  # every finished shard is whole
        record = json.loads(sidecar.read_text())
        assert (out / "train" / record["name"]).stat().st_size == record["bytes"]
    lines = []
    make_shard_set(str(root), str(out), shard_size=8, workers=1, overrides=["data.crop_size=32"], log=lines.append)
    assert any(f"{len(finished)} already finished" in entry for entry in lines), lines

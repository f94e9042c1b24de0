"""User mistakes end in one line naming the file and what to do: no traceback, non-zero exit."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from murauer_dist.errors import UserError
from murauer_dist.eval.score import score_command

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    env.pop("MURAUER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "murauer_dist.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("murauer-dist: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def write_result(path: Path, frames: int = 4, seed: int = 0) -> Path:
    """A small uvd result file: joints in the image, 600-800 mm away."""
    rng = np.random.default_rng(seed)
    uvd = np.stack([rng.uniform(200, 400, (frames, 14)), rng.uniform(150, 300, (frames, 14)),
                    rng.uniform(600, 800, (frames, 14))], axis=-1)
    np.savetxt(path, uvd.reshape(frames, -1), fmt="%.4f")
    return path


def test_score_refuses_a_binary_file_naming_it(tmp_path):
    gt = write_result(tmp_path / "gt_labels.txt")
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    line = assert_one_line_error(run_cli("score", str(binary), str(gt)), str(binary), "not a text result file")
    assert "line 2" in line and "0x80" in line       # bytes 0..127 hold one newline


def test_score_reads_gzip_result_files(tmp_path):
    gt = write_result(tmp_path / "gt_labels.txt")
    pred = write_result(tmp_path / "pred.txt", seed=1)
    packed = tmp_path / "pred.txt.gz"
    packed.write_bytes(gzip.compress(pred.read_bytes()))
    plain = score_command([str(pred)], ground_truth=str(gt))
    compressed = score_command([str(packed)], ground_truth=str(gt))
    assert compressed["pred"]["mean_error_mm"] == plain["pred"]["mean_error_mm"]


def test_score_refuses_the_ground_truth_given_first(tmp_path, capsys):
    gt = write_result(tmp_path / "nyu_test_groundtruth_label.txt")
    pred = write_result(tmp_path / "results_uvd.txt", seed=1)
    with pytest.raises(UserError, match="looks like the ground truth.*put it last or pass --ground-truth"):
        score_command([str(gt), str(pred)])
    score_command([str(pred), str(gt)])
    assert f"ground truth: {gt}" in capsys.readouterr().out      # the table always says which file it was


def test_evaluate_a_run_folder_without_checkpoints(tmp_path):
    (tmp_path / "run").mkdir()
    assert_one_line_error(run_cli("evaluate", str(tmp_path / "run")), str(tmp_path / "run"), "murauer-dist train")


def test_experiment_label_seeds_from_the_command_line(tmp_path):
    """--label-seeds reaches the experiment: a list that does not pair with --seeds is refused before
    anything is made."""
    result = run_cli("experiment", "--seeds", "1,2", "--label-seeds", "7", "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "--label-seeds", "--seeds")
    assert not (tmp_path / "out").exists()


def test_unknown_experiment_is_one_line(tmp_path):
    assert_one_line_error(run_cli("experiment", "ablations", "--out", str(tmp_path)), "ablations", "label-efficiency")


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run_cli("experiment", "ablations", "--out", str(tmp_path), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr

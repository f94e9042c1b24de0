"""Say what the thing is: a text file given as a checkpoint, a folder given as a sweep file, a number too large
for a float, a symbolic link that loops, and a finished run started again (the CLI entry and real files)."""
from __future__ import annotations

import os
import re

import pytest

from test_reliability_machine import main_line
from test_reliability_train import cli


@pytest.fixture
def things(tmp_path):
    (tmp_path / "notes.pt").write_text("model notes: train for 10 epochs, then evaluate\n")  # "holds Python objects" before
    (tmp_path / "sweeps").mkdir()
    os.symlink("loop", tmp_path / "loop")                       # points at itself
    return tmp_path


@pytest.mark.parametrize("argv, expected", [
    (["evaluate", "{t}/notes.pt"], "checkpoint {t}/notes.pt: not a checkpoint: it is a text file"),
    (["predict", "{t}/notes.pt", "{t}", "--out", "{t}/out"], "checkpoint {t}/notes.pt: not a checkpoint: it is a text file"),
    (["sweep", "{t}/sweeps"], "sweep file {t}/sweeps is a folder; give a sweep YAML file"),
    (["print-config", "tiny", "optim.lr=1e400"], "'optim.lr': 1e400 is too large for a number here"),
    (["print-config", "tiny", "train.epochs=1e400"], "'train.epochs': 1e400 is too large for a number here"),
    (["evaluate", "{t}/loop"], "checkpoint {t}/loop is a symbolic link that loops (-> loop"),
    (["make-shards", "{t}/loop", "{t}/shards"], "dataset root {t}/loop is a symbolic link that loops"),
])
def test_errors_say_what_the_thing_is(things, argv, expected):
    line = main_line([part.format(t=things) for part in argv])
    assert expected.format(t=things) in line, line
    assert " inf " not in line and "does not exist" not in line and "holds Python objects" not in line, line


def test_a_finished_run_started_again_reports_its_last_validation(tmp_path):
    args = ["train", "tiny", f"train.out={tmp_path / 'run'}", "logging.wandb_mode=disabled"]
    first = cli(tmp_path, *args, launcher=True)
    assert first.returncode == 0, first.stderr[-3000:]
    error = re.search(r"validation mean error (\d+\.\d+) mm", first.stdout)
    assert error, first.stdout
    again = cli(tmp_path, *args, launcher=True)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = [line for line in again.stdout.splitlines() if line.startswith("training done")]
    assert len(summary) == 1 and "nan" not in summary[0], again.stdout
    assert f"last validation mean error {error.group(1)} mm at step 6 (stage main" in summary[0], summary

"""Reliability of training: a run directory never disagrees with its config, impossible values are
refused when the config is resolved, an unreadable newest checkpoint does not block a resume, the
W&B key never reaches a file, and user errors end as one line (tiny preset, in-memory streams)."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from murauer_dist.config import CONFIG_DIR, ConfigError, load_config
from murauer_dist.config_changes import RESUMABLE_KEYS, may_change_on_resume
from murauer_dist.batches.batch import stream_sizes
from murauer_dist.errors import UserError
from murauer_dist.methods import METHODS, required_streams
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train.fake_stream import FakeEvalLoader, FakeTrainStream, fake_eval_factory
from murauer_dist.train.loop import NonFiniteValidationError, RunConfigError, train

REPO = Path(__file__).resolve().parent.parent
FAKE_KEY = "f0e1d2c3b4a5968778695a4b3c2d1e0f12345678"   # the shape of a real W&B key

# `murauer-dist` in a child process with the in-memory streams (no shards needed); TEST_NAN_DEPTH
# makes every training crop NaN, TEST_ENOSPC makes every checkpoint write fail with a full disk.
LAUNCHER = textwrap.dedent('''
    import errno, os
    import torch
    from murauer_dist.train import loop
    from murauer_dist.train.fake_stream import FakeTrainStream, fake_eval_factory

    class Stream(FakeTrainStream):
        def make_batch(self, epoch, position):
            batch = super().make_batch(epoch, position)
            if os.environ.get("TEST_NAN_DEPTH"):
                for stream in batch.values():
                    for key in ("depth", "real_depth", "synth_depth"):
                        if key in stream:
                            stream[key][:] = float("nan")
            return batch

    loop.default_stream_factory = lambda cfg, stage, rank, world, device: Stream(cfg, stage, rank, device)
    loop.default_eval_factory = fake_eval_factory
    if os.environ.get("TEST_ENOSPC"):
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        torch.save = full
    from murauer_dist.cli import main
    main()
''')


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine more threads make the tiny runs many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def child_env(tmp_path: Path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WANDB_", "MURAUER_"))}
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.update({"PYTHONPATH": python_path, "WANDB_MODE": "disabled",
                "NETRC": str(tmp_path / "no-netrc")})
    env.update(extra)
    return env


def cli(tmp_path: Path, *args: str, launcher: bool = False, **env) -> subprocess.CompletedProcess:
    """`murauer-dist ARGS` as a child process (cwd tmp_path); `launcher`: train on in-memory streams."""
    if launcher:
        script = tmp_path / "launch.py"
        script.write_text(LAUNCHER)
        command = [sys.executable, str(script), *args]
    else:
        command = [sys.executable, "-m", "murauer_dist.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=child_env(tmp_path, **env))


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single `murauer-dist: ...` line of a failed command (no traceback)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("murauer-dist")]
    assert len(lines) == 1 and lines[0].startswith("murauer-dist: "), result.stderr
    return lines[0]


def tiny(out: Path, *extra: str):
    """tiny preset: 1 + 1 epochs of 3 steps (6 steps), a checkpoint every 4 steps, no wandb."""
    return load_config("tiny", [f"train.out={out}", "train.checkpoint_every=4", "logging.wandb_mode=disabled",
                                *extra])


def cli_args(out: Path, *extra: str) -> list[str]:
    return ["train", "tiny", f"train.out={out}", "train.checkpoint_every=4", "logging.wandb_mode=disabled", *extra]


class StopAt(FakeTrainStream):
    """The in-memory stream, sending itself SIGTERM at (stage, epoch, position) in `StopAt.at`."""
    at: tuple = ()

    def __init__(self, cfg, stage, rank=0, device="cpu"):
        super().__init__(cfg, stage, rank, device)
        self.stage = stage

    def make_batch(self, epoch, position):
        if (self.stage, epoch, position) == self.at:
            signal.raise_signal(signal.SIGTERM)
        return super().make_batch(epoch, position)


def run(cfg, stop_at: tuple = (), eval_factory=fake_eval_factory) -> dict:
    StopAt.at = stop_at
    return train(cfg, stream_factory=lambda c, stage, rank, world, device: StopAt(c, stage, rank, device),
                 eval_factory=eval_factory)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny run (6 steps, checkpoints every step, 3 kept) with the relative train.out `run`."""
    base, here = tmp_path_factory.mktemp("finished"), Path.cwd()
    os.chdir(base)
    try:
        assert run(finished_cfg(Path("run")))["global_step"] == 6
    finally:
        os.chdir(here)
    return base / "run"


def copy_run(finished: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy at tmp_path/run, the working directory tmp_path: the same train.out (`run`) as the original."""
    shutil.copytree(finished, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    return Path("run")


def finished_cfg(out: Path, *extra: str):
    return tiny(out, "train.checkpoint_every=1", "train.keep_checkpoints=3", *extra)


# 1. a run directory and its config never disagree ---------------------------------------------------

def test_other_settings_on_a_finished_run_are_refused_and_nothing_changes(finished, tmp_path, monkeypatch):
    out = copy_run(finished, tmp_path, monkeypatch)
    before = files(out)
    result = cli(tmp_path, *cli_args(out, "train.checkpoint_every=1", "train.keep_checkpoints=3", "optim.lr=0.1",
                                     "data.n_labeled=50"), launcher=True)
    assert result.returncode != 0
    line = one_line_error(result)
    assert "optim.lr 0.00033 -> 0.1" in line and "data.n_labeled 10 -> 50" in line, line
    assert "new train.out" in line and "train.allow_config_change=true" in line
    assert files(out) == before                                   # config.yaml, checkpoints: untouched
    assert "training done" not in result.stdout


def test_the_same_command_again_resumes_and_rewrites_nothing(finished, tmp_path, monkeypatch):
    out = copy_run(finished, tmp_path, monkeypatch)
    config_before = (out / "config.yaml").read_bytes()
    assert run(finished_cfg(out))["global_step"] == 6
    assert (out / "config.yaml").read_bytes() == config_before
    assert not (out / ckpt.CHANGES_FILE).exists()


def test_stopped_run_refuses_other_settings_unless_forced_and_records_the_change(tmp_path):
    out = tmp_path / "run"
    assert run(tiny(out), stop_at=("main", 1, 1))["status"] == "stopped"
    with pytest.raises(RunConfigError, match=r"loss.lambda_c 0.2 -> 0.5.*train.allow_config_change=true"):
        run(tiny(out, "loss.lambda_c=0.5"))
    assert yaml.safe_load((out / "config.yaml").read_text())["loss"]["lambda_c"] == 0.2
    result = run(tiny(out, "loss.lambda_c=0.5", "train.allow_config_change=true"))
    assert result["status"] == "done" and result["global_step"] == 6
    (record,) = yaml.safe_load((out / ckpt.CHANGES_FILE).read_text())
    assert record["forced"] is True and record["global_step"] == 5
    assert record["changes"] == {"loss.lambda_c": {"old": 0.2, "new": 0.5}}
    assert yaml.safe_load((out / "config.yaml").read_text())["loss"]["lambda_c"] == 0.5
    assert ckpt.load_checkpoint(out / "checkpoints" / "final-main.pt")["config"]["loss"]["lambda_c"] == 0.5


def test_resumable_keys_may_change_and_are_recorded(tmp_path):
    out = tmp_path / "run"
    run(tiny(out), stop_at=("main", 1, 1))
    moved = tmp_path / "moved"
    out.rename(moved)                                             # train.out itself may change (a moved run)
    result = run(tiny(moved, "logging.name=second-try", "train.log_every=2", "loader.num_threads=1"))
    assert result["global_step"] == 6
    (record,) = yaml.safe_load((moved / ckpt.CHANGES_FILE).read_text())
    assert record["forced"] is False
    assert set(record["changes"]) == {"train.out", "logging.name", "train.log_every", "loader.num_threads"}
    assert yaml.safe_load((moved / "config.yaml").read_text())["logging"]["name"] == "second-try"
    assert all(may_change_on_resume(key) for key in record["changes"]) and "logging." in RESUMABLE_KEYS


def test_a_finished_stage_made_longer_trains_on_to_the_uninterrupted_result(tmp_path):
    short, straight = tmp_path / "short", tmp_path / "straight"
    two_epochs = ("train.pretrain_epochs=0", "train.epochs=2")
    assert run(tiny(short, *two_epochs, "train.max_steps=3"))["global_step"] == 3     # stops after epoch 1
    longer = run(tiny(short, *two_epochs))                       # max_steps 3 -> 0 (no cap): epoch 2 follows
    assert longer["status"] == "done" and longer["global_step"] == 6
    run(tiny(straight, *two_epochs))
    final = "checkpoints/final-main.pt"
    assert same_weights(ckpt.load_checkpoint(short / final), ckpt.load_checkpoint(straight / final))


def test_a_length_change_that_would_rewrite_a_finished_stage_is_refused(finished, tmp_path, monkeypatch):
    out = copy_run(finished, tmp_path, monkeypatch)
    with pytest.raises(RunConfigError, match=r"train.max_steps 0 -> 2 .*stage main has trained 3 steps"):
        run(finished_cfg(out, "train.max_steps=2"))
    with pytest.raises(RunConfigError, match=r"stage pretrain is finished after 3 steps; the new lengths would give "
                                             r"it 6"):
        run(finished_cfg(out, "train.iters_per_epoch=3", "train.pretrain_epochs=2", "train.epochs=3"))


# 2. values that make no sense are refused when the config is resolved ------------------------------

@pytest.mark.parametrize("override,message", [
    ("train.epochs=-1", r"'train.epochs': -1 is out of range \(valid: >= 1\)"),
    ("train.pretrain_epochs=-1", r"'train.pretrain_epochs': -1 .*>= 0"),
    ("data.n_labeled=0", r"'data.n_labeled': 0 .*>= 1"),
    ("optim.lr=nan", r"'optim.lr': nan .*> 0"),
    ("optim.lr=-0.001", r"'optim.lr': -0.001 .*> 0"),
    ("data.val_fraction=1.0", r"'data.val_fraction': 1.0 .*\[0, 1\)"),
    ("optim.betas=0.9,1.5", r"'optim.betas': \[0.9, 1.5\] .*every item: \[0, 1\)"),
    ("train.checkpoint_every=0", r"'train.checkpoint_every': 0 .*>= 1"),
    ("loader.eval_batch=0", r"'loader.eval_batch': 0"),
    ("train.pretrain_batch=-4", r"'train.pretrain_batch': -4"),
    ("loader.pairs=0", r"'loader.pairs': 0, but train.method=murauer needs this batch"),
    ("data.crop_size=16", r"'data.crop_size': 16 is too small for the network: it must be >= 32"),
    ("model.stage_widths=6,8", r"'model.stage_widths': \[6\] are not multiples of 4"),
])
def test_impossible_values_are_refused_with_key_value_and_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_print_config_refuses_them_in_one_line(tmp_path):
    line = one_line_error(cli(tmp_path, "print-config", "tiny", "train.epochs=-1"))
    assert "'train.epochs': -1" in line and ">= 1" in line
    line = one_line_error(cli(tmp_path, "print-config", "tiny", "train.method=real_synth", "loader.pairs=0"))
    assert "train.method=real_synth" in line


def test_a_zero_batch_is_fine_where_the_method_or_weight_does_not_use_it():
    load_config("tiny", ["train.method=synth_only", "loader.pairs=0", "loader.views=0"])
    load_config("tiny", ["loader.views=0", "loss.lambda_g=0"])
    for preset in CONFIG_DIR.glob("*.yaml"):
        load_config(preset.stem)


def test_required_streams_are_streams_their_methods_draw():
    assert required_streams("murauer") == {"pairs": "L_real", "views": "L_view", "unlabeled_real": "L_adv",
                                           "unlabeled_synth": "L_adv"}
    assert required_streams("synth_only") == {"synth": "L_synth"} and required_streams("real_only") == {"pairs": "L_real"}
    for method in METHODS:
        for stream in required_streams(method):
            assert stream_sizes(load_config("tiny", [f"train.method={method}"]), "main")[stream] > 0, (stream, method)


def test_a_crop_the_view_decoder_cannot_make_is_refused_before_training(tmp_path):
    cfg = load_config("tiny", [f"train.out={tmp_path / 'run'}", "data.crop_size=48"])   # fine for make-shards
    with pytest.raises(ConfigError, match=r"'data.crop_size': 48 cannot be trained.*power of two"):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_more_labeled_frames_than_the_pool_is_refused(tmp_path):
    from murauer_dist.shards import ensure_labeled_shards
    from murauer_dist.shards.cli import make_shard_set
    from murauer_dist.shards.manifest import ShardSetError
    from nyu_fixture import make_nyu_layout
    root = make_nyu_layout(tmp_path / "nyu", frames_train=6, frames_test=2, seed=3)
    out = tmp_path / "shards"
    make_shard_set(str(root), str(out), shard_size=2, workers=1,
                   overrides=["data.crop_size=32", "data.val_fraction=0.2"], log=lambda *a, **k: None)
    with pytest.raises(ShardSetError, match=r"data.n_labeled=6 is larger than the labeled pool: .* holds 5 train "
                                            r"frames.*choose data.n_labeled <= 5"):
        ensure_labeled_shards(out, 6, seed=1)
    assert not (out / "labeled" / "seed1-n5").exists() and not (out / "labeled" / "seed1-n6").exists()
    assert ensure_labeled_shards(out, 5, seed=1).name == "seed1-n5"     # the whole pool is fine


# 3. an unreadable newest checkpoint does not block a resume ----------------------------------------

def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_truncated_newest_checkpoint_falls_back_kept_for_inspection(finished, tmp_path, monkeypatch, capfd):
    out = copy_run(finished, tmp_path, monkeypatch)
    folder = out / "checkpoints"
    reference = ckpt.load_checkpoint(folder / "final-main.pt")
    (folder / "final-main.pt").unlink()                           # as if the run had crashed at step 6 ...
    cut_in_half(folder / "ckpt-000000006.pt")                     # ... while writing its newest checkpoint
    result = run(finished_cfg(out))
    err = capfd.readouterr().err
    assert "skipping" in err and "ckpt-000000006.pt" in err and "kept as ckpt-000000006.pt.unreadable" in err
    assert "falling back to" in err and "ckpt-000000005.pt" in err
    assert result["global_step"] == 6
    assert same_weights(ckpt.load_checkpoint(folder / "final-main.pt"), reference)
    assert (folder / "ckpt-000000006.pt.unreadable").is_file()    # kept, and rotation left it alone
    assert sorted(p.name for p in folder.glob("ckpt-*.pt")) == ["ckpt-000000004.pt", "ckpt-000000005.pt",
                                                                "ckpt-000000006.pt"]


def test_truncated_final_checkpoint_is_skipped_too(finished, tmp_path, monkeypatch, capfd):
    out = copy_run(finished, tmp_path, monkeypatch)
    folder = out / "checkpoints"
    reference = ckpt.load_checkpoint(folder / "final-main.pt")
    cut_in_half(folder / "final-main.pt")
    assert ckpt.latest_checkpoint(out) == folder / "ckpt-000000006.pt"   # read-only: nothing renamed
    assert (folder / "final-main.pt").is_file()
    assert run(finished_cfg(out))["global_step"] == 6
    assert "final-main.pt" in capfd.readouterr().err
    assert same_weights(ckpt.load_checkpoint(folder / "final-main.pt"), reference)
    assert (folder / "final-main.pt.unreadable").is_file()


def test_no_readable_checkpoint_at_all_is_an_error_not_a_fresh_start(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "ckpt-000000004.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ckpt.CheckpointError, match="no readable checkpoint"):
        run(tiny(out))


# 4. the live API key never reaches disk ---------------------------------------------------------

def test_api_key_never_reaches_a_file(tmp_path):
    out = tmp_path / "run"
    homes = {name: str(tmp_path / "wandb-home" / name.lower())
             for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")}
    result = cli(tmp_path, "train", "tiny", f"train.out={out}", "train.max_steps=2",
                 "logging.wandb_mode=offline", f"logging.group=grp-{FAKE_KEY}", f"logging.name={FAKE_KEY}-n",
                 launcher=True, WANDB_MODE="offline", WANDB_API_KEY=FAKE_KEY, WANDB_SILENT="true", **homes)
    assert result.returncode == 0, result.stderr[-3000:]
    assert any((out / "wandb").glob("offline-run-*/*.wandb"))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "launch.py"]
    assert any(p.suffix == ".pt" for p in written) and (out / "config.yaml") in written
    leaked = [str(p.relative_to(tmp_path)) for p in written if FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []
    assert FAKE_KEY not in result.stdout + result.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())["logging"]
    assert saved["group"] == "grp-<redacted>" and saved["name"] == "<redacted>-n"


# 5. user errors are one line -------------------------------------------------------------------

def test_preset_with_a_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\ntrain:\n  epochs: [1, 2\n  seed: 3\n")
    line = one_line_error(cli(tmp_path, "print-config", str(bad)))
    assert "bad.yaml" in line and "line 4" in line and "YAML syntax error" in line, line


def test_relative_base_is_read_next_to_the_preset_and_names_still_work(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    (folder / "deeper").mkdir(parents=True)
    (folder / "parent.yaml").write_text("base: tiny\ntrain:\n  seed: 7\n")
    (folder / "deeper" / "child.yaml").write_text("base: ../parent.yaml\ntrain:\n  epochs: 4\n")
    (folder / "sibling.yaml").write_text("base: parent.yaml\noptim:\n  lr: 0.01\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                                 # not the presets' folder
    child = load_config(folder / "deeper" / "child.yaml")
    assert (child.train.seed, child.train.epochs, child.data.crop_size) == (7, 4, 32)   # crop from tiny, by name
    assert load_config(str(folder / "sibling.yaml")).optim.lr == 0.01
    (folder / "orphan.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"orphan.yaml: base: missing.yaml does not exist"):
        load_config(folder / "orphan.yaml")


def test_missing_init_checkpoint_is_one_line_naming_key_and_file(tmp_path):
    out = tmp_path / "run"
    line = one_line_error(cli(tmp_path, *cli_args(out, "train.pretrain_epochs=0",
                                                  "train.init_checkpoint=nowhere/final-pretrain.pt"), launcher=True))
    assert "train.init_checkpoint=nowhere/final-pretrain.pt" in line and "does not exist" in line
    assert not (out / "metrics.jsonl").exists()


def test_init_checkpoint_that_is_no_checkpoint_or_a_refused_pickle(tmp_path):
    import argparse
    text = tmp_path / "notes.pt"
    text.write_text("just some text\n")
    with pytest.raises(ckpt.CheckpointError, match=r"train.init_checkpoint=.*notes.pt: not a checkpoint: it is a "
                                                   r"text file"):
        run(tiny(tmp_path / "a", "train.pretrain_epochs=0", f"train.init_checkpoint={text}"))
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": argparse.Namespace(weights=1)}, foreign)
    line = one_line_error(cli(tmp_path, *cli_args(tmp_path / "b", "train.pretrain_epochs=0",
                                                  f"train.init_checkpoint={foreign}"), launcher=True))
    assert "foreign.pt" in line and "argparse.Namespace" in line and "weights_only" in line, line


def test_full_disk_while_writing_a_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ckpt.CheckpointError, match=r"cannot write checkpoint .*final-pretrain.pt: no space left on "
                                                   r"the device \(.* free in .*\)"):
        run(tiny(out))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == []   # no half file, no temp file


def test_full_disk_and_non_finite_loss_end_the_cli_with_one_line(tmp_path):
    line = one_line_error(cli(tmp_path, *cli_args(tmp_path / "full"), launcher=True, TEST_ENOSPC="1"))
    assert "no space left on the device" in line and "final-pretrain.pt" in line
    result = cli(tmp_path, *cli_args(tmp_path / "nan", "train.max_nonfinite_in_a_row=1"), launcher=True,
                 TEST_NAN_DEPTH="1")
    line = one_line_error(result)
    assert "2 steps in a row had a non-finite loss" in line and "max_nonfinite_in_a_row=1" in line


class NanEval(FakeEvalLoader):
    def __iter__(self):
        for batch in super().__iter__():
            batch["depth"][:] = float("nan")
            yield batch


@pytest.mark.parametrize("stage,extra", [("pretrain", ()), ("main", ("train.pretrain_epochs=0",))])
def test_non_finite_validation_stops_either_stage_the_same_way(tmp_path, stage, extra):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteValidationError) as caught:
        run(tiny(out, *extra), eval_factory=lambda cfg, split, rank, world, device: NanEval(cfg, device=device))
    message = str(caught.value)
    assert f"of stage {stage}" in message and "non-finite mean joint error" in message
    assert f"No final checkpoint was written for stage {stage}" in message and "lower optim.lr" in message
    assert not (out / "checkpoints" / f"final-{stage}.pt").exists()
    assert isinstance(caught.value, UserError)

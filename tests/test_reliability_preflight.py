"""Checks before work, not after: what the config, the manifests and the files can tell is checked before the
first step of stage 1, with nothing written; a run folder that never trained a step takes corrected settings
(real `murauer-dist train` on tiny shards, and the loop in this process)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from murauer_dist.errors import UserError
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train.fake_stream import FakeTrainStream, fake_eval_factory
from nyu_fixture import layout_with_shards
from test_reliability_train import cli, one_line_error, run, tiny

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return layout_with_shards(tmp_path_factory.mktemp("preflight"), frames_train=20)


def train(tmp_path: Path, dataset: dict, out: Path, *extra: str, shards: Path | None = None):
    return cli(tmp_path, "train", "tiny", f"data.root={dataset['root']}", f"data.shards={shards or dataset['shards']}",
               f"train.out={out}", "loader.num_threads=1", *extra)


def test_more_labeled_frames_than_the_pool_is_refused_before_stage_1(dataset, tmp_path):
    out = tmp_path / "run"
    result = train(tmp_path, dataset, out, "data.n_labeled=50")
    line = one_line_error(result)
    assert "data.n_labeled=50 is larger than the labeled pool" in line and "holds 18 train frames" in line, line
    assert "choose data.n_labeled <= 18" in line
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))      # no stage 1, no config.yaml, no metrics
    assert not (dataset["shards"] / "labeled").exists()


def test_a_shard_that_disagrees_with_its_manifest_is_refused_before_the_first_step(dataset, tmp_path):
    import shutil
    shards = Path(shutil.copytree(dataset["shards"], tmp_path / "shards"))
    shard = shards / "val" / "shard-000000.tar"                           # read only after the first epoch
    shard.write_bytes(shard.read_bytes()[:-1024])
    out = tmp_path / "run"
    line = one_line_error(train(tmp_path, dataset, out, shards=shards))
    assert f"{shard}: {shard.stat().st_size} bytes, but its manifest records" in line, line
    assert f"make-shards --verify {shards}" in line and not out.exists()


def test_a_run_folder_that_never_trained_takes_the_corrected_settings(dataset, tmp_path):
    out = tmp_path / "run"
    missing = tmp_path / "no-shards"
    line = one_line_error(train(tmp_path, dataset, out, shards=missing))
    assert f"{missing}/train/shard-*.tar does not exist" in line, line
    fixed = train(tmp_path, dataset, out, "train.max_steps=2")           # the corrected command
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["shards"] == str(dataset["shards"])


class BrokenStream(FakeTrainStream):
    def __init__(self, cfg, stage, rank=0, device="cpu"):
        raise UserError("the loader could not start")


def test_a_run_that_stopped_before_its_first_step_records_the_new_settings(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="the loader could not start"):
        from murauer_dist.train.loop import train as train_loop
        train_loop(tiny(out), stream_factory=lambda c, stage, rank, world, device: BrokenStream(c, stage, rank, device),
                   eval_factory=fake_eval_factory)
    assert (out / "config.yaml").is_file() and not (out / "checkpoints").exists()
    assert run(tiny(out, "optim.lr=0.001"))["status"] == "done"          # another value: taken, not refused
    (record,) = yaml.safe_load((out / ckpt.CHANGES_FILE).read_text())
    assert record["global_step"] == 0 and record["changes"]["optim.lr"]["new"] == 0.001
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 0.001


def test_an_experiment_with_more_labeled_frames_than_the_pool_is_refused_before_its_stage_1(dataset, tmp_path):
    out = tmp_path / "experiment"
    result = cli(tmp_path, "experiment", "label-efficiency", f"data.root={dataset['root']}",
                 f"data.shards={dataset['shards']}", "--preset", "tiny", "--out", str(out), "--methods",
                 "synth_only,real_synth", "--ns", "10,50", "--seeds", "1")
    line = one_line_error(result)
    assert "data.n_labeled=50 is larger than the labeled pool" in line and "holds 18 train frames" in line, line
    assert not (out / "stage1").exists() and "[train]" not in result.stdout

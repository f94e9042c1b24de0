"""Nothing silently dropped or accepted: images without labels are counted and recorded, unreadable frames
are skipped and listed while the others are predicted, a NaN option, NaN weights and a refiner given as a
pose model are refused in one line (the CLI entry with real files)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from murauer_dist.frames.datasets import NYU
from murauer_dist.config import load_config
from murauer_dist.frames import nyu
from murauer_dist.models import build_model
from nyu_fixture import edit_joints, make_nyu_layout
from test_reliability_machine import main_line, original_model_file, pose_run  # noqa: F401  (pose_run: a fixture)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_nyu_layout(tmp_path_factory.mktemp("inputs") / "nyu", frames_train=10, frames_test=6, seed=3)


def test_images_without_labels_are_counted_said_and_recorded(root, tmp_path, capsys):
    from murauer_dist import cli
    copy = Path(shutil.copytree(root, tmp_path / "nyu"))

    def drop_last_three(joints):                                # labels for 7 of the 10 frames
        for key in joints:
            joints[key] = joints[key][:, :7]
    edit_joints(copy, "train", drop_last_three)
    cli.main(["make-shards", str(copy), str(tmp_path / "out"), "data.crop_size=32", "data.val_fraction=0",
              "--split", "train", "--workers", "1"])
    out = capsys.readouterr().out
    assert (f"warning: {copy / 'train'}: 3 frame(s) have depth images but no labels in {copy / 'train' / 'joint_data.mat'}"
            in out), out
    manifest = json.loads((tmp_path / "out" / "train" / "manifest.json").read_text())
    assert manifest["num_samples"] == 7
    assert manifest["frames_without_labels"] == {"count": 3, "first": 7, "last": 9, "labels_file": "train/joint_data.mat",
                                                 "labeled_frames": 7}


def test_predict_skips_and_lists_unreadable_frames_and_predicts_the_others(root, pose_run, tmp_path, capsys):
    from murauer_dist import cli
    frames = tmp_path / "frames"
    frames.mkdir()
    split = nyu.NyuSplit(root, "test", NYU)
    for index in range(len(split)):
        (frames / f"frame_{index}.png").write_bytes(nyu.encode_depth_png(split.depth(index, 1), "gray16"))
    whole = (frames / "frame_0.png").read_bytes()
    (frames / "frame_0.png").write_bytes(whole[:len(whole) // 2])                # cut short
    (frames / "frame_3.png").write_bytes(b"not an image\n")                       # not a PNG at all
    cli.main(["predict", str(pose_run), str(frames), "--out", str(tmp_path / "out"), "--overlays", "0"])
    captured = capsys.readouterr()
    assert "wrote 4 pose(s)" in captured.out, captured.out
    assert "2 of 6 frame(s) could not be read and were skipped (first: frame_0.png:" in captured.err, captured.err
    assert (tmp_path / "out" / "frames.txt").read_text().split() == ["frame_1.png", "frame_2.png", "frame_4.png",
                                                                     "frame_5.png"]
    skipped = (tmp_path / "out" / "skipped.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in skipped] == ["frame_0.png", "frame_3.png"], skipped
    assert "truncated" in skipped[0] and "not a PNG" in skipped[1], skipped


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_predict_refuses_a_cube_that_is_no_size(root, pose_run, tmp_path, value):
    line = main_line(["predict", str(pose_run), str(root), "--out", str(tmp_path / "out"), "--cube-mm", value])
    assert f"--cube-mm must be a finite number > 0 (0: the default), got {value}" in line, line
    assert not (tmp_path / "out").exists()


def test_nan_weights_are_refused_by_import_original_and_evaluate(tmp_path):
    source = original_model_file(tmp_path / "model.mdl")
    state = torch.load(source, weights_only=True)
    state["fc1.weight"][0, :3] = float("nan")
    torch.save(state, source)
    line = main_line(["import-original", str(source), str(tmp_path / "imported.pt"), "--preset", "tiny"])
    assert f"{source}: 1 weight tensor(s) hold NaN or inf: encoder.fc.weight (3 value(s))" in line, line
    assert not (tmp_path / "imported.pt").exists()

    cfg = load_config("tiny")
    weights = build_model(cfg).state_dict()
    weights["pose_head.fc_pose.bias"][0] = float("inf")
    checkpoint = tmp_path / "diverged.pt"
    torch.save({"model": weights, "config": cfg.to_dict(), "stage": "main"}, checkpoint)
    line = main_line(["evaluate", str(checkpoint), "--out", str(tmp_path / "eval")])
    assert f"checkpoint {checkpoint}: 1 weight tensor(s) hold NaN or inf: pose_head.fc_pose.bias" in line, line


def test_a_refiner_given_as_the_pose_model_is_refused(root, tmp_path):
    from murauer_dist.inference.refiner import CentreRefiner, save_refiner
    refiner = save_refiner(tmp_path / "refiner.pt", CentreRefiner(32), load_config("tiny").to_dict(), 300.0, "nyu", 0,
                           {})
    for argv in (["evaluate", str(refiner), "--out", str(tmp_path / "eval")],
                 ["predict", str(refiner), str(root), "--out", str(tmp_path / "pred")]):
        line = main_line(argv)
        assert f"checkpoint {refiner} is a centre refiner" in line and "not a pose model" in line, line
        assert "--refiner" in line

"""Evaluation and scoring: metrics (closed forms, a loop implementation), result files (real NYU
files, bad input), `score` (reproduces the published MURAUER numbers) and `evaluate`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from murauer_dist import geometry
from murauer_dist.errors import UserError
from murauer_dist.eval.evaluate import evaluate_command, predict, write_evaluation
from murauer_dist.eval.metrics import compute_metrics, joint_errors
from murauer_dist.eval.result_files import (ResultFormatError, consistent_fraction, format_result_lines,
                                            read_result_file, write_result_file)
from murauer_dist.eval.score import format_table, score_command, score_files
from murauer_dist.config import load_config
from murauer_dist.frames.nyu import NyuSplit
from murauer_dist.frames.datasets import NYU

from conftest import MURAUER_RESULT, NYU_GT, read_text

# docs/method.md §6.5, n = 72,757
PUBLISHED_PER_JOINT = [11.77, 8.19, 12.91, 7.93, 13.01, 8.24, 13.37, 9.17, 11.40, 8.99, 7.49, 7.21, 7.77, 5.06]
PUBLISHED_WITHIN = {"10": 15.5, "20": 66.1, "30": 85.5, "40": 90.7, "50": 94.7, "80": 99.0}


@pytest.fixture(scope="session")
def murauer_file(nyu_files) -> Path:
    return nyu_files / MURAUER_RESULT


@pytest.fixture(scope="session")
def gt_file(nyu_files) -> Path:
    return nyu_files / NYU_GT


@pytest.fixture(scope="session")
def murauer_scores(murauer_file, gt_file) -> dict:
    return score_files([str(murauer_file)], str(gt_file))["murauer_n72757_uvd"]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- the published numbers

def test_published_murauer_file_reproduces_the_paper(murauer_scores):
    m = murauer_scores
    assert m["frames"] == 8252 and m["format"] == "uvd"
    assert abs(m["mean_error_mm"] - 9.466) < 0.0005
    assert round(100 * m["frames_within_mm"]["20"], 1) == 66.1
    assert {k: round(100 * v, 1) for k, v in m["frames_within_mm"].items()} == PUBLISHED_WITHIN
    assert round(m["subject1_mean_error_mm"], 2) == 5.59 and round(m["subject2_mean_error_mm"], 2) == 11.09
    assert round(m["md80"], 3) == 0.740 and round(m["js80"], 3) == 0.876
    assert [round(v, 2) for v in m["per_joint_mean_mm"].values()] == PUBLISHED_PER_JOINT
    assert list(m["per_joint_mean_mm"]) == list(geometry.JOINT_LABELS)
    json.dumps(m)    # JSON-serialisable as returned


def test_xyz_and_uvd_versions_score_the_same(tmp_path, murauer_file, gt_file, murauer_scores):
    uvd = read_result_file(murauer_file, "uvd", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)
    xyz_path = write_result_file(tmp_path / "murauer_xyz.txt", uvd.xyz, "xyz", camera=NYU.camera)
    back = read_result_file(xyz_path, "auto", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)
    assert back.fmt == "xyz"                                  # detected from the values alone
    assert np.abs(back.values - uvd.xyz).max() <= 5e-5        # %.4f rounding only
    assert np.abs(back.uvd - uvd.values).max() < 1e-3
    scores = score_files([str(xyz_path)], str(gt_file), fmt="xyz")["murauer_xyz"]
    assert abs(scores["mean_error_mm"] - murauer_scores["mean_error_mm"]) < 1e-4
    for key in ("median_error_mm", "md80", "js80", "subject1_mean_error_mm", "subject2_mean_error_mm"):
        assert scores[key] == pytest.approx(murauer_scores[key], abs=1e-3)
    # the uvd writer reproduces the published file's values
    uvd_path = write_result_file(tmp_path / "murauer_uvd.txt", uvd.xyz, "uvd", camera=NYU.camera)
    assert np.abs(read_result_file(uvd_path, "uvd", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera).values - uvd.values).max() <= 1.5e-4


# ---------------------------------------------------------------- bad input

@pytest.fixture()
def murauer_lines(murauer_file) -> list[str]:
    return read_text(murauer_file).splitlines()


def test_missing_line_is_rejected_with_its_line_number(tmp_path, murauer_lines, gt_file):
    short = _write_lines(tmp_path / "short.txt", murauer_lines[:-1])
    with pytest.raises(ResultFormatError, match=r"short\.txt.*expected 8252 lines.*found 8251.*line 8252 is missing"):
        score_files([str(short)], str(gt_file))
    blank = _write_lines(tmp_path / "blank.txt", murauer_lines[:1233] + [""] + murauer_lines[1234:])
    with pytest.raises(ResultFormatError, match=r"blank\.txt: line 1234: expected 42 values .* found 0"):
        read_result_file(blank, fmt="auto", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)


def test_wrong_column_count_nan_and_text_are_rejected_with_line(tmp_path, murauer_lines):
    lines = list(murauer_lines)
    lines[56] = " ".join(lines[56].split()[:-1])
    with pytest.raises(ResultFormatError, match=r"columns\.txt: line 57: expected 42 values \(14 joints x 3\), found 41"):
        read_result_file(_write_lines(tmp_path / "columns.txt", lines), fmt="auto", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)
    lines = list(murauer_lines)
    values = lines[299].split()
    values[7] = "nan"
    lines[299] = " ".join(values)
    with pytest.raises(ResultFormatError, match=r"nan\.txt: line 300, column 8 \(joint 2\): expected a finite number"):
        read_result_file(_write_lines(tmp_path / "nan.txt", lines), fmt="auto", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)
    lines[299] = lines[299].replace("nan", "inf")
    with pytest.raises(ResultFormatError, match=r"line 300, column 8"):
        read_result_file(_write_lines(tmp_path / "inf.txt", lines), fmt="auto", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)
    lines[299] = lines[299].replace("inf", "12,5")
    with pytest.raises(ResultFormatError, match=r"line 300, column 8: expected a number, found '12,5'"):
        read_result_file(_write_lines(tmp_path / "text.txt", lines), fmt="auto", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)


def test_uvd_given_as_xyz_is_rejected(murauer_file, gt_file, tmp_path):
    with pytest.raises(ResultFormatError, match=r"declared xyz.*look like uvd"):
        score_files([str(murauer_file)], str(gt_file), fmt="xyz")
    # 200 frames whose pixels also pass as plausible mm: the ground truth settles it
    pred_lines = read_text(murauer_file).splitlines()[:200]
    gt_lines = read_text(gt_file).splitlines()[:200]
    pred, gt = _write_lines(tmp_path / "pred200.txt", pred_lines), _write_lines(tmp_path / "gt200.txt", gt_lines)
    assert consistent_fraction(read_result_file(pred, "uvd", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera).values, camera=NYU.camera)["xyz"] == 1.0
    with pytest.raises(ResultFormatError, match=r"pred200\.txt: declared xyz, but read as xyz the mean error is "
                                                r"\d{3}\.\d mm and read as uvd [0-9]\.\d mm"):
        score_files([str(pred)], str(gt), fmt="xyz")
    auto = score_files([str(pred)], str(gt), fmt="auto")["pred200"]
    assert auto["format"] == "uvd" and auto["mean_error_mm"] < 10


def test_xyz_given_as_uvd_is_rejected(murauer_file, tmp_path):
    xyz_path = write_result_file(tmp_path / "as_xyz.txt", read_result_file(murauer_file, fmt="auto", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera).xyz, "xyz", camera=NYU.camera)
    with pytest.raises(ResultFormatError, match=r"as_xyz\.txt: declared uvd.*look like xyz"):
        read_result_file(xyz_path, "uvd", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)
    with pytest.raises(ResultFormatError, match=r"format must be one of uvd, xyz, auto"):
        read_result_file(xyz_path, "mm", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera)


def test_writer_refuses_nan_and_leaves_no_temp_files(tmp_path):
    joints = np.full((2, 14, 3), 500.0)
    joints[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_result_file(tmp_path / "x.txt", joints, "xyz", camera=NYU.camera)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- metrics: closed forms and a loop version

def test_constant_error_closed_form():
    rng = np.random.default_rng(0)
    gt = rng.integers(-200, 200, size=(50, 14, 3)).astype(np.float64)
    gt[..., 2] += 800
    m = compute_metrics(gt + np.array([6.0, 8.0, 0.0]), gt, subject_split=None, joint_labels=NYU.joints.labels)    # |(6, 8, 0)| = 10 exactly
    assert m["mean_error_mm"] == 10.0 and m["median_error_mm"] == 10.0 and m["max_error_mm"] == 10.0
    curve = np.asarray(m["frame_success_curve"]["fraction"])
    assert (curve[:10] == 0).all() and (curve[10:] == 1).all() and len(curve) == 81
    assert m["md80"] == pytest.approx(70 / 80) and m["js80"] == pytest.approx(70 / 80)
    assert m["frames_within_mm"] == {"10": 1.0, "20": 1.0, "30": 1.0, "40": 1.0, "50": 1.0, "80": 1.0}
    assert m["mean_frame_std_mm"] == pytest.approx(0.0)
    assert m["subject1_mean_error_mm"] is None


def test_per_joint_and_subject_closed_form():
    gt = np.zeros((10, 14, 3))
    gt[..., 2] = 700.0
    pred = gt.copy()
    pred[:, :, 0] += np.arange(14)                       # joint j is off by j mm
    m = compute_metrics(pred, gt, subject_split=6, joint_labels=NYU.joints.labels)
    assert list(m["per_joint_mean_mm"].values()) == pytest.approx(list(range(14)))
    assert m["mean_error_mm"] == pytest.approx(6.5) and m["median_error_mm"] == pytest.approx(6.5)
    assert m["js80"] == pytest.approx((91 / 14 + 67) / 80)   # sum_t min(t+1, 14)/14 over t = 0..79
    assert m["md80"] == pytest.approx(67 / 80)                 # worst joint is 13 mm in every frame
    pred[6:, :, 1] += 30.0                                     # second subject: sqrt(j^2 + 900)
    m = compute_metrics(pred, gt, subject_split=6, joint_labels=NYU.joints.labels)
    assert m["subject1_mean_error_mm"] == pytest.approx(6.5)
    assert m["subject2_mean_error_mm"] == pytest.approx(np.mean(np.sqrt(np.arange(14) ** 2 + 900.0)))


def test_metrics_match_a_loop_implementation():
    rng = np.random.default_rng(1)
    gt = rng.normal(0, 80, size=(300, 14, 3)) + [0, 0, 800]
    pred = gt + rng.normal(0, 12, size=gt.shape)
    m = compute_metrics(pred, gt, subject_split=120, joint_labels=NYU.joints.labels)
    errors = [[float(np.sqrt(sum((pred[f, j, c] - gt[f, j, c]) ** 2 for c in range(3)))) for j in range(14)]
              for f in range(300)]
    frame_max = [max(row) for row in errors]
    success = [sum(1 for e in frame_max if e <= t) / 300 for t in range(81)]
    assert m["frame_success_curve"]["fraction"] == pytest.approx(success)
    assert m["md80"] == pytest.approx(sum(success[:80]) / 80)
    flat = [e for row in errors for e in row]
    assert m["js80"] == pytest.approx(sum(sum(1 for e in flat if e <= t) / len(flat) for t in range(80)) / 80)
    assert m["mean_error_mm"] == pytest.approx(sum(flat) / len(flat))
    assert m["subject2_mean_error_mm"] == pytest.approx(np.mean(errors[120:]))
    assert joint_errors(pred, gt).shape == (300, 14)
    with pytest.raises(ValueError, match=r"must both be \(N, J, 3\)"):
        compute_metrics(pred[:10], gt, subject_split=NYU.test_subject_split, joint_labels=NYU.joints.labels)


# ---------------------------------------------------------------- score: several files, CLI

def test_several_files_give_one_table_and_one_plot(tmp_path, murauer_file, gt_file, capsys):
    worse_xyz = read_result_file(murauer_file, fmt="auto", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera).xyz + np.random.default_rng(2).normal(0, 4, size=(8252, 14, 3))
    worse = write_result_file(tmp_path / "noisy_xyz.txt", worse_xyz, "xyz", camera=NYU.camera)
    results = score_command([str(murauer_file), str(worse), str(gt_file)], out=str(tmp_path / "cmp"))
    printed = capsys.readouterr().out
    assert printed.count("method") == 1 and "murauer_n72757_uvd" in printed and "noisy_xyz" in printed
    assert "9.466" in printed
    assert results["noisy_xyz"]["mean_error_mm"] > results["murauer_n72757_uvd"]["mean_error_mm"]
    saved = json.loads((tmp_path / "cmp" / "scores.json").read_text())
    assert set(saved["methods"]) == {"murauer_n72757_uvd", "noisy_xyz"}
    assert saved["methods"]["noisy_xyz"]["format"] == "xyz"
    with Image.open(tmp_path / "cmp" / "success_rate.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["scores.json", "success_rate.png"]


def test_cli_score_dispatch(murauer_file, gt_file, capsys):
    from murauer_dist.cli import main
    main(["score", str(murauer_file), "--ground-truth", str(gt_file), "--format", "uvd"])
    assert "9.466" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="GROUND_TRUTH"):
        main(["score", str(murauer_file)])


def test_table_lists_missing_subjects_as_dash():
    gt = np.zeros((5, 14, 3)) + [0, 0, 700]
    table = format_table({"tiny": compute_metrics(gt + [1, 0, 0], gt, subject_split=None, joint_labels=NYU.joints.labels)})
    assert table.splitlines()[2].split()[-2:] == ["-", "-"]
    assert format_result_lines(gt[:1]).startswith("0.0000 0.0000 700.0000 ")


# ---------------------------------------------------------------- evaluate

class EncodedPoseModel(torch.nn.Module):
    """Stand-in with MurauerModel's evaluation methods (embed, pose).

    Its normalised pose is read from the first 3J pixels of the depth crop, so a test controls the
    predictions exactly; the unmapped path is shifted by 0.5 (75 mm), so taking it would show.
    """

    def __init__(self, num_joints: int = 14):
        super().__init__()
        self.num_joints = num_joints
        self.gain = torch.nn.Parameter(torch.ones(()))

    def embed(self, depth, mapped, detach_z=False):
        z = depth.flatten(1)[:, :3 * self.num_joints] * self.gain
        return {"z": z, "emb": z if mapped else z + 0.5}

    def pose(self, emb):
        return {"hidden": emb, "pose": emb.view(-1, self.num_joints, 3)}


def _nyu_eval_batches(pred_uvd: np.ndarray, gt_uvd: np.ndarray, batch: int, crop: int = 8, seed: int = 0):
    """Eval batches (batches/batch.py contract) of the real NYU test set whose crops encode `pred_uvd`.

    Crops are centred on the ground-truth palm with the NYU test cube; batches come in shuffled
    frame order, as a multi-worker loader may deliver them.
    """
    gt_xyz, pred_xyz = geometry.uvd_to_xyz(gt_uvd, camera=NYU.camera), geometry.uvd_to_xyz(pred_uvd, camera=NYU.camera)
    frames = np.arange(len(gt_xyz))
    center = gt_xyz[:, geometry.CENTER_JOINT]
    cube = np.array([geometry.test_cube_mm(int(f), 300.0, 249.9, 2441) for f in frames])
    depth = np.ones((len(frames), 1, crop, crop), np.float32)
    depth.reshape(len(frames), -1)[:, :42] = geometry.normalize_joints(pred_xyz, center, cube).reshape(-1, 42)
    target = geometry.normalize_joints(gt_xyz, center, cube)
    order = np.random.default_rng(seed).permutation(frames)
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        yield {"depth": torch.from_numpy(depth[rows]), "target": torch.from_numpy(target[rows]).float(),
               "center_xyz": torch.from_numpy(center[rows]).float(), "cube_mm": torch.from_numpy(cube[rows]).float(),
               "frame": torch.from_numpy(rows)}


@pytest.fixture(scope="session")
def murauer_uvd(murauer_file) -> np.ndarray:
    return read_result_file(murauer_file, "uvd", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera).values


def test_predict_runs_the_mapped_path_and_restores_frame_order(murauer_uvd, nyu_gt_uvd):
    model = EncodedPoseModel().train()
    result = predict(model, _nyu_eval_batches(murauer_uvd, nyu_gt_uvd, batch=500), mapped=True)
    assert model.training                                            # mode restored
    assert (result["frames"] == np.arange(8252)).all()
    gt_xyz, pred_xyz = geometry.uvd_to_xyz(nyu_gt_uvd, camera=NYU.camera), geometry.uvd_to_xyz(murauer_uvd, camera=NYU.camera)
    center = gt_xyz[:, 13:14]
    half = np.where(np.arange(8252) >= 2441, 249.9, 300.0)[:, None, None] / 2
    inside = (np.abs(pred_xyz - center) < half * 0.999).all(axis=-1)  # joints the normalisation did not clip
    assert inside.mean() > 0.99
    assert np.abs(result["pred_xyz"] - pred_xyz)[inside].max() < 1e-3
    gt_inside = (np.abs(gt_xyz - center) < half * 0.999).all(axis=-1)
    assert np.abs(result["gt_xyz"] - gt_xyz)[gt_inside].max() < 1e-3
    assert result["examples"]["depth"].shape == (34, 8, 8)          # the first and middle crop of 17 batches
    kept = result["examples"]["frame"]
    assert len(set(kept.tolist())) == 34
    expected_depth = geometry.normalize_joints(pred_xyz[kept], center[kept, 0], half[kept, 0, 0] * 2).reshape(34, 42)
    assert np.abs(result["examples"]["depth"].reshape(34, 64)[:, :42] - expected_depth).max() < 1e-6
    unmapped = predict(model, _nyu_eval_batches(murauer_uvd[:100], nyu_gt_uvd[:100], batch=50), mapped=False)
    assert np.abs(unmapped["pred_xyz"] - result["pred_xyz"][:100]).mean() > 50


@pytest.mark.gpu
def test_predict_on_gpu_matches_cpu(murauer_uvd, nyu_gt_uvd):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    batches = list(_nyu_eval_batches(murauer_uvd[:500], nyu_gt_uvd[:500], batch=64))
    on_cpu = predict(EncodedPoseModel(), batches, mapped=True)
    on_gpu = predict(EncodedPoseModel().cuda(), batches, mapped=True)
    assert np.abs(on_gpu["pred_xyz"] - on_cpu["pred_xyz"]).max() < 1e-3


def test_predict_refuses_a_frame_seen_twice(murauer_uvd, nyu_gt_uvd):
    batches = list(_nyu_eval_batches(murauer_uvd[:20], nyu_gt_uvd[:20], batch=10))
    with pytest.raises(ValueError, match=r"test frame \d+ more than once"):
        predict(EncodedPoseModel(), batches + batches[:1], mapped=True)


def test_evaluate_writes_files_and_plots_that_score_back(tmp_path, murauer_uvd, nyu_gt_uvd, gt_file, capsys):
    result = predict(EncodedPoseModel(), _nyu_eval_batches(murauer_uvd, nyu_gt_uvd, batch=256), mapped=True)
    out = tmp_path / "eval"
    metrics = write_evaluation(out, result["pred_xyz"], result["gt_xyz"], result["examples"], frames=result["frames"],
                               subject_split=2440, name="stand-in", info={"checkpoint": "none"}, spec=NYU)
    assert "stand-in" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "frames.txt", "groundtruth_uvd.txt", "metrics.json", "per_joint_error.png", "qualitative.png",
        "results_uvd.txt", "results_xyz.txt", "success_rate.png"]
    for png in ("per_joint_error.png", "qualitative.png", "success_rate.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and min(image.size) > 200
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mean_error_mm"] == pytest.approx(metrics["mean_error_mm"]) and saved["checkpoint"] == "none"
    # the written files score (through `score`) to what metrics.json says
    rescored = score_files([str(out / "results_uvd.txt"), str(out / "results_xyz.txt")], str(out / "groundtruth_uvd.txt"))
    for name in ("results_uvd", "results_xyz"):
        assert rescored[name]["mean_error_mm"] == pytest.approx(saved["mean_error_mm"], abs=1e-3)
        assert rescored[name]["md80"] == pytest.approx(saved["md80"], abs=1e-3)
    assert rescored["results_uvd"]["subject1_mean_error_mm"] == pytest.approx(saved["subject1_mean_error_mm"], abs=1e-3)
    # and against the community ground truth they are the published MURAUER predictions again
    # (up to joints more than half a cube from the palm, which the normalised targets clip)
    official = score_files([str(out / "results_uvd.txt")], str(gt_file))["results_uvd"]
    assert official["mean_error_mm"] == pytest.approx(9.466, abs=0.001)
    assert (np.loadtxt(out / "frames.txt") == np.arange(8252)).all()


def test_evaluate_skipped_frames_keep_the_subject_split(tmp_path):
    gt = np.zeros((6, 14, 3)) + [0, 0, 700]
    pred = gt + [3, 4, 0]
    pred[3:] += [0, 0, 10]                                     # frames 30.. (rows 3..) are 5 -> sqrt(125)
    metrics = write_evaluation(tmp_path, pred, gt, frames=[0, 10, 20, 30, 40, 50], subject_split=25, spec=NYU)
    assert metrics["subject1_mean_error_mm"] == pytest.approx(5.0)
    assert metrics["subject2_mean_error_mm"] == pytest.approx(np.sqrt(125))
    assert not (tmp_path / "qualitative.png").exists()        # no depth examples given
    with pytest.raises(ValueError, match="strictly increasing"):
        write_evaluation(tmp_path, pred, gt, frames=[0, 10, 10, 30, 40, 50], spec=NYU)


def _cli(*args: str) -> None:
    """`murauer-dist ARGS` in a child process (train ends its process with os._exit)."""
    done = subprocess.run([sys.executable, "-m", "murauer_dist.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "disabled"}, timeout=600)
    assert done.returncode == 0, f"murauer-dist {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_evaluate_command_on_a_trained_checkpoint(tmp_path, capsys):
    """Integration: a tiny trained run through the real checkpoint reader and eval loader."""
    pytest.importorskip("murauer_dist.train.checkpoint")
    pytest.importorskip("murauer_dist.batches.loaders")
    pytest.importorskip("murauer_dist.frames.procedural.generate")
    data, shards, run = tmp_path / "data", tmp_path / "shards", tmp_path / "run"
    _cli("synth-data", str(data), "--frames-train", "48", "--frames-test", "24", "--workers", "1")
    _cli("make-shards", str(data), str(shards), "--workers", "1", "--preset", "tiny")
    _cli("train", "tiny", f"data.root={data}", f"data.shards={shards}", f"train.out={run}")
    out = tmp_path / "eval"
    metrics = evaluate_command(str(run), str(shards / "test"), out=str(out), batch=8)
    for name in ("results_xyz.txt", "results_uvd.txt", "groundtruth_uvd.txt", "metrics.json",
                 "success_rate.png", "per_joint_error.png", "qualitative.png"):
        assert (out / name).is_file(), name
    assert metrics["frames"] == len((out / "results_uvd.txt").read_text().splitlines()) > 0
    saved = json.loads((out / "metrics.json").read_text())
    rescored = score_files([str(out / "results_uvd.txt")], str(out / "groundtruth_uvd.txt"))["results_uvd"]
    assert rescored["mean_error_mm"] == pytest.approx(saved["mean_error_mm"], abs=1e-3)
    assert "wrote results_xyz.txt" in capsys.readouterr().out
    # The synthetic twins of the same frames, through the unmapped path, into RUN/eval-synth.
    twins = evaluate_command(str(run), str(shards / "test"), batch=8, domain="synth")
    saved_twins = json.loads((run / "eval-synth" / "metrics.json").read_text())
    assert saved_twins["domain"] == "synth" and saved_twins["mapped"] is False and saved["domain"] == "real"
    assert twins["frames"] == metrics["frames"] and twins["mean_error_mm"] != pytest.approx(metrics["mean_error_mm"])
    with pytest.raises(UserError, match="--domain must be one of"):
        evaluate_command(str(run), domain="sim")
    # The labeled training frames (RUN/eval-labeled): the run's labeled subset, with its train-split labels.
    cfg = load_config("tiny", [f"data.root={data}", f"data.shards={shards}"])
    fitting = evaluate_command(str(run), split="labeled")
    saved = json.loads((run / "eval-labeled" / "metrics.json").read_text())
    assert saved["split"] == "labeled" and saved["n_labeled"] == cfg.data.n_labeled == fitting["frames"]
    frames = np.loadtxt(run / "eval-labeled" / "frames.txt", dtype=np.int64)
    labels = NyuSplit(data, "train", NYU).all_labels(1)
    assert set(frames) <= set(range(48)) and saved["subject_split"] is None
    gt = read_result_file(run / "eval-labeled" / "groundtruth_uvd.txt", "uvd", expected_rows=None, num_joints=NYU.joints.count, camera=NYU.camera).uvd
    assert np.allclose(gt, labels.uvd[frames][:, list(NYU.joints.evaluated)], atol=0.05)
    val = evaluate_command(str(run), split="val")
    assert (run / "eval-val" / "metrics.json").is_file() and val["frames"] > 0
    with pytest.raises(UserError, match="--split must be one of test, val, labeled"):
        evaluate_command(str(run), split="train")

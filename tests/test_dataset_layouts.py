"""A third dataset layout, end to end through the user commands: a folder of 16-bit depth PNGs (one per
frame, one camera) with one labels text file per split ("png-uvd" reader), no synthetic twins, no .mat,
its camera and joints in a spec YAML file written here. make-shards, train (real_only), evaluate and
score run as subprocesses, the way users run them."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from murauer_dist import geometry
from murauer_dist.frames.datasets import NYU, QVGA, load_spec_file

REPO = Path(__file__).resolve().parent.parent
FRAMES = {"train": 24, "test": 8}
SHIFT = (16, 8)                                     # the new images are a 288x224 window of qvga's 320x240
WIDTH, HEIGHT = 288, 224
KEPT = (0, 3, 6, 9, 12, 15, 13, 10, 7, 4, 1)        # 11 of qvga's 16 joints (centre, tips, roots), in file order
SPEC = f"""# written by tests/test_dataset_layouts.py
name: pngcam
description: one camera, 16-bit depth PNGs and a labels text file per split
reader: png-uvd
depth_encoding: gray16
num_cameras: 1
synthetic: false
camera: {{fx: {QVGA.camera.fx}, fy: {QVGA.camera.fy}, ux: {QVGA.camera.ux - SHIFT[0]}, uy: {QVGA.camera.uy - SHIFT[1]},
          width: {WIDTH}, height: {HEIGHT}, y_up: false}}
joints:
  source_count: 11
  evaluated: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  center: 0
  labels: [C, T2, I2, M2, R2, P2, P0, R0, M0, I0, T0]
  bones: [[1, 10], [10, 0], [2, 9], [9, 0], [3, 8], [8, 0], [4, 7], [7, 0], [5, 6], [6, 0]]
test_subject_split: 3
"""


def png_layout(source: Path, root: Path) -> None:
    """Rewrite camera 1 of a qvga procedural dataset into the png-uvd layout (window shifted by SHIFT)."""
    from murauer_dist.frames.nyu import encode_depth_png
    from murauer_dist.frames.readers import open_split
    for split in ("train", "test"):
        reader = open_split(source, split, QVGA)
        folder = root / split
        folder.mkdir(parents=True)
        lines = []
        for index in range(len(reader)):
            depth = reader.depth(index, 1)[SHIFT[1]:SHIFT[1] + HEIGHT, SHIFT[0]:SHIFT[0] + WIDTH]
            name = f"{index:05d}.png"
            (folder / name).write_bytes(encode_depth_png(depth, "gray16"))
            uvd = reader.labels(index, 1).eval_uvd[list(KEPT)] - np.array([SHIFT[0], SHIFT[1], 0.0])
            lines.append(" ".join([name, *(f"{value:.4f}" for value in uvd.ravel())]))
        (folder / "labels.txt").write_text("\n".join(lines) + "\n")


def user(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """`python -m murauer_dist.cli ARGS` as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "murauer_dist.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    from murauer_dist.frames.procedural.generate import synth_data
    base = tmp_path_factory.mktemp("layouts")
    synth_data(base / "qvga", frames_train=FRAMES["train"], frames_test=FRAMES["test"], seed=5, workers=1,
               progress=False, dataset="qvga")
    png_layout(base / "qvga", base / "pngdata")
    (base / "pngcam.yaml").write_text(SPEC)
    return {"base": base, "root": base / "pngdata", "spec": base / "pngcam.yaml"}


def test_png_folder_trains_evaluates_and_scores(dataset):
    base, spec_file = dataset["base"], str(dataset["spec"])
    spec = load_spec_file(spec_file)
    assert spec.camera not in (NYU.camera, QVGA.camera) and spec.joints.count == 11 and not spec.synthetic
    shards = base / "shards"
    user("make-shards", str(dataset["root"]), str(shards), "--preset", "tiny", f"data.dataset={spec_file}", cwd=base)
    for split in ("train", "val", "test"):
        manifest = json.loads((shards / split / "manifest.json").read_text())
        assert manifest["settings"]["dataset"] == "pngcam" and manifest["dataset_spec"]["camera"]["ux"] == 144.0
    assert json.loads((shards / "test" / "manifest.json").read_text())["source"]["test_subject_split"] == 3
    members = {name.split(".", 1)[1] for tar in (shards / "train").glob("shard-*.tar")
               for name in tarfile.open(tar).getnames()}
    assert members == {"real1.png", "joints.f32", "crop.f32", "meta.json"}          # real crops only, one camera
    user("make-shards", "--verify", str(shards), cwd=base)

    common = ["tiny", f"data.dataset={spec_file}", f"data.shards={shards}", "train.pretrain_epochs=0"]
    refused = user("train", *common, "train.method=murauer", f"train.out={base / 'no-run'}", cwd=base, ok=False)
    assert refused.returncode != 0 and "train.method': murauer needs synthetic data" in refused.stderr
    assert "data.dataset=pngcam has none" in refused.stderr
    run = base / "run"
    user("train", *common, "train.method=real_only", f"train.out={run}", cwd=base)
    assert "pngcam.yaml" in (run / "config.yaml").read_text()                       # the run names its dataset

    out = base / "eval"
    user("evaluate", str(run), str(shards / "test"), "--out", str(out), cwd=base)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "pngcam" and metrics["joints"] == 11 and np.isfinite(metrics["mean_error_mm"])
    assert metrics["subject_split"] == 3 and list(metrics["per_joint_mean_mm"]) == list(spec.joints.labels)
    uvd = np.loadtxt(out / "results_uvd.txt").reshape(-1, 11, 3)
    xyz = np.loadtxt(out / "results_xyz.txt").reshape(-1, 11, 3)
    np.testing.assert_allclose(geometry.uvd_to_xyz(uvd, spec.camera), xyz, atol=0.05)   # the new spec's camera
    assert np.abs(geometry.uvd_to_xyz(uvd, QVGA.camera) - xyz).max() > 5            # not qvga's, not NYU's
    assert np.abs(geometry.uvd_to_xyz(uvd, NYU.camera) - xyz).max() > 5

    scored = user("score", str(out / "results_uvd.txt"), str(out / "groundtruth_uvd.txt"), "--dataset", spec_file,
                  "--out", str(base / "scores"), cwd=base)
    assert "results_uvd" in scored.stdout
    record = json.loads((base / "scores" / "scores.json").read_text())["methods"]["results_uvd"]
    assert record["dataset"] == "pngcam" and record["joints"] == 11
    assert record["mean_error_mm"] == pytest.approx(metrics["mean_error_mm"], abs=1e-3)
    assert record["subject1_mean_error_mm"] == pytest.approx(metrics["subject1_mean_error_mm"], abs=1e-3)


def test_png_folder_errors_name_the_file_and_line(dataset, tmp_path):
    from murauer_dist.errors import UserError
    from murauer_dist.frames.readers import open_split
    spec = load_spec_file(dataset["spec"])
    broken = tmp_path / "broken"
    (broken / "train").mkdir(parents=True)
    text = (dataset["root"] / "train" / "labels.txt").read_text().splitlines()
    (broken / "train" / "labels.txt").write_text("\n".join([text[0], text[1].rsplit(" ", 1)[0]]) + "\n")
    with pytest.raises(UserError, match=r"labels.txt, line 2: 33 fields, expected a file name and 11 x \(u v d\)"):
        len(open_split(broken, "train", spec))
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text(SPEC.replace("num_cameras: 1", "num_cameras: one"))
    with pytest.raises(UserError, match=r"bad.yaml, line 6: key 'num_cameras': expected an integer, got 'one'"):
        load_spec_file(bad_spec)
    bad_spec.write_text(SPEC.replace("  center: 0", "  centre: 0"))
    with pytest.raises(UserError, match=r"key 'joints.centre' is not a dataset spec key; valid keys here: "
                                        r"joints.source_count"):
        load_spec_file(bad_spec)

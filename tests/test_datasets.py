"""Datasets are data: the NYU entry, camera conventions, and a second dataset ("qvga": 320x240, other
intrinsics, y down, 16-bit grayscale PNGs, 16 joints with the centre first) end to end through
synth-data, make-shards, the loaders, training (tiny preset), evaluate and score."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from murauer_dist import geometry
from murauer_dist.config import ConfigError, load_config
from murauer_dist.frames.datasets import DATASETS, NYU, QVGA, DatasetError, dataset_spec, recorded_dataset
from murauer_dist.errors import UserError

FRAMES = {"train": 24, "test": 8}
QVGA_OVERRIDES = ["data.dataset=qvga", "model.num_joints=16"]


def test_nyu_entry_is_nyus_constants():
    camera, joints = NYU.camera, NYU.joints
    assert (camera.fx, camera.fy, camera.ux, camera.uy, camera.width, camera.height, camera.y_up) == \
        (588.03, 587.07, 320.0, 240.0, 640, 480, True)
    assert joints.evaluated == (0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32) and joints.source_count == 36
    assert joints.center_source == 32 and joints.labels[joints.center] == "C"
    assert NYU.depth_encoding == "nyu-rgb" and NYU.test_subject_split == 2440 and NYU.num_cameras == 3
    assert dataset_spec() is dataset_spec("nyu") is NYU and recorded_dataset({}) == "nyu"
    # geometry's old names are NYU's
    assert (geometry.FX, geometry.FY, geometry.UX, geometry.UY) == (588.03, 587.07, 320.0, 240.0)
    assert geometry.EVAL_JOINTS == joints.evaluated and geometry.CENTER_JOINT == 13
    with pytest.raises(DatasetError, match="unknown dataset 'icvl'; known datasets: nyu, qvga"):
        dataset_spec("icvl")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_uvd_xyz_round_trip_and_y_direction(name):
    camera = DATASETS[name].camera
    xyz = np.array([[30.0, 50.0, 700.0], [-80.0, -20.0, 900.0]])
    uvd = geometry.xyz_to_uvd(xyz, camera)
    np.testing.assert_allclose(geometry.uvd_to_xyz(uvd, camera), xyz, atol=1e-9)
    above = uvd[0, 1] < camera.uy                      # a point with y > 0 is above the centre iff y is up
    assert above == camera.y_up
    np.testing.assert_allclose(uvd[0, :2], [camera.ux + camera.fx * 30 / 700,
                                            camera.uy - camera.fy_signed * 50 / 700])


def test_config_ties_joints_and_dataset():
    assert load_config("tiny", QVGA_OVERRIDES).data.dataset == "qvga"
    assert load_config("tiny", ["data.dataset=qvga"]).model.num_joints == 16      # follows the dataset unless set
    with pytest.raises(ConfigError, match="model.num_joints.*qvga has 16 joints"):
        load_config("tiny", ["data.dataset=qvga", "model.num_joints=14"])
    with pytest.raises(ConfigError, match="'data.dataset': unknown dataset 'icvl'; known datasets: nyu, qvga"):
        load_config("tiny", ["data.dataset=icvl"])


def test_built_in_specs_are_the_yaml_files_and_nyus_rules_are_in_its_spec():
    from murauer_dist.frames.datasets import SPEC_DIR, load_spec_file
    assert load_spec_file(SPEC_DIR / "nyu.yaml") == NYU and load_spec_file(SPEC_DIR / "qvga.yaml") == QVGA
    # the numbers DataConfig held before (second_actor_from=2441, cube 249.9, the nyu preset's 29116)
    assert (NYU.second_actor_from, NYU.second_actor_cube_mm, NYU.swap_side_cameras_before) == (2441, 249.9, 29116)
    assert NYU.test_subject_split == 2440 == NYU.second_actor_from - 1       # the original code's cube is one frame late
    assert (QVGA.second_actor_from, QVGA.swap_side_cameras_before, QVGA.test_subject_split) == (-1, 0, None)


@pytest.fixture(scope="module")
def qvga(tmp_path_factory):
    """A qvga dataset, its shards and a tiny run trained on them."""
    from murauer_dist.frames.procedural.generate import synth_data
    from murauer_dist.shards.cli import make_shard_set
    base = tmp_path_factory.mktemp("qvga")
    root, shards = base / "data", base / "shards"
    synth_data(root, frames_train=FRAMES["train"], frames_test=FRAMES["test"], seed=3, workers=1, progress=False,
               dataset="qvga")
    make_shard_set(str(root), str(shards), workers=1, preset="tiny", overrides=QVGA_OVERRIDES, log=lambda _: None)
    overrides = [f"data.root={root}", f"data.shards={shards}", *QVGA_OVERRIDES, "loader.backend=dali",
                 "loader.device=cpu"]
    return {"root": root, "shards": shards, "base": base, "overrides": overrides}


def test_qvga_files_have_its_sensor(qvga):
    from murauer_dist.frames.readers import open_split
    split = open_split(qvga["root"], "train", QVGA)
    with open(split.depth_path(0, 1, "real"), "rb") as handle:
        width, height, bits, colour = struct.unpack(">IIBB", handle.read(26)[16:26])
    assert (width, height, bits, colour) == (320, 240, 16, 0)        # 16-bit grayscale
    depth = split.depth(0, 1, "real")
    labels = split.labels(0, 1)
    assert depth.shape == (240, 320) and labels.eval_uvd.shape == (16, 3)
    u, v, d = labels.center_uvd
    assert abs(int(depth[int(v), int(u)]) - d) < 60                  # the palm centre lies on the hand
    np.testing.assert_allclose(geometry.uvd_to_xyz(labels.uvd, QVGA.camera), labels.xyz, atol=1e-6)
    record = json.loads((qvga["root"] / "procedural.json").read_text())
    assert record["dataset"] == "qvga" and record["camera"]["fx"] == 241.42
    # the NYU reader settings refuse the folder with one clear message instead of skipping every frame
    from murauer_dist.shards.cli import make_shard_set
    with pytest.raises(UserError, match=r"320x240 16-bit grayscale PNG, but dataset 'nyu' has 640x480"):
        make_shard_set(str(qvga["root"]), str(qvga["base"] / "nyu-shards"), workers=1, preset="tiny",
                       log=lambda _: None)


def test_qvga_shards_record_the_dataset(qvga):
    from murauer_dist.shards import decode_sample, read_manifest, shard_paths
    from murauer_dist.shards.verify import verify_shard_set
    import webdataset as wds
    for split in ("train", "val", "test"):
        manifest = read_manifest(qvga["shards"] / split)
        assert manifest["settings"]["dataset"] == "qvga" and manifest["config"]["data"]["dataset"] == "qvga"
        assert manifest["num_samples"] > 0
    from murauer_dist.shards.schema import SampleLayout
    layout = SampleLayout(num_cameras=3, num_joints=16)
    sample = decode_sample(next(iter(wds.WebDataset([str(shard_paths(qvga["shards"], "test")[0])],
                                                    shardshuffle=False, empty_check=False))), layout)
    assert sample["joints"].shape == (3, 2, 16, 3)
    uvd, xyz = sample["joints"][:, 0].astype(np.float64), sample["joints"][:, 1].astype(np.float64)
    np.testing.assert_allclose(geometry.uvd_to_xyz(uvd, QVGA.camera), xyz, atol=0.05)
    assert np.abs(geometry.uvd_to_xyz(uvd, camera=NYU.camera) - xyz).max() > 50                  # NYU's camera would be wrong
    np.testing.assert_allclose(sample["crop"][:, :3], uvd[:, QVGA.joints.center], atol=1e-3)  # centre first
    assert verify_shard_set(str(qvga["shards"]), log=lambda _: None)["test"] == read_manifest(
        qvga["shards"] / "test")["num_samples"]


def test_loaders_refuse_shards_of_another_dataset(qvga):
    from murauer_dist.batches.eval_loader import build_eval_loader
    cfg = load_config("tiny", [f"data.shards={qvga['shards']}"])
    with pytest.raises(UserError, match=r"shards of dataset 'qvga', but the config says data.dataset=nyu; "
                                        r"set data.dataset=qvga model.num_joints=16"):
        build_eval_loader(cfg, "test")


def _hits(batch: dict, key: str, crop_size: int, flip: bool = False) -> tuple[float, float]:
    """Fraction of the unclipped joints (from the targets) whose network-crop pixel is hand, and the
    median |pixel depth - joint depth| there (normalised units); `flip` mirrors the joints first."""
    from murauer_dist.batches import augment
    target, center, cube = batch["target"].double(), batch["center_xyz"].double(), batch["cube_mm"].double()
    if flip:
        target = target * torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)
    xyz = target * (cube[:, None, None] / 2) + center[:, None, :]
    scale = crop_size * center[:, 2] / (cube * QVGA.camera.fx)
    px = augment.network_pixels(xyz, center, scale, crop_size, QVGA.camera).floor().long()
    ok = (target.abs() < 0.99).all(-1) & (px >= 0).all(-1) & (px < crop_size).all(-1)
    b, j = torch.nonzero(ok, as_tuple=True)
    values = batch[key][b, 0, px[b, j, 1], px[b, j, 0]].double()
    on_hand = values < 1.0
    return on_hand.double().mean().item(), (values[on_hand] - target[b, j, 2][on_hand]).abs().median().item()


def _first_batches(cfg, steps: int) -> list[dict]:
    from murauer_dist.batches.loaders import build_train_stream
    stream = build_train_stream(cfg, "main", 0, 1, "cpu")
    try:
        return [next(stream) for _ in range(steps)]
    finally:
        stream.close()


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_loaders_use_the_datasets_camera(qvga, backend):
    """Un-augmented crops are the stored crops' exact central slices (the warp projects the crop centre
    with qvga's camera); rotated, jittered crops keep their joint targets on the hand (y down)."""
    import webdataset as wds
    from murauer_dist.batches.augment import CUBE, Z_C
    from murauer_dist.shards import decode_sample, shard_paths
    from murauer_dist.shards.schema import SampleLayout
    overrides = [*qvga["overrides"], f"loader.backend={backend}", "loader.num_threads=1"]
    cfg = load_config("tiny", [*overrides, "augment.enabled=false"])
    layout = SampleLayout(num_cameras=3, num_joints=16)
    stored = {int(s["meta"]["frame"]): s for s in (decode_sample(raw, layout) for raw in wds.WebDataset(
        [str(p) for p in shard_paths(qvga["shards"], "train")], shardshuffle=False, empty_check=False))}
    pairs = _first_batches(cfg, 1)[0]["pairs"]
    for row, frame in enumerate(pairs["frame"].tolist()):
        sample = stored[frame]
        crop = geometry.center_crop(sample["synth1"], cfg.data.crop_size)
        expected = geometry.normalize_depth(crop, sample["crop"][0, Z_C], sample["crop"][0, CUBE])
        np.testing.assert_allclose(pairs["synth_depth"][row, 0].numpy(), expected, atol=1e-6)
    batches = _first_batches(load_config("tiny", overrides), 2)
    synthetic = [("pairs", "synth_depth"), ("synth", "depth")]
    for name, key in synthetic + [("pairs", "real_depth")]:
        merged = {k: torch.cat([b[name][k] for b in batches]) for k in ("target", "center_xyz", "cube_mm", key)}
        assert merged["target"].shape[1] == 16
        hit, error = _hits(merged, key, cfg.data.crop_size)
        flipped, _ = _hits(merged, key, cfg.data.crop_size, flip=True)
        if (name, key) in synthetic:                     # clean renders: the joints sit on the hand
            assert hit > 0.85 and error < 0.12 and flipped < hit - 0.1, (backend, name, key, hit, error, flipped)
        else:                                            # the sensor drops pixels along edges
            assert hit > 0.7, (backend, name, key, hit)


def test_qvga_trains_evaluates_and_scores(qvga, tmp_path, capsys):
    from murauer_dist.eval.evaluate import evaluate_command
    from murauer_dist.eval.result_files import ResultFormatError, read_result_file
    from murauer_dist.eval.score import score_command, score_files
    from murauer_dist.inference.checkpoints import load_pose
    from murauer_dist.train.loop import train
    run = tmp_path / "run"
    summary = train(load_config("tiny", [*qvga["overrides"], f"train.out={run}", "train.iters_per_epoch=2"]))
    assert summary["status"] == "done"
    assert load_pose(run).config.data.dataset == "qvga"                        # the checkpoint's config
    out = tmp_path / "eval"
    metrics = evaluate_command(str(run), str(qvga["shards"] / "test"), out=str(out), batch=8)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["dataset"] == "qvga" and metrics["joints"] == 16
    # the procedural test split is NYU-like in every layout: its first 30 % by the training actor
    assert metrics["subject_split"] == round(0.3 * metrics["frames"]) and metrics["subject2_mean_error_mm"] > 0
    assert list(metrics["per_joint_mean_mm"]) == list(QVGA.joints.labels)
    lines = (out / "results_uvd.txt").read_text().splitlines()
    assert len(lines) == metrics["frames"] > 0 and all(len(line.split()) == 48 for line in lines)
    uvd = read_result_file(out / "results_uvd.txt", "uvd", num_joints=16, camera=QVGA.camera, expected_rows=None)
    xyz = read_result_file(out / "results_xyz.txt", "xyz", num_joints=16, camera=QVGA.camera, expected_rows=None)
    np.testing.assert_allclose(uvd.xyz, xyz.values, atol=0.05)               # uvd round-trips with qvga's camera
    np.testing.assert_allclose(xyz.uvd, uvd.values, atol=1e-3)
    assert (uvd.values[..., 0].max() <= 320 + 64) and (uvd.values[..., 1].max() <= 240 + 64)
    scored = score_files([str(out / "results_uvd.txt"), str(out / "results_xyz.txt")], str(out / "groundtruth_uvd.txt"),
                         dataset="qvga")
    for result in scored.values():
        assert result["mean_error_mm"] == pytest.approx(saved["mean_error_mm"], abs=1e-3)
        assert result["dataset"] == "qvga" and result["joints"] == 16
    score_command([str(out / "results_uvd.txt"), str(out / "groundtruth_uvd.txt")], dataset="qvga")
    assert "results_uvd" in capsys.readouterr().out
    with pytest.raises(ResultFormatError, match=r"of dataset 'qvga', but they are scored as dataset 'nyu'"):
        score_files([str(out / "results_uvd.txt")], str(out / "groundtruth_uvd.txt"))
    copy = tmp_path / "copy"                                # without metrics.json: the joint count tells
    copy.mkdir()
    for name in ("results_uvd.txt", "groundtruth_uvd.txt"):
        (copy / name).write_bytes((out / name).read_bytes())
    with pytest.raises(ResultFormatError, match=r"48 values are the 16 joints of dataset 'qvga' \(pass --dataset"):
        score_files([str(copy / "results_uvd.txt")], str(copy / "groundtruth_uvd.txt"))

"""Shard creation: fields read back with plain webdataset equal what the NYU reader and geometry give."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import webdataset as wds

from murauer_dist.frames.datasets import NYU
from murauer_dist.errors import UserError
from murauer_dist import geometry as geo
from murauer_dist.frames import nyu
from murauer_dist.shards import (decode_sample, ensure_labeled_shards, folder_shard_paths, labeled_frames,
                                      read_manifest, shard_paths)
from murauer_dist.shards.cli import make_shard_set, make_shards_command
from murauer_dist.shards.manifest import ShardSetError
from murauer_dist.shards.schema import SampleLayout
from murauer_dist.shards.verify import verify_shard_set
from nyu_fixture import edit_joints, make_nyu_layout, real_frame_layout

REPO = Path(__file__).resolve().parent.parent
# NYU's rules at small frame numbers: the smaller cube from test frame 2, cameras 2/3 swapped in train frames < 3
SMALL = ["data.crop_size=32", "data.val_fraction=0.2", f"data.dataset={REPO / 'tests' / 'data' / 'nyu-small-rules.yaml'}"]


def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return make_nyu_layout(tmp_path_factory.mktemp("nyu"), frames_train=6, frames_test=4, seed=3)


@pytest.fixture(scope="module")
def shard_set(layout, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    make_shard_set(str(layout), str(out), shard_size=2, workers=2, overrides=SMALL, log=quiet)
    return out


def read_split(out: Path, split: str) -> list[dict]:
    dataset = wds.WebDataset([str(p) for p in shard_paths(out, split)], shardshuffle=False, empty_check=False)
    return [decode_sample(sample, SampleLayout.of_spec(NYU)) for sample in dataset]


def expected_slot(split: nyu.NyuSplit, frame: int, camera: int, cube: float, crop_size: int, margin: float):
    """What the reader and geometry give for one camera, computed here from scratch."""
    labels = split.labels(frame, camera)
    size = geo.stored_size(crop_size, margin)
    window = geo.CropWindow.around(labels.center_uvd, cube, size, margin=margin, camera=NYU.camera)
    crops = {domain: geo.crop_depth(split.depth(frame, camera, domain), window) for domain in ("real", "synth")}
    record = [*labels.center_uvd, *labels.center_xyz, cube, window.scale]
    return crops, np.stack([labels.eval_uvd, labels.eval_xyz]), np.array(record)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_every_field_equals_reader_and_geometry(layout, tmp_path, encoding):
    make_shard_set(str(layout), str(tmp_path), shard_size=2, workers=1, overrides=SMALL + [f"data.encoding={encoding}"],
                   log=quiet)
    frames = {"train": [0, 1, 2, 3, 4], "val": [5], "test": [0, 1, 2, 3]}     # val = round(0.2 * 6) = 1 tail frame
    for split_name, expected_frames in frames.items():
        nyu_split = nyu.NyuSplit(layout, "test" if split_name == "test" else "train", NYU)
        samples = read_split(tmp_path, split_name)
        assert [s["meta"]["frame"] for s in samples] == expected_frames
        for sample in samples:
            frame = sample["meta"]["frame"]
            assert sample["key"] == f"f{frame:07d}"
            assert sample["meta"] == {"schema": 1, "frame": frame, "split": split_name, "crop_size": 32,
                                      "stored_size": 52, "margin": 1.625, "encoding": encoding,
                                      "cameras": [1, 3, 2] if split_name != "test" and frame < 3 else [1, 2, 3]}
            cube = 249.9 if split_name == "test" and frame >= 2 else 300.0
            for slot, camera in zip((1, 2, 3), sample["meta"]["cameras"]):
                crops, joints, record = expected_slot(nyu_split, frame, camera, cube, 32, 1.625)
                assert sample[f"real{slot}"].dtype == np.uint16
                np.testing.assert_array_equal(sample[f"real{slot}"], crops["real"])
                np.testing.assert_array_equal(sample[f"synth{slot}"], crops["synth"])
                np.testing.assert_array_equal(sample["joints"][slot - 1], joints.astype(np.float32))
                np.testing.assert_array_equal(sample["crop"][slot - 1], record.astype(np.float32))


def test_real_nyu_frame_crop_contains_the_hand(nyu_files, nyu_gt_uvd, tmp_path):
    root = real_frame_layout(tmp_path / "nyu", nyu_files, nyu_gt_uvd[0])
    make_shard_set(str(root), str(tmp_path / "out"), split="test", workers=1, log=quiet)   # defaults: 128 px, 300 mm
    (sample,) = read_split(tmp_path / "out", "test")
    stored = sample["real1"]
    assert stored.shape == (208, 208)
    u_c, v_c, d_c, *_, cube, scale = sample["crop"][0].astype(np.float64)
    assert cube == 300.0 and scale == pytest.approx(geo.crop_scale(d_c, 300.0, 128, camera=NYU.camera), rel=1e-6)
    network = geo.center_crop(stored, 128)
    xy = (nyu_gt_uvd[0][:, :2] - [u_c, v_c]) * scale + 64.0        # joints in network-crop pixels
    assert ((xy >= 0) & (xy < 128)).all(), xy
    at_joint = network[np.floor(xy[:, 1]).astype(int), np.floor(xy[:, 0]).astype(int)].astype(float)
    in_front = nyu_gt_uvd[0][:, 2] - at_joint                       # joints sit just in front of the surface
    assert ((in_front > 0) & (in_front < 40)).all(), in_front
    assert np.median(stored[:8, :8]) == 2001                          # corners: the room behind, raw mm kept


def file_bytes(out: Path) -> dict[str, bytes]:
    """Every file of the train/val/test folders (shards, sidecars, manifests) by relative path."""
    files = [p for split in ("train", "val", "test") for p in sorted((out / split).rglob("*")) if p.is_file()]
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def test_resume_after_interruption_gives_identical_bytes(layout, shard_set, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(shard_set, resumed)
    (resumed / "train" / "shard-000001.tar").unlink()                          # finished shard lost
    (resumed / "train" / ".tmp-shard-000002.tar.4242").write_bytes(b"half a shard")   # killed mid-write
    (resumed / "test" / "shard-000000.tar").write_bytes(b"garbage")            # torn file
    (resumed / "test" / "manifest.json").unlink()
    lines = []
    make_shard_set(str(layout), str(resumed), shard_size=2, workers=2, overrides=SMALL, log=lines.append)
    assert any("2 already finished, 1 to write" in line for line in lines), lines
    assert file_bytes(resumed) == file_bytes(shard_set)
    fresh = tmp_path / "one-worker"                                            # worker count does not matter
    make_shard_set(str(layout), str(fresh), shard_size=2, workers=1, overrides=SMALL, log=quiet)
    assert file_bytes(fresh) == file_bytes(shard_set)
    with pytest.raises(ShardSetError, match="other settings"):
        make_shard_set(str(layout), str(fresh), shard_size=2, workers=1, overrides=SMALL + ["data.crop_size=48"],
                       log=quiet)


def test_shard_sets_made_before_the_rename_still_verify_resume_and_evaluate(layout, shard_set, tmp_path):
    """A manifest of an older make-shards: settings say nyu_split / nyu_frames, no dataset_spec, no recorded
    subject split. It verifies, a resumed make-shards keeps its shards (same fingerprint), and evaluate's
    subject split comes from the rules of its source folder."""
    import json
    from murauer_dist.frames.datasets import dataset_spec
    from murauer_dist.frames.sources import subject_split_of_manifest
    old = tmp_path / "old"
    shutil.copytree(shard_set, old)
    for split in ("train", "val", "test"):
        path = old / split / "manifest.json"
        manifest = json.loads(path.read_text())
        settings = manifest["settings"]
        settings["nyu_split"], settings["nyu_frames"] = settings.pop("source_split"), settings.pop("source_frames")
        manifest.pop("dataset_spec")
        manifest["source"].pop("test_subject_split", None)
        path.write_text(json.dumps(manifest))
    assert verify_shard_set(str(old), log=quiet)["test"] == 4
    lines = []
    make_shard_set(str(layout), str(old), shard_size=2, workers=1, overrides=SMALL, log=lines.append)
    assert any("test: " in line and "2 already finished, 0 to write" in line for line in lines), lines
    spec = dataset_spec(str(REPO / "tests" / "data" / "nyu-small-rules.yaml"))
    legacy = json.loads((shard_set / "test" / "manifest.json").read_text())
    legacy["source"].pop("test_subject_split")
    assert subject_split_of_manifest(legacy, spec) == 2 == spec.test_subject_split     # no procedural.json there


def member_offset(tar_path: Path, name: str) -> tuple[int, int]:
    with tarfile.open(tar_path) as tar:
        info = tar.getmember(name)
        return info.offset, info.offset_data


def test_verify_names_shard_and_first_bad_key(shard_set, tmp_path):
    assert verify_shard_set(str(shard_set), log=quiet) == {"train": 5, "val": 1, "test": 4}
    broken = tmp_path / "broken"
    shutil.copytree(shard_set, broken)
    flipped = broken / "train" / "shard-000001.tar"                   # frames 2, 3
    _, data_at = member_offset(flipped, "f0000003.real2.png")
    raw = bytearray(flipped.read_bytes())
    raw[data_at + 40] ^= 0x01
    flipped.write_bytes(bytes(raw))
    truncated = broken / "test" / "shard-000001.tar"                  # frames 2, 3
    header_at, _ = member_offset(truncated, "f0000003.joints.f32")
    truncated.write_bytes(truncated.read_bytes()[:header_at + 700])
    header_flip = broken / "train" / "shard-000002.tar"               # frame 4 only
    raw = bytearray(header_flip.read_bytes())
    raw[3] ^= 0x20                                                     # inside the first member's name
    header_flip.write_bytes(bytes(raw))
    with pytest.raises(ShardSetError) as caught:
        verify_shard_set(str(broken), log=quiet)
    message = str(caught.value)
    assert "3 bad shard(s)" in message
    assert f"{flipped}: sample f0000003" in message
    assert f"{truncated}: sample f0000003" in message
    assert f"{header_flip}: sample f0000004" in message
    script = subprocess.run([sys.executable, str(REPO / "shards" / "make_shards.py"), "--verify", str(broken)],
                            capture_output=True, text=True, timeout=120)
    assert script.returncode != 0 and f"{truncated}: sample f0000003" in script.stderr


def test_labeled_frames_follow_the_original_recipe():
    chosen = labeled_frames(72757, 10, 123456789)
    assert chosen.tolist() == [24100, 45341, 15740, 5405, 62298, 65074, 16000, 13164, 28653, 34567]
    n100, n1000 = labeled_frames(72757, 100, 123456789), labeled_frames(72757, 1000, 123456789)
    assert set(chosen) < set(n100) < set(n1000) and len(set(n1000)) == 1000
    assert set(labeled_frames(72757, 10, 1)) != set(chosen)


def members(sample: dict) -> dict:
    return {name: data for name, data in sample.items() if not name.startswith("__")}


def test_labeled_shards_are_nested_copies_of_train_samples(shard_set, tmp_path):
    shard_set = Path(shutil.copytree(shard_set, tmp_path / "shards"))
    train = {s["__key__"]: s for s in wds.WebDataset([str(p) for p in shard_paths(shard_set, "train")],
                                                     shardshuffle=False)}
    n_train = 5
    previous = set()
    for n in (2, 4):
        folder = ensure_labeled_shards(shard_set, n, seed=7)
        assert folder == shard_set / "labeled" / f"seed7-n{n}"
        dataset = wds.WebDataset([str(p) for p in folder_shard_paths(folder)], shardshuffle=False)
        got = {s["__key__"]: s for s in dataset}
        assert set(got) == {f"f{f:07d}" for f in labeled_frames(n_train, n, 7)}
        assert previous < set(got)
        for key, sample in got.items():
            assert members(sample) == members(train[key])
        previous = set(got)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert ensure_labeled_shards(shard_set, 4, seed=7) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp            # idempotent, nothing rewritten
    with pytest.raises(ShardSetError, match="larger than the labeled pool"):
        ensure_labeled_shards(shard_set, 6, seed=7)                            # more than the 5 train frames
    everything = ensure_labeled_shards(shard_set, 5, seed=7)                   # "all": the train shards, linked
    assert everything.name == "seed7-n5"
    assert [p.read_bytes() for p in folder_shard_paths(everything)] == \
           [p.read_bytes() for p in shard_paths(shard_set, "train")]
    assert read_manifest(everything)["labeled"]["frames_in_draw_order"] == labeled_frames(5, 5, 7).tolist()
    verify_shard_set(str(shard_set), log=quiet)


def test_bad_frames_are_skipped_and_counted(tmp_path):
    root = make_nyu_layout(tmp_path / "nyu", frames_train=6, frames_test=1, seed=5)
    train = root / "train"
    (train / nyu.depth_filename("synth", 2, 1)).unlink()
    (train / nyu.depth_filename("real", 1, 2)).write_bytes(b"not a png")

    def break_frames(joints):
        joints["joint_uvd"][0, 3, 32, 0] = -400.0                  # palm centre far left of the image
        joints["joint_uvd"][2, 4, 32, 2] = 3000.0                  # cube 2 m behind the hand: no hand pixels
    edit_joints(root, "train", break_frames)
    manifests = make_shard_set(str(root), str(tmp_path / "out"), split="train", shard_size=4, workers=1,
                               overrides=["data.crop_size=32", "data.val_fraction=0"], log=quiet)
    manifest = manifests["train"]
    reasons = {item["frame"]: item["reason"] for item in manifest["skipped"]}
    assert sorted(reasons) == [1, 2, 3, 4] and manifest["num_skipped"] == 4
    assert "synthdepth_2_0000002.png is missing" in reasons[1]
    assert "depth_1_0000003.png: not a readable PNG" in reasons[2]
    assert "outside the 640x480 image" in reasons[3]
    assert "valid depth pixels" in reasons[4]
    assert manifest["num_samples"] == 2 and [s["samples"] for s in manifest["shards"]] == [1, 1]
    assert [s["meta"]["frame"] for s in read_split(tmp_path / "out", "train")] == [0, 5]


def test_wrong_root_and_bad_mat_give_one_clear_error(tmp_path):
    with pytest.raises(UserError, match=f"dataset root {tmp_path / 'nope'} does not exist"):
        make_shards_command(root=str(tmp_path / "nope"), out=str(tmp_path / "out"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir()
    arrays = {"joint_uvd": np.zeros((3, 2, 36, 3)), "joint_xyz": np.zeros((3, 2, 36, 3))}

    for split in ("train", "test"):
        scipy.io.savemat(tmp_path / "empty" / split / "joint_data.mat", arrays)
    with pytest.raises(UserError, match="holds no real depth images .*depth_1_0000001.png"):
        make_shards_command(root=str(tmp_path / "empty"), out=str(tmp_path / "out"))
    scipy.io.savemat(tmp_path / "empty" / "test" / "joint_data.mat",
                     {"joint_uvd": np.zeros((3, 2, 14, 3)), "joint_xyz": np.zeros((3, 2, 14, 3))})
    with pytest.raises(UserError, match=r"shape \(3, 2, 14, 3\), expected \(3, N, 36, 3\)"):
        make_shards_command(root=str(tmp_path / "empty"), out=str(tmp_path / "out"), split="test")
    with pytest.raises(UserError, match="no split folder with a manifest.json"):
        make_shards_command(verify=str(tmp_path / "empty"))


@pytest.mark.slow
def test_shard_benchmark_runs_on_a_generated_layout(tmp_path):
    from murauer_dist.bench.shards import main
    result = main(frames=8, workers="1,2", out=str(tmp_path / "bench.json"))
    assert [row["workers"] for row in result["writing"]] == [1, 2]
    assert all(row["frames"] == 8 and row["frames_per_cpu_s"] > 0 for row in result["writing"])
    assert result["encodings"]["raw"]["bytes_per_crop"] == 208 * 208 * 2
    assert (tmp_path / "bench.json").is_file()

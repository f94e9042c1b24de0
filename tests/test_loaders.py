"""Loaders: DALI (CPU) against the reference loader and closed forms, on tiny fixture shards (crop 32)."""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch

from murauer_dist.frames.datasets import NYU
from murauer_dist import geometry
from murauer_dist.config import load_config
from murauer_dist.batches import augment
from murauer_dist.batches.eval_loader import build_eval_loader
from murauer_dist.batches.loaders import build_train_stream
from murauer_dist.shards.read import ShardError

from shard_fixture import make_shard_set

BACKENDS = ("dali", "reference")
CROP = 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    return {"path": out, **make_shard_set(out, n_train=24, n_test=10, crop_size=CROP, n_labeled=6, label_seed=3)}


def make_cfg(shards_dir, backend="dali", *overrides):
    return load_config("tiny", [f"data.shards={shards_dir}", f"data.crop_size={CROP}", "data.n_labeled=6",
                                "data.label_seed=3", f"loader.backend={backend}", "loader.num_threads=1",
                                "loader.eval_batch=4", "loader.shuffle_buffer=8", *overrides])


def expected_eval(frame: dict, crop_size: int, cube: float = 300.0, domain: str = "real") -> np.ndarray:
    """Closed form: the central slice of the stored crop, normalised around the palm depth."""
    uvd = frame["uvd"][0]
    palm = uvd[geometry.EVAL_JOINTS[geometry.CENTER_JOINT]]
    stored = geometry.stored_size(crop_size, 1.625)
    window = geometry.CropWindow.around(palm, cube, stored, margin=1.625, camera=NYU.camera)
    crop = geometry.center_crop(geometry.crop_depth(frame["depth"][(domain, 1)], window), crop_size)
    return geometry.normalize_depth(crop, palm[2], cube)


@pytest.mark.parametrize("domain", ("real", "synth"))
@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_loader_every_frame_once_in_order_and_closed_form(shards, backend, domain):
    cfg = make_cfg(shards["path"], backend)
    frames = []
    for rank in range(2):
        for batch in build_eval_loader(cfg, "test", rank=rank, world_size=2, domain=domain):
            assert torch.isfinite(batch["depth"]).all() and batch["depth"].shape[1:] == (1, CROP, CROP)
            for i, frame in enumerate(batch["frame"].tolist()):
                fixture = shards["frames"]["test"][frame]
                other = expected_eval(fixture, CROP, domain="synth" if domain == "real" else "real")
                assert not np.allclose(batch["depth"][i, 0].numpy(), other, atol=1e-3)
                np.testing.assert_allclose(batch["depth"][i, 0].numpy(), expected_eval(fixture, CROP, domain=domain),
                                           atol=1e-6)
                xyz = fixture["xyz"][0][list(geometry.EVAL_JOINTS)]
                target = geometry.normalize_joints(xyz, xyz[geometry.CENTER_JOINT], 300.0)
                np.testing.assert_allclose(batch["target"][i].numpy(), target, atol=1e-5)
            frames += batch["frame"].tolist()
    assert frames == shards["test"]


def first_batches(cfg, steps=4, rank=0, world=1):
    stream = build_train_stream(cfg, "main", rank, world, "cpu")
    return [next(stream) for _ in range(steps)]


def by_frame(batches, stream, field):
    return {f: b[stream][field][i] for b in batches for i, f in enumerate(b[stream]["frame"].tolist())}


def test_dali_equals_reference_without_augmentation(shards):
    outs = {b: first_batches(make_cfg(shards["path"], b, "augment.enabled=false")) for b in BACKENDS}
    for stream, fields in {"pairs": ("real_depth", "synth_depth", "target", "center_xyz"),
                           "views": ("real_depth", "synth_view", "target"), "unlabeled_real": ("depth",),
                           "unlabeled_synth": ("depth",)}.items():
        for field in fields:
            dali, ref = by_frame(outs["dali"], stream, field), by_frame(outs["reference"], stream, field)
            common = set(dali) & set(ref)
            assert common, f"{stream}: no frame drawn by both backends"
            for frame in common:
                torch.testing.assert_close(dali[frame], ref[frame], atol=1e-5, rtol=0, msg=f"{stream}.{field} f{frame}")
    for batch in outs["dali"]:   # un-augmented cond = the exact normalised centre
        center = batch["pairs"]["center_xyz"]
        np.testing.assert_allclose(augment.condition(center, torch.zeros_like(center)).numpy(),
                                   np.clip([[c[0] / 725, c[1] / 725, (c[2] - 50) / 725 - 1] for c in center.tolist()],
                                           -1, 1), atol=1e-6)


def hand_hits(batch: dict, depth_key: str, crop_size: int, flip: bool = False) -> tuple[float, float]:
    """Fraction of unclipped joints landing on hand pixels, median |pixel depth - joint depth| there."""
    target, center, cube = batch["target"], batch["center_xyz"], batch["cube_mm"]
    if flip:
        target = target * torch.tensor([-1.0, -1.0, 1.0])
    xyz = target.double() * (cube[:, None, None].double() / 2) + center[:, None, :].double()
    scale = crop_size * center[:, 2].double() / (cube.double() * geometry.FX)
    px = augment.network_pixels(xyz, center, scale, crop_size, camera=NYU.camera).floor().long()
    ok = (target.abs() < 0.99).all(-1) & (px >= 0).all(-1) & (px < crop_size).all(-1)
    b, j = torch.nonzero(ok, as_tuple=True)
    values = batch[depth_key][b, 0, px[b, j, 1], px[b, j, 0]]
    on_hand = values < 1.0
    error = (values[on_hand] - target[b, j, 2][on_hand]).abs().median().item() if on_hand.any() else 1.0
    return on_hand.float().mean().item(), error


@pytest.mark.parametrize("backend", BACKENDS)
def test_augmented_joints_land_on_hand_pixels(shards, backend):
    batches = first_batches(make_cfg(shards["path"], backend), steps=3)
    for stream, key in (("pairs", "real_depth"), ("pairs", "synth_depth"), ("synth", "depth")):
        merged = {k: torch.cat([b[stream][k] for b in batches]) for k in ("target", "center_xyz", "cube_mm", key)}
        hit, error = hand_hits(merged, key, CROP)
        assert hit > 0.9 and error < 0.15, (stream, key, hit, error)
        flipped, _ = hand_hits(merged, key, CROP, flip=True)      # the check can fail: mirrored joints miss
        assert flipped < hit - 0.2, (stream, flipped, hit)
    rotations = torch.cat([b["pairs"]["real_depth"] for b in batches])
    assert not torch.equal(rotations[0], rotations[1])


def test_dali_matrix_equals_augment_matrix(shards):
    from murauer_dist.batches.dali_backend import DaliStreamBackend
    from murauer_dist.batches.loaders import DataSources
    cfg = make_cfg(shards["path"])
    sources = DataSources(cfg, need_labeled=True)
    reader = DaliStreamBackend(cfg, "pairs", 4, sources, {"main": (0, 1)}, seed=5, labeled_probability=0.0,
                              device=torch.device("cpu"))
    raw = reader.next_raw()
    assert raw["theta"].abs().max() > 0 and raw["jitter"].abs().max() > 0
    stored = geometry.stored_size(CROP, 1.625)
    ours = augment.affine_matrix(raw["crop"][:, 0], raw["theta"], raw["jitter"], CROP, stored, camera=NYU.camera)
    torch.testing.assert_close(raw["matrix"].double(), ours, atol=2e-3, rtol=1e-4)
    warped = augment.add_depth_noise(augment.warp_nearest(torch.zeros(4, 1, stored, stored), ours, CROP), 0)
    assert warped.shape == raw["real"].shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_pair_twins_share_the_draw(tmp_path, backend):
    info = make_shard_set(tmp_path, n_train=12, n_test=2, crop_size=CROP, n_labeled=6, label_seed=3,
                          synth_equals_real=True)
    for batch in first_batches(make_cfg(tmp_path, backend), steps=2):
        torch.testing.assert_close(batch["pairs"]["real_depth"], batch["pairs"]["synth_depth"], atol=0, rtol=0)
        torch.testing.assert_close(batch["views"]["real_depth"], batch["views"]["synth_depth"], atol=0, rtol=0)
        assert (batch["pairs"]["real_depth"] < 1).any()
        assert set(batch["pairs"]["frame"].tolist()) <= set(info["labeled"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ranks_split_samples_and_step_equally(shards, backend):
    cfg = make_cfg(shards["path"], backend, "train.iters_per_epoch=4", "loader.unlabeled_real=3")
    seen, states = [], []
    for rank in range(2):
        stream = build_train_stream(cfg, "main", rank, 2, "cpu")
        frames = [next(stream)["unlabeled_real"]["frame"].tolist() for _ in range(stream.steps_per_epoch)]
        seen.append(set(sum(frames, [])))
        states.append(stream.state_dict())
        assert stream.steps_per_epoch == 4
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(shards["train"])
    assert states[0] == states[1] == {"epoch": 0, "step_in_epoch": 4}


@pytest.mark.parametrize("backend", BACKENDS)
def test_pairs_only_labeled_and_views_flags(shards, backend):
    labeled = set(shards["labeled"])
    views_frames, flags = [], []
    for batch in first_batches(make_cfg(shards["path"], backend), steps=6):
        assert set(batch["pairs"]["frame"].tolist()) <= labeled
        views_frames += batch["views"]["frame"].tolist()
        flags += batch["views"]["labeled"].tolist()
        assert batch["synth"]["frame"].max() < len(shards["train"])       # never a val frame
    assert flags == [f in labeled for f in views_frames]
    assert any(flags) and not all(flags)


def test_resume_reproduces_the_next_batch(shards):
    cfg = make_cfg(shards["path"], "dali", "train.iters_per_epoch=3")
    stream = build_train_stream(cfg, "main", 0, 1, "cpu")
    for _ in range(4):                  # into epoch 1
        next(stream)
    state = stream.state_dict()
    expected = next(stream)
    resumed = build_train_stream(cfg, "main", 0, 1, "cpu")
    resumed.load_state_dict(state)
    assert state == {"epoch": 1, "step_in_epoch": 1}
    got = next(resumed)
    for name in expected:
        for key in expected[name]:
            torch.testing.assert_close(got[name][key], expected[name][key], atol=0, rtol=0)


def assert_same_batches(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for step, (a, b) in enumerate(zip(got, expected)):
        assert list(a) == list(b)
        for name in a:
            assert list(a[name]) == list(b[name])
            for key in a[name]:
                torch.testing.assert_close(a[name][key], b[name][key], atol=0, rtol=0,
                                           msg=f"step {step}: {name}.{key}")


@pytest.fixture
def build_ahead_at_once(monkeypatch):
    """Every TrainStream builds the next epoch's readers as soon as it may; returns the epochs whose
    readers a rollover took from such a build."""
    from murauer_dist.batches import loaders
    taken = []
    take = loaders.EpochBuild.take

    def spy(self):
        taken.append(self.epoch)
        return take(self)

    monkeypatch.setattr(loaders.BuildPace, "due", lambda self, steps_left: True)
    monkeypatch.setattr(loaders.EpochBuild, "take", spy)
    return taken


@pytest.mark.parametrize("backend", BACKENDS)
def test_rollover_readers_built_ahead_equal_fresh_ones_and_resume_is_exact(shards, backend, build_ahead_at_once):
    """Rank 1 of 2: its seeds and its part of the samples both change with the epoch."""
    cfg = make_cfg(shards["path"], backend, "train.iters_per_epoch=2")
    with closing(build_train_stream(cfg, "main", 1, 2, "cpu")) as stream:
        batches = [next(stream) for _ in range(5)]          # epochs 0, 0, 1, 1, 2
        state = stream.state_dict()
    assert build_ahead_at_once == [1, 2] and state == {"epoch": 2, "step_in_epoch": 1}
    assert not torch.equal(batches[2]["synth"]["depth"], batches[0]["synth"]["depth"])
    with closing(build_train_stream(cfg, "main", 1, 2, "cpu")) as fresh:
        fresh.pace.due = lambda steps_left: False           # nothing built ahead: each epoch's readers made
        assert_same_batches([next(fresh) for _ in range(5)], batches)   # at its first step, as before
    assert build_ahead_at_once == [1, 2]
    with closing(build_train_stream(cfg, "main", 1, 2, "cpu")) as resumed:   # mid-epoch 1, across the next
        resumed.load_state_dict({"epoch": 1, "step_in_epoch": 1})
        assert_same_batches([next(resumed) for _ in range(2)], batches[3:5])
        assert resumed.state_dict() == state and build_ahead_at_once == [1, 2, 2]


def test_close_ends_the_build_ahead_and_the_process_exits_cleanly(shards):
    """A stream closed while the last epoch's readers are being closed and the next epoch's built, one
    left open mid-build: close() leaves no thread behind (those nor DALI's), and the interpreter exits
    with 0."""
    script = f"""
import os
from murauer_dist.config import load_config
from murauer_dist.batches import loaders
loaders.BuildPace.due = lambda self, steps_left: True
cfg = load_config("tiny", ["data.shards={shards['path']}", "data.crop_size={CROP}", "data.n_labeled=6",
                           "data.label_seed=3", "loader.num_threads=1", "loader.shuffle_buffer=8"])
loaders.build_train_stream(cfg, "main", 0, 1, "cpu").close()     # DALI's process-wide threads started
threads = len(os.listdir("/proc/self/task"))
closed = loaders.build_train_stream(cfg, "main", 0, 1, "cpu")
for _ in range(4):                  # into epoch 1: epoch 0's readers closing, epoch 2's being built
    next(closed)
assert closed._closing is not None and closed._next is not None
closed.close()
assert len(os.listdir("/proc/self/task")) == threads
left_open = loaders.build_train_stream(cfg, "main", 0, 1, "cpu")
next(left_open)
print("done")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]


def test_pretrain_stage_draws_only_synth(shards):
    cfg = make_cfg(shards["path"], "dali", "train.pretrain_batch=5")
    batch = next(build_train_stream(cfg, "pretrain", 0, 1, "cpu"))
    assert list(batch) == ["synth"] and batch["synth"]["depth"].shape == (5, 1, CROP, CROP)


def test_missing_shards_name_the_folder(tmp_path):
    cfg = make_cfg(tmp_path / "nowhere")
    with pytest.raises(ShardError, match="nowhere/train/shard-"):
        build_train_stream(cfg, "main", 0, 1, "cpu")
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(ShardError, match="holds no shard"):
        build_eval_loader(make_cfg(tmp_path / "empty"), "test")


def _drop_member(tar_path, key, member):
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for info, data in members:
            if info.name != f"{key}.{member}":
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_incomplete_sample_skipped_and_counted_or_named(tmp_path, backend):
    make_shard_set(tmp_path, n_train=8, n_test=6, crop_size=CROP, n_labeled=4, label_seed=3, shard_size=4)
    _drop_member(tmp_path / "test" / "shard-000001.tar", "f0000004", "real1.png")
    frames = [f for b in build_eval_loader(make_cfg(tmp_path, backend), "test") for f in b["frame"].tolist()]
    assert frames == [0, 1, 2, 3, 5]
    with pytest.raises(ShardError, match=r"shard-000001.tar, sample f0000004: missing real1.png"):
        build_eval_loader(make_cfg(tmp_path, backend, "loader.bad_samples=error"), "test")


def test_reads_the_shard_writers_output(tmp_path):
    """Integration: shards made by `make-shards` from an NYU-layout root, read by both backends."""
    shards_cli = pytest.importorskip("murauer_dist.shards.cli")
    info = make_shard_set(tmp_path / "own", n_train=12, n_test=6, crop_size=CROP, n_labeled=4, label_seed=3,
                          root=tmp_path / "root")
    out = tmp_path / "written"
    shards_cli.make_shards_command(root=str(tmp_path / "root"), out=str(out), workers=1,
                                   overrides=[f"data.crop_size={CROP}", "data.shard_size=4"])
    for backend in BACKENDS:
        cfg = make_cfg(out, backend, "data.n_labeled=4")
        batches = list(build_eval_loader(cfg, "test"))
        assert [f for b in batches for f in b["frame"].tolist()] == info["test"]
        for batch in batches:
            for i, frame in enumerate(batch["frame"].tolist()):
                expected = expected_eval(info["frames"]["test"][frame], CROP)
                np.testing.assert_allclose(batch["depth"][i, 0].numpy(), expected, atol=1e-6)
        batch = next(build_train_stream(cfg, "main", 0, 1, "cpu"))
        assert set(batch) == {"pairs", "synth", "views", "unlabeled_real", "unlabeled_synth"}


def test_dali_index_files_made_once_and_remade_when_stale(tmp_path):
    from murauer_dist.shards.read import dali_index_paths, split_tars
    info = make_shard_set(tmp_path, n_train=6, n_test=2, crop_size=CROP, n_labeled=2, label_seed=3)
    assert info
    tars = split_tars(tmp_path, "train")
    indexes = dali_index_paths(tars)
    first = [open(p).read() for p in indexes]
    assert all(text.startswith("v1.2 ") for text in first)
    assert int(first[0].split()[1]) == sum(1 for _ in tarfile.open(tars[0]).getnames()) // 9
    stamp = [Path(p).stat().st_mtime_ns for p in indexes]
    assert [Path(p).stat().st_mtime_ns for p in dali_index_paths(tars)] == stamp     # not remade
    Path(indexes[0]).write_text("stale")
    import os
    os.utime(indexes[0], ns=(0, 0))
    assert open(dali_index_paths(tars)[0]).read() == first[0]                          # remade

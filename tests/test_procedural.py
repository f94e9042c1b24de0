"""The procedural NYU-layout dataset: layout, labels on the hand, crops, rig, domain gap, determinism."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import scipy.io

from murauer_dist.frames.datasets import NYU
from murauer_dist import geometry
from murauer_dist.errors import UserError
from murauer_dist.frames.nyu import NyuSplit
from murauer_dist.frames.procedural import hand
from murauer_dist.frames.procedural.generate import SynthDataError, synth_data
from murauer_dist.frames.procedural.rig import Rig

FRAMES = {"train": 8, "test": 4}
CUBE, CROP, MARGIN = 300.0, 64, 1.625


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("procedural") / "data"
    synth_data(root, frames_train=FRAMES["train"], frames_test=FRAMES["test"], seed=7, workers=1, progress=False)
    return root


def images(root, split):
    data = NyuSplit(root, split, NYU)
    for index in range(len(data)):
        for cam in (1, 2, 3):
            yield index, cam, data.labels(index, cam), data.depth(index, cam, "real"), data.depth(index, cam, "synth")


def digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_read_back_by_the_nyu_reader(dataset):
    for split, count in FRAMES.items():
        data = NyuSplit(dataset, split, NYU)
        assert len(data) == count
        mat = scipy.io.loadmat(data.labels_path)
        assert mat["joint_uvd"].shape == mat["joint_xyz"].shape == (3, count, 36, 3)
        assert [str(np.squeeze(n)) for n in mat["joint_names"].ravel()] == list(hand.JOINT_NAMES)
        for cam in (1, 2, 3):
            for domain in ("real", "synth"):
                depth = data.depth(count - 1, cam, domain)
                assert depth.dtype == np.uint16 and depth.shape == (480, 640)


def test_eval_joints_mean_what_nyu_means():
    names = [hand.JOINT_NAMES[i] for i in geometry.EVAL_JOINTS]
    assert names == ["F1_KNU3_A", "F1_KNU2_B", "F2_KNU3_A", "F2_KNU2_B", "F3_KNU3_A", "F3_KNU2_B", "F4_KNU3_A",
                     "F4_KNU2_B", "TH_KNU3_A", "TH_KNU3_B", "TH_KNU2_B", "PALM_1", "PALM_2", "PALM_3"]
    model = hand.pose_hand(hand.TEMPLATE, np.zeros((5, 4)), np.zeros(2))
    joints = model.joints
    assert np.allclose(joints[hand.PALM_CENTER], 0.0)
    for finger in range(4):                       # open hand: tip above the PIP above the MCP, along +y
        tip, pip, mcp = joints[6 * finger], joints[6 * finger + 3], joints[6 * finger + 5]
        assert tip[1] > pip[1] > mcp[1] > 0
    assert joints[0, 0] < joints[6, 0] < joints[12, 0] < joints[18, 0] < joints[24, 0]   # pinky .. thumb in x
    assert joints[30, 0] < 0 < joints[31, 0] and joints[30, 1] < 0 and joints[31, 1] < 0  # wrist sides


def test_label_bone_lengths_match_real_nyu(dataset, nyu_gt_uvd):
    """Distances between the 14 evaluated joints are those of a human hand as NYU labels it."""
    ours = NyuSplit(dataset, "train", NYU).all_labels(1).xyz[:, list(geometry.EVAL_JOINTS)]
    nyu = geometry.uvd_to_xyz(nyu_gt_uvd, camera=NYU.camera)
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (11, 12), (13, 11), (13, 5), (13, 7)]
    for a, b in pairs:
        mine = np.median(np.linalg.norm(ours[:, a] - ours[:, b], axis=-1))
        theirs = np.median(np.linalg.norm(nyu[:, a] - nyu[:, b], axis=-1))
        assert 0.65 * theirs < mine < 1.35 * theirs, (geometry.JOINT_LABELS[a], geometry.JOINT_LABELS[b], mine, theirs)


def test_projected_joints_land_on_hand_pixels_in_both_domains(dataset):
    """The depth at a joint's pixel lies just in front of the joint (joints sit inside the fingers)."""
    fractions = {"real": [], "synth": []}
    for split in FRAMES:
        for _, _, labels, real, synth in images(dataset, split):
            for domain, depth in (("real", real), ("synth", synth)):
                on_hand = 0
                for u, v, d in labels.eval_uvd:
                    patch = depth[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2].astype(np.float64)
                    ahead = d - patch[patch > 0]
                    on_hand += bool(((ahead > -10) & (ahead < 40)).any())
                fractions[domain].append(on_hand / 14)
                assert on_hand >= 7, (domain, on_hand)      # at most half hidden by the hand itself
    assert np.mean(fractions["synth"]) > 0.85 and np.mean(fractions["real"]) > 0.8


def test_palm_centred_crop_contains_the_hand(dataset):
    size = geometry.stored_size(CROP, MARGIN)
    for split in FRAMES:
        for index, cam, labels, real, synth in images(dataset, split):
            window = geometry.CropWindow.around(labels.center_uvd, CUBE, size, margin=MARGIN, camera=NYU.camera)
            for depth in (real, synth):
                geometry.check_crop(geometry.crop_depth(depth, window), labels.center_uvd[2], CUBE, f"{index}")
            if cam == 1:                           # all 36 joints inside the network crop and the image
                net = geometry.CropWindow.around(labels.center_uvd, CUBE, CROP, camera=NYU.camera)
                xy = net.image_to_crop(labels.uvd[:, :2])
                assert ((xy >= 0) & (xy < CROP)).all(), f"{split} frame {index}: a joint leaves the crop"
                assert np.abs(labels.xyz - labels.center_xyz).max() < CUBE / 2
                assert 500 <= labels.center_xyz[2] <= 1000


def test_side_cameras_see_the_same_joints(dataset):
    rig = Rig.default(camera=NYU.camera)
    data = NyuSplit(dataset, "train", NYU)
    front = data.all_labels(1)
    for cam in (2, 3):
        side = data.all_labels(cam)
        assert np.allclose(side.xyz, rig.to_camera(front.xyz, cam), atol=1e-6)
        assert np.allclose(side.uvd, geometry.xyz_to_uvd(side.xyz, camera=NYU.camera), atol=1e-6)
        assert not np.allclose(side.xyz, front.xyz, atol=50)            # a different view
        inside = ((side.uvd[..., 0] >= 0) & (side.uvd[..., 0] < 640) & (side.uvd[..., 1] >= 0)
                  & (side.uvd[..., 1] < 480))
        assert inside[:, list(geometry.EVAL_JOINTS)].mean() > 0.9


def hand_mask(depth, labels, window_px=120):
    """Pixels near the palm (image window, palm cube depth): the hand, without far clutter."""
    u, v, d = labels.center_uvd
    mask = (depth > 0) & (np.abs(depth.astype(np.float64) - d) < CUBE / 2)
    rows, cols = np.ogrid[:480, :640]
    return mask & (np.abs(rows - v) < window_px) & (np.abs(cols - u) < window_px)


def test_real_and_synthetic_differ_where_the_sensor_model_says(dataset):
    ious, holes, noisy = [], [], []
    for index, cam, labels, real, synth in images(dataset, "train"):
        synth_hand, real_hand = hand_mask(synth, labels), hand_mask(real, labels)
        ious.append((synth_hand & real_hand).sum() / (synth_hand | real_hand).sum())
        holes.append(((real == 0) & synth_hand).sum() / synth_hand.sum())      # missing depth on the hand
        both = synth_hand & real_hand
        diff = real[both].astype(np.float64) - synth[both]
        noisy.append((diff != 0).mean())
        assert np.median(np.abs(diff)) < 12, "same pose: the surfaces nearly agree"
        assert not synth[~(synth > 0)].any() and (real[~(synth > 0)] > 0).any()  # clutter only in real
    assert 0.5 < min(ious) and max(ious) < 1.0        # same silhouette up to the actor's shape
    assert 0.005 < np.mean(holes) < 0.4               # dropout along edges and in holes
    assert np.mean(noisy) > 0.5                       # noise and quantisation


def test_second_actor_in_test_split(dataset):
    """The test actor's bones differ from the train actor's (a shape not seen in training)."""
    def middle_finger(split):
        xyz = NyuSplit(dataset, split, NYU).all_labels(1).xyz
        return np.median(np.linalg.norm(np.diff(xyz[:, [12, 13, 15, 17]], axis=1), axis=-1).sum(axis=1))
    assert middle_finger("test") < 0.97 * middle_finger("train")


def test_same_seed_same_bytes_with_one_and_two_workers(dataset, tmp_path):
    synth_data(tmp_path / "two", frames_train=FRAMES["train"], frames_test=FRAMES["test"], seed=7, workers=2,
               progress=False)
    assert digest(tmp_path / "two") == digest(dataset)


def test_other_seed_other_data(tmp_path):
    synth_data(tmp_path / "a", frames_train=2, frames_test=1, seed=1, workers=1, progress=False)
    synth_data(tmp_path / "b", frames_train=2, frames_test=1, seed=2, workers=1, progress=False)
    a, b = NyuSplit(tmp_path / "a", "train", NYU), NyuSplit(tmp_path / "b", "train", NYU)
    assert not np.allclose(a.all_labels(1).xyz, b.all_labels(1).xyz)


@pytest.mark.parametrize("kwargs, message", [
    ({"frames_train": 0}, "frames_train"), ({"frames_test": -3}, "frames_test"),
    ({"frames_train": True}, "frames_train"), ({"workers": 0}, "workers"), ({"seed": -1}, "seed"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, message):
    with pytest.raises(SynthDataError, match=message):
        synth_data(tmp_path / "out", **{"frames_train": 2, "frames_test": 1, "progress": False, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_unusable_output_folders(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SynthDataError, match="not a folder"):
        synth_data(blocker, frames_train=1, frames_test=1, progress=False)
    with pytest.raises(SynthDataError, match="not a writable folder"):
        synth_data(blocker / "out", frames_train=1, frames_test=1, progress=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("user data")
    with pytest.raises(SynthDataError, match="--overwrite"):
        synth_data(full, frames_train=1, frames_test=1, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file", "full", "keep.txt"]
    synth_data(full, frames_train=1, frames_test=1, overwrite=True, progress=False)
    assert (full / "keep.txt").read_text() == "user data" and len(NyuSplit(full, "test", NYU)) == 1


def test_workflow_refuses_a_dataset_made_with_other_frame_counts(dataset, capsys):
    from murauer_dist.config import load_config
    from murauer_dist.recipes.workflow import ensure_dataset
    made = json.loads((dataset / "procedural.json").read_text())["frames"]
    same = load_config("demo-cpu", [f"data.root={dataset}", f"data.synth_frames_train={made['train']}",
                                    f"data.synth_frames_test={made['test']}", "data.synth_seed=7"])
    ensure_dataset(same)                                             # reused, nothing generated
    assert "using the dataset" in capsys.readouterr().out
    other = load_config("demo-cpu", [f"data.root={dataset}", f"data.synth_frames_train={made['train'] + 1}",
                                     f"data.synth_frames_test={made['test']}", "data.synth_seed=7"])
    with pytest.raises(UserError, match=r"procedural\.json.*data\.synth_frames_train"):
        ensure_dataset(other)


def test_tile_culling_drops_no_surface(monkeypatch):
    """The renderer traces only the tiles a capsule's projection can reach: the same depth maps as
    tracing every pixel of every box (culling off), for hands, a near forearm and a small far capsule."""
    from murauer_dist.frames.procedural import render
    from murauer_dist.frames.procedural.frames import ACTORS, FrameRenderer, GeneratorSettings, make_split_sequence
    settings = GeneratorSettings()
    sequence = make_split_sequence(3, "train", 6, settings)
    frames = FrameRenderer(3, "train", sequence, settings, bank=np.zeros((480, 640), np.float32))
    rig = settings.rig
    models = [frames.posed(i, shape) for i in range(6) for shape in (ACTORS["train"], hand.TEMPLATE)]
    a = np.stack([rig.to_camera(m.capsules["a"], cam) for m in models for cam in (1, 2, 3)])
    b = np.stack([rig.to_camera(m.capsules["b"], cam) for m in models for cam in (1, 2, 3)])
    radius = np.stack([m.capsules["radius"] for m in models for _ in (1, 2, 3)])
    extra_a, extra_b = np.array([[[-40.0, -200.0, 150.0], [300.0, 200.0, 3000.0]]]), \
        np.array([[[60.0, 20.0, 95.0], [310.0, 190.0, 3010.0]]])
    cases = [(a, b, radius, 1), (extra_a, extra_b, np.array([[30.0, 4.0]]), 1), (extra_a, extra_b, np.array([[30.0, 4.0]]), 4)]
    for ca, cb, cr, step in cases:
        height, width = 480 // step, 640 // step
        culled = render.render_capsules(ca, cb, cr, height, width, step, camera=NYU.camera)
        with monkeypatch.context() as patch:
            patch.setattr(render, "_reach_px", lambda a, b, r: np.full(len(r), np.inf))
            whole = render.render_capsules(ca, cb, cr, height, width, step, camera=NYU.camera)
        assert (whole > 0).sum() > 100 and np.array_equal(culled, whole)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (2, 3), (5, 5), (37, 52)])
@pytest.mark.parametrize("size", [3, 5, 7])
def test_square_filter_is_scipys(shape, size):
    from scipy import ndimage
    from murauer_dist.frames.procedural.sensor import square_filter
    rng = np.random.default_rng(size)
    values, mask = (rng.random(shape) * 1000).astype(np.float32), rng.random(shape) > 0.8
    assert np.array_equal(square_filter(values, size, np.maximum), ndimage.maximum_filter(values, size))
    assert np.array_equal(square_filter(values, size, np.minimum), ndimage.minimum_filter(values, size))
    assert np.array_equal(square_filter(mask, size), ndimage.maximum_filter(mask, size))


def test_png_writer_gives_nyus_pixels(dataset):
    """The generator's own PNG writer: NYU's layout (8-bit RGB, depth in G and B), read back exactly by
    Pillow, for the whole uint16 range."""
    from PIL import Image
    from murauer_dist.frames.nyu import decode_depth_png, encode_depth_png
    from murauer_dist.frames.procedural.png import encode_depth_png as fast_png
    depth = np.random.default_rng(0).integers(0, 65536, (48, 64)).astype(np.uint16)
    depth[:4] = 0
    assert np.array_equal(decode_depth_png(fast_png(depth), "nyu-rgb"), depth)
    assert np.array_equal(decode_depth_png(fast_png(depth), "nyu-rgb"), decode_depth_png(encode_depth_png(depth, "nyu-rgb"), "nyu-rgb"))
    real = NyuSplit(dataset, "train", NYU).depth_path(0, 1, "real")
    with Image.open(real) as image:
        assert image.mode == "RGB" and image.size == (640, 480)
        assert not np.asarray(image)[..., 0].any()


def test_progress_lines_when_not_a_terminal(tmp_path, capsys):
    synth_data(tmp_path / "data", frames_train=3, frames_test=1, seed=1, workers=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[synth-data]")]
    assert lines and lines[-1].startswith("[synth-data] 4/4 frames (100%)") and "frames/s" in lines[-1]

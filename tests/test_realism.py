"""Realism profiles of the procedural dataset: the default stays what it was; nyu-fit's parameters act."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from murauer_dist.frames.datasets import NYU
from murauer_dist import geometry
from murauer_dist.frames.nyu import NyuSplit
from murauer_dist.frames.procedural import hand, realism, render
from murauer_dist.frames.procedural.frames import ACTORS, FrameRenderer, GeneratorSettings, make_split_sequence
from murauer_dist.frames.procedural.generate import SynthDataError, synth_data

CUBE, CROP = 300.0, 128
FIT = realism.PROFILES["nyu-fit"]

# Files of `synth_data(frames_train=6, frames_test=4, seed=3)` of the default profile, pinned. The
# synthetic twins are the same bytes as before realism profiles existed; the real frames and the labels
# changed when the actors' thicknesses and the sensor's strengths went back to sourced values
# (docs/data.md, "Sources": the thenar pad joint follows the palm's thickness).
DEFAULT_SHA256 = {
    "procedural.json": "4593425d670cd60b6af1cff49bd850e94b304e18598c27cd23fe16778b552932",
    "train/joint_data.mat": "652c425308a808a7e0c4160624e773fb4a1023c931a6d02081e39b9a0d47aea9",
    "test/joint_data.mat": "c39ef527526e15f387ff410d8de0e13bc821a6d1b98eef8575a14f3b4f317de8",
    "train/depth_1_0000001.png": "5b419f334b688d4efde2e2125611a0db29f138be9b157480c59655a573164595",
    "train/synthdepth_1_0000001.png": "57415114278c9594985bfe6db5a7498bdfb319b24ebdf218d4942c6fee449905",
    "test/depth_2_0000003.png": "d5acfad55f05fa634a330dc46edeb13cbd3f4bc3e4912bba23d5db489bb32d75",
    "test/synthdepth_3_0000002.png": "c70b6af39fcd650c67e903a42d5fa8e6fcf142d84ff7a620abc4d44727f52cc1",
}


def digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyu-fit") / "data"
    synth_data(root, frames_train=4, frames_test=2, seed=5, workers=1, progress=False, realism="nyu-fit")
    return root


def test_default_profile_keeps_its_frames_and_splits_the_test_actors(tmp_path):
    synth_data(tmp_path / "a", frames_train=6, frames_test=4, seed=3, workers=1, progress=False)
    synth_data(tmp_path / "b", frames_train=6, frames_test=4, seed=3, workers=1, progress=False, realism="default")
    made = digest(tmp_path / "a")
    assert {name: made[name] for name in DEFAULT_SHA256} == DEFAULT_SHA256
    assert digest(tmp_path / "b") == made
    record = json.loads((tmp_path / "a" / "procedural.json").read_text())
    assert "realism" not in record and record["test_subject_split"] == round(0.3 * 4) == 1


def test_profile_is_recorded_and_unknown_names_write_nothing(fitted, tmp_path):
    record = json.loads((fitted / "procedural.json").read_text())["realism"]
    assert record == FIT.to_dict() and record["name"] == "nyu-fit"
    with pytest.raises(SynthDataError, match="--realism"):
        synth_data(tmp_path / "out", frames_train=1, frames_test=1, progress=False, realism="nyu-exact")
    assert list(tmp_path.iterdir()) == []


def test_nyu_fit_same_bytes_with_one_and_two_workers(fitted, tmp_path):
    synth_data(tmp_path / "two", frames_train=4, frames_test=2, seed=5, workers=2, progress=False, realism="nyu-fit")
    assert digest(tmp_path / "two") == digest(fitted)


def test_fitting_error_has_the_configured_statistics():
    """Fitted minus true pose: stds and frame-to-frame correlation of the AR(1) fitting error."""
    settings = GeneratorSettings(realism=FIT)
    seq = make_split_sequence(0, "train", 3000, settings)
    again = make_split_sequence(0, "train", 3000, settings)
    assert all(np.array_equal(seq[key], again[key]) for key in seq)              # deterministic by seed
    default = make_split_sequence(0, "train", 3000, GeneratorSettings())
    assert all(np.array_equal(seq[key], default[key]) for key in default)        # the true poses are unchanged
    fitting = FIT.fitting
    d_angles = (seq["fit_angles"] - seq["angles"]).reshape(len(seq["angles"]), -1)
    free = (seq["angles"] > hand.ANGLE_LIMITS[..., 0] + 15).reshape(len(d_angles), -1) \
        & (seq["angles"] < hand.ANGLE_LIMITS[..., 1] - 15).reshape(len(d_angles), -1)
    assert abs(d_angles[free].std() / fitting.finger_deg - 1) < 0.15              # away from the joint limits
    d_rot = Rotation.from_matrix(np.swapaxes(seq["rotation"], 1, 2) @ seq["fit_rotation"]).as_rotvec()
    assert abs(np.degrees(d_rot).std() / fitting.global_deg - 1) < 0.15
    d_pos = seq["fit_position"] - seq["position"]
    assert abs(d_pos.std() / fitting.translation_mm - 1) < 0.15
    lag1 = np.mean([np.corrcoef(d_pos[:-1, k], d_pos[1:, k])[0, 1] for k in range(3)])
    assert abs(lag1 - fitting.correlation) < 0.05                                # temporally correlated


def test_labels_and_twin_are_at_the_fitted_pose(fitted):
    settings = GeneratorSettings(realism=FIT)
    seq = make_split_sequence(5, "train", 4, settings)
    renderer = FrameRenderer(5, "train", seq, settings, bank=np.zeros((4, 4)))
    labels = NyuSplit(fitted, "train", NYU).all_labels(1).xyz              # camera 1, y up (NYU)
    for index in range(4):
        true = renderer.posed(index, ACTORS["train"]).joints
        fit = renderer.posed(index, ACTORS["train"], fitted=True).joints
        assert np.allclose(labels[index], fit, atol=1e-6)
        error = np.linalg.norm(labels[index] - true, axis=1)
        assert 1.0 < error.mean() < 30.0                            # the labels miss the rendered hand


def test_twin_is_the_model_the_labels_come_from():
    """nyu-fit's synthetic twin is a render of the fitted model whose joints are the labels (as NYU's):
    the actor's proportions at the fitted pose, to float precision, and the stored twin image is that
    model drawn alone."""
    settings = GeneratorSettings(realism=FIT)
    seq = make_split_sequence(7, "test", 3, settings)
    renderer = FrameRenderer(7, "test", seq, settings)
    rig = settings.rig
    for index in range(3):
        frame, twin = renderer.render(index), renderer.twin(index)
        assert np.abs(renderer.camera_xyz(twin.joints) - frame["xyz"]).max() < 1e-9
        caps = twin.capsules
        alone = render.render_capsules(rig.to_camera(caps["a"], 1)[None], rig.to_camera(caps["b"], 1)[None],
                                       caps["radius"][None], camera=rig.camera)[0]
        assert np.array_equal(np.round(alone).astype(np.uint16), frame["synth"][0])
        template = renderer.camera_xyz(renderer.posed(index, hand.TEMPLATE, fitted=True).joints)
        assert np.linalg.norm(template - frame["xyz"], axis=-1).mean() > 1.0     # not the template hand


def pixels_far_from_palm(depth, labels, distance_mm):
    """In-cube pixels of a depth map farther than `distance_mm` from the labelled palm centre (3D)."""
    u, v = np.meshgrid(np.arange(depth.shape[1]), np.arange(depth.shape[0]))
    d = depth.astype(np.float64)
    cube = (d > 0) & (np.abs(d - labels.center_xyz[2]) <= CUBE / 2)
    xyz = geometry.uvd_to_xyz(np.stack([u[cube], v[cube], d[cube]], axis=-1), camera=NYU.camera)
    return int((np.linalg.norm(xyz - labels.center_xyz, axis=1) > distance_mm).sum())


def test_forearm_in_real_frames_short_wrist_in_twins(fitted):
    """The real frame shows the arm into the crop cube; the twin ends a stub beyond the wrist."""
    arm = FIT.forearm
    shape = ACTORS["train"]                                                        # the twin is the fitted actor
    stub = abs(hand._WRIST_Y) * shape.palm_length * shape.length + 6 + arm.twin_wrist_mm \
        + hand._FOREARM_RADIUS * shape.forearm_thickness                           # its wrist stub's far end
    beyond = max(shape.reach_mm(), stub) + 8.0                                     # plus the fitted-pose offset
    data = NyuSplit(fitted, "train", NYU)
    real = [pixels_far_from_palm(data.depth(i, 1, "real"), data.labels(i, 1), beyond) for i in range(len(data))]
    twin = [pixels_far_from_palm(data.depth(i, 1, "synth"), data.labels(i, 1), beyond) for i in range(len(data))]
    assert max(twin) == 0 and min(real) > 100, (real, twin)
    a, b, r = realism.forearm_capsules(np.zeros(3), np.array([0.0, -1.0, 0.0]), 20.0, arm, twin=False)
    assert r[0] < r[arm.pieces - 1] and max(r[:arm.pieces]) == pytest.approx(20.0 * arm.widening + arm.sleeve_mm, rel=0.1)
    assert b[-1][2] > 0                                                           # the upper arm goes back


def test_padding_draws_nothing_new():
    model = hand.pose_hand(hand.TEMPLATE, np.zeros((5, 4)), np.zeros(2))
    longer = hand.HandModel(model.joints, {k: np.concatenate([v, v[:3]]) for k, v in model.capsules.items()})
    short, padded = realism.pad_capsules([model, longer])
    assert len(short["radius"]) == len(padded["radius"])
    assert all(np.array_equal(short[k][-1], short[k][len(model.capsules["radius"]) - 1]) for k in short)


def test_config_choices_are_the_profiles():
    from murauer_dist.config import CHOICES, Config
    assert CHOICES["data.synth_realism"] == tuple(realism.PROFILES)
    assert Config().data.synth_realism == realism.DEFAULT_PROFILE


def test_workflow_refuses_a_dataset_made_with_another_profile(fitted, capsys):
    from murauer_dist.config import load_config
    from murauer_dist.errors import UserError
    from murauer_dist.recipes.workflow import ensure_dataset
    same = ["data.synth_frames_train=4", "data.synth_frames_test=2", "data.synth_seed=5", f"data.root={fitted}"]
    ensure_dataset(load_config("demo-cpu", same + ["data.synth_realism=nyu-fit"]))   # reused, nothing generated
    assert "using the dataset" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"realism profile 'nyu-fit'.*data\.synth_realism=default"):
        ensure_dataset(load_config("demo-cpu", same))


def test_workflow_refuses_a_dataset_made_with_other_profile_parameters(fitted, tmp_path):
    """The profile's parameters belong to the code version: data made with other magnitudes (an older
    generator) is not reused under the same profile name."""
    import shutil
    from murauer_dist.config import load_config
    from murauer_dist.errors import UserError
    from murauer_dist.recipes.workflow import ensure_dataset
    copy = tmp_path / "older"
    shutil.copytree(fitted, copy)
    record = json.loads((copy / "procedural.json").read_text())
    record["realism"]["fitting"]["finger_deg"] = 6.0
    (copy / "procedural.json").write_text(json.dumps(record))
    cfg = load_config("demo-cpu", ["data.synth_frames_train=4", "data.synth_frames_test=2", "data.synth_seed=5",
                                   f"data.root={copy}", "data.synth_realism=nyu-fit"])
    with pytest.raises(UserError, match=r"other parameters of the realism profile 'nyu-fit' \(fitting differ"):
        ensure_dataset(cfg)


@pytest.mark.parametrize("key, name, old", [("sensor", "noise_disparity", 0.7),
                                            ("actors", "train", {"finger_thickness": 1.35})])
def test_workflow_refuses_a_dataset_made_with_other_hand_or_sensor_parameters(fitted, tmp_path, key, name, old):
    """Data made by a generator whose sensor strengths or hand shapes were others (the values before they
    went back to sourced ones) is not reused: the message names the parameter and what to delete."""
    import shutil
    from murauer_dist.config import load_config
    from murauer_dist.errors import UserError
    from murauer_dist.recipes.workflow import ensure_dataset
    copy = tmp_path / "older"
    shutil.copytree(fitted, copy)
    record = json.loads((copy / "procedural.json").read_text())
    if isinstance(old, dict):
        record[key][name].update(old)
    else:
        record[key][name] = old
    (copy / "procedural.json").write_text(json.dumps(record))
    cfg = load_config("demo-cpu", ["data.synth_frames_train=4", "data.synth_frames_test=2", "data.synth_seed=5",
                                   f"data.root={copy}", "data.synth_realism=nyu-fit"])
    with pytest.raises(UserError, match=rf"other hand or sensor parameters \({key}\.{name} differ.*delete"):
        ensure_dataset(cfg)
    ensure_dataset(load_config("demo-cpu", ["data.synth_frames_train=4", "data.synth_frames_test=2",
                                            "data.synth_seed=5", f"data.root={fitted}", "data.synth_realism=nyu-fit"]))


def test_workflow_refuses_a_dataset_made_before_the_two_actor_test_split(tmp_path):
    """A default dataset whose record has no test_subject_split (one actor in every test frame) would be
    scored as one subject; the workflow stops and says what to delete, and deletes nothing itself."""
    from murauer_dist.config import load_config
    from murauer_dist.errors import UserError
    from murauer_dist.recipes.workflow import ensure_dataset
    root = tmp_path / "data"
    synth_data(root, frames_train=2, frames_test=4, seed=3, workers=1, progress=False)
    record = json.loads((root / "procedural.json").read_text())
    del record["test_subject_split"]
    (root / "procedural.json").write_text(json.dumps(record))
    before = digest(root)
    cfg = load_config("demo-cpu", ["data.synth_frames_train=2", "data.synth_frames_test=4", "data.synth_seed=3",
                                   f"data.root={root}"])
    with pytest.raises(UserError, match=r"procedural\.json: this dataset has one actor in every test frame, but "
                                        r"the generator makes the second actor from test frame 1.*delete"):
        ensure_dataset(cfg)
    assert digest(root) == before


def test_correlation_window_merges_close_fingers_and_drops_thin_far_structures():
    from murauer_dist.frames.procedural import sensor
    scale = 588.0 * 75.0
    depth = np.zeros((40, 40), dtype=np.float32)
    depth[5:35, 10:16] = 700.0                      # two fingers, 2 px apart
    depth[5:35, 18:24] = 700.0
    depth[5:35, 32:34] = 900.0                      # a 2 px wide structure further away
    off = sensor.correlation_window(depth, realism.StructuredLight(), scale)
    assert np.array_equal(off, depth)
    seen = sensor.correlation_window(depth, FIT.light, scale)
    assert np.allclose(seen[10:30, 16:18], 700.0, atol=1.0)          # the gap closed: one blob
    assert not seen[10:30, 32:34].any()                              # thinner than half the window: gone
    assert (seen[20] > 0).sum() > (depth[20, :30] > 0).sum()                  # fattened left and right
    median = sensor.correlation_window(depth, realism.StructuredLight(window_px=5), scale)
    assert median[5, 10] == 0 and median[34, 23] == 0 and median[20, 10] == 700  # corners round off


def test_fingers_shadow_the_palm_pixel_by_pixel():
    from murauer_dist.frames.procedural import sensor
    scale = 588.0 * 75.0
    depth = np.full((4, 60), 700.0, dtype=np.float32)                          # palm
    depth[:, 30:38] = 680.0                                                    # a finger on it
    unlit = sensor.occlusion_shadow(depth, scale)
    width = scale * (1 / 680.0 - 1 / 700.0)                                    # disparity difference, px
    assert 1 <= unlit[0].sum() <= int(np.ceil(width)) and unlit[:, 30 - int(np.ceil(width)):30].any()
    assert not unlit[:, 30:].any()                                             # shadow on one side only
    far = depth.copy()
    far[:, :30] = 2000.0                                                       # the finger over a far wall
    assert unlit.sum() < sensor.occlusion_shadow(far, scale).sum()             # wider shadow further away


def test_test_split_starts_with_the_training_actor(fitted, tmp_path):
    """Like NYU's test sequence: the first 30 % by the training actor, the rest by the second actor; the
    split frame is in procedural.json; make-shards records it in the test manifest for the evaluation."""
    split = json.loads((fitted / "procedural.json").read_text())["test_subject_split"]
    assert split == round(0.3 * 2) == 1
    xyz = NyuSplit(fitted, "test", NYU).all_labels(1).xyz
    middle = np.linalg.norm(np.diff(xyz[:, [17, 15, 13, 12]], axis=1), axis=-1).sum(axis=1)   # MCP..tip
    expected = {name: shape.phalanges()[2].sum() for name, shape in ACTORS.items()}
    assert middle[0] == pytest.approx(expected["train"], rel=1e-6)
    assert middle[1] == pytest.approx(expected["test"], rel=1e-6)
    from murauer_dist.frames.sources import source_rules, subject_split_of_manifest
    rules = source_rules(fitted, NYU)                  # the dataset's own record, not NYU's numbers
    assert (rules.test_subject_split, rules.second_actor_from, rules.swap_side_cameras_before) == (1, -1, 0)
    assert subject_split_of_manifest({"source": {"root": str(fitted), "test_subject_split": 1}}, NYU) == 1
    assert subject_split_of_manifest({"source": {"root": str(fitted)}}, NYU) == 1     # made before the record
    assert subject_split_of_manifest({"source": {"root": str(tmp_path / "gone")}}, NYU) is None


def test_data_report_measures_against_the_real_nyu_files(fitted, tmp_path):
    from murauer_dist.frames.report import data_report
    report = data_report(str(fitted), out=str(tmp_path / "report"), frames=2)
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"data-report.json", "data-report.md",
                                                                 "data-report.png"}
    assert report["realism"] == "nyu-fit" and report["test_frames_measured"] == 2
    assert report["crops"]["nyu_real"]["background_mm"] == 2001                 # NYU's background of that frame
    assert report["crops"]["procedural_synth"]["background_mm"] == 0            # the twin has no clutter
    coverage = report["pose_coverage"]
    assert coverage["10"]["poses"] == 4 and 10 < coverage["10"]["mean_mm"] < 200  # only 4 train frames here
    assert 0 < report["real_vs_twin"]["silhouette_xor"]["mean"] < 1
    assert 1.0 < report["label_noise"]["mean_mm"] < 30.0 and "Test labels vs the poses" in \
        (tmp_path / "report" / "data-report.md").read_text()
    side = report["crops"]["procedural_real_view"]                              # the view-prediction target
    assert side["hand_px"] > 100 and report["crops"]["procedural_synth_view"]["background_mm"] == 0
    compared = {row["statistic"]: row for row in report["nyu_comparison"]}
    assert set(compared) == set(report["crops"]["nyu_real"])                   # every statistic NYU's frame has
    background = compared["background_mm"]
    assert background["nyu"] == 2001 and background["verdict"] == \
        ("close" if abs(background["procedural"] - 2001) <= 0.25 * 2001 else "off")
    assert "| hand pixels | 5.08e+03 |" in (tmp_path / "report" / "data-report.md").read_text()


def test_correlation_window_is_scipys_median_up_to_the_tolerance():
    from scipy import ndimage
    from murauer_dist.frames.procedural import sensor
    scale = 588.0 * 75.0
    rng = np.random.default_rng(0)
    depth = 700.0 + np.cumsum(rng.normal(0, 0.3, (60, 80)), axis=1).astype(np.float32)   # a rough surface
    depth[20:40, 30:36] = 650.0                                                             # a finger
    depth[rng.random(depth.shape) < 0.02] = 0.0                                             # dropout
    light = realism.StructuredLight(window_px=5)
    seen = sensor.correlation_window(depth, light, scale)
    disparity = np.where(depth > 0, scale / np.maximum(depth, 1e-3), 0.0).astype(np.float32)
    reference = ndimage.median_filter(disparity, size=5, mode="nearest")
    got = np.where(seen > 0, scale / np.maximum(seen, 1e-3), 0.0)
    assert np.abs(got - reference).max() <= sensor.MEDIAN_TOLERANCE_PX + 1e-3
    assert np.allclose(seen[25:35, 31:35], 650.0)


def test_surface_model_fills_the_web_between_fingers_of_the_real_hand_only():
    from murauer_dist.frames.procedural import render
    angles = np.zeros((5, 4))
    angles[:, 1] = [12, 8, 0, 12, 0]                                # spread fingers
    def depth(surface):
        model = hand.transform(hand.pose_hand(hand.ACTOR_TRAIN, angles, np.zeros(2), surface=surface),
                               np.eye(3), np.array([0.0, 0.0, 600.0]))
        return render.render_capsules(model.capsules["a"][None], model.capsules["b"][None],
                                      model.capsules["radius"][None], camera=NYU.camera)[0]
    plain = depth(None)
    webbed = depth(lambda shape, joints: realism.surface_capsules(shape, joints, FIT.surface))
    assert ((plain > 0) & ~(webbed > 0)).sum() == 0                 # a union: nothing removed
    assert 200 < ((webbed > 0) & ~(plain > 0)).sum() < 0.2 * (plain > 0).sum()
    a, b, r = realism.surface_capsules(hand.ACTOR_TRAIN, np.zeros((36, 3)), FIT.surface)
    assert len(a) == len(b) == len(r) == 5                          # 3 webs, the thumb web, the thenar bulge


# ---- the poses the real frames show (frames/procedural/shown.py) -------------------------------------------

def test_shown_poses_are_the_true_ones_and_the_labels_those_in_joint_data(fitted):
    from murauer_dist.frames.procedural.shown import shown_poses
    poses = shown_poses(fitted, "train")
    stored = NyuSplit(fitted, "train", NYU).all_labels(1).xyz                 # what the dataset's files say
    assert np.allclose(poses["labels"], stored, atol=1e-3)
    settings = GeneratorSettings(realism=FIT)
    renderer = FrameRenderer(5, "train", make_split_sequence(5, "train", 4, settings), settings)
    for index in range(4):                    # camera 1 of the rig is the world frame, NYU's y is up
        assert np.allclose(poses["shown"][index], renderer.posed(index, ACTORS["train"]).joints, atol=1e-6)
    distance = np.linalg.norm(poses["shown"] - poses["labels"], axis=-1).mean()
    assert 1.0 < distance < 30.0
    test = shown_poses(fitted)                                           # the test split, two actors
    assert test["shown"].shape == NyuSplit(fitted, "test", NYU).all_labels(1).xyz.shape


def test_shown_poses_none_without_fitting_error_and_refused_for_other_labels(fitted, tmp_path):
    import shutil
    from scipy.io import loadmat, savemat
    from murauer_dist.frames.procedural.shown import ShownPoseError, shown_poses
    synth_data(tmp_path / "default", frames_train=1, frames_test=1, seed=1, workers=1, progress=False)
    assert shown_poses(tmp_path / "default") is None                     # labels are the shown poses
    assert shown_poses(tmp_path / "nothing") is None                     # no procedural.json: a real download
    copy = tmp_path / "moved"
    shutil.copytree(fitted, copy)
    mat = copy / "test" / "joint_data.mat"
    joints = loadmat(mat)
    joints["joint_xyz"][0, 0, 0, 0] += 1.0
    savemat(mat, {"joint_uvd": joints["joint_uvd"], "joint_xyz": joints["joint_xyz"]})
    with pytest.raises(ShownPoseError, match=r"test/joint_data.mat: labels differ .* by up to 1.00 mm"):
        shown_poses(copy)


def test_shown_pose_error_closed_forms():
    from murauer_dist.frames.procedural.shown import label_distance, shown_pose_error
    rng = np.random.default_rng(0)
    shown = rng.normal(0.0, 50.0, (5, 36, 3))
    labels = shown + np.array([3.0, 4.0, 0.0])                           # every joint 5 mm off
    poses, joints, frames = {"shown": shown, "labels": labels}, [0, 3, 6], np.array([1, 4])
    exact = shown_pose_error(shown[frames][:, joints], frames, poses, joints)
    assert exact == pytest.approx(0.0) and label_distance(poses, joints) == pytest.approx(np.full(5, 5.0))
    as_labels = shown_pose_error(labels[frames][:, joints], frames, poses, joints)
    assert as_labels == pytest.approx(5.0)

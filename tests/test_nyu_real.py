"""Against a real NYU test frame and the real ground truth."""
import numpy as np

from murauer_dist.frames.datasets import NYU
from murauer_dist import geometry as geo
from murauer_dist.frames import nyu


def test_real_frame_decodes_to_mm_and_joints_lie_on_the_hand(nyu_files, nyu_gt_uvd):
    depth = nyu.decode_depth_png(nyu_files / "test" / "depth_1_0000001.png", "nyu-rgb")
    assert depth.shape == (480, 640) and depth.dtype == np.uint16
    assert np.median(depth) == 2001            # NYU background of this frame
    joints = nyu_gt_uvd[0]
    at_joint = depth[np.floor(joints[:, 1]).astype(int), np.floor(joints[:, 0]).astype(int)].astype(float)
    in_front = joints[:, 2] - at_joint
    assert (in_front > 0).all() and (in_front < 40).all(), in_front


def test_real_frame_crop_contains_all_joints_with_background_plus_one(nyu_files, nyu_gt_uvd):
    depth = nyu.decode_depth_png(nyu_files / "test" / "depth_1_0000001.png", "nyu-rgb")
    joints_uvd = nyu_gt_uvd[0]
    center = joints_uvd[geo.CENTER_JOINT]
    window = geo.CropWindow.around(center, 300.0, 128, camera=NYU.camera)
    crop = geo.crop_depth(depth, window, frame="test/1")
    geo.check_crop(crop, center[2], 300.0, frame="test/1")
    xy = window.image_to_crop(joints_uvd[:, :2])
    assert ((xy >= 0) & (xy < 128)).all()
    norm = geo.normalize_depth(crop, center[2], 300.0)
    assert norm.min() >= -1 and norm.max() == 1.0
    assert norm[0, 0] == 1.0 and norm[-1, -1] == 1.0      # corners are background
    # each joint lands on a hand pixel of the crop
    at_joint = norm[np.floor(xy[:, 1]).astype(int), np.floor(xy[:, 0]).astype(int)]
    assert (at_joint < 1.0).all()
    xyz = geo.uvd_to_xyz(joints_uvd, camera=NYU.camera)
    target = geo.normalize_joints(xyz, xyz[geo.CENTER_JOINT], 300.0)
    np.testing.assert_allclose(geo.denormalize_joints(target, xyz[geo.CENTER_JOINT], 300.0), xyz, atol=1e-9)


def test_png_encoding_round_trip_is_exact():
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 65535, (480, 640)).astype(np.uint16)
    assert np.array_equal(nyu.decode_depth_png(nyu.encode_depth_png(depth, "nyu-rgb"), "nyu-rgb"), depth)


def test_missing_root_and_mat_name_the_path(tmp_path):
    import pytest
    with pytest.raises(nyu.LayoutError, match=str(tmp_path / "nope")):
        nyu.NyuSplit(tmp_path / "nope", "train", NYU)
    (tmp_path / "train").mkdir()
    with pytest.raises(nyu.LayoutError, match="joint_data.mat is missing"):
        nyu.NyuSplit(tmp_path, "train", NYU)


def test_mat_with_wrong_shape_is_rejected(tmp_path):
    import pytest
    import scipy.io
    (tmp_path / "test").mkdir()
    scipy.io.savemat(tmp_path / "test" / "joint_data.mat",
                     {"joint_uvd": np.zeros((3, 5, 14, 3)), "joint_xyz": np.zeros((3, 5, 14, 3))})
    split = nyu.NyuSplit(tmp_path, "test", NYU)
    with pytest.raises(nyu.LayoutError, match=r"shape \(3, 5, 14, 3\), expected \(3, N, 36, 3\)"):
        len(split)

import numpy as np
import pytest

from murauer_dist.frames.datasets import NYU
from murauer_dist import geometry as geo


def test_uvd_xyz_round_trip_and_closed_form():
    rng = np.random.default_rng(0)
    uvd = np.stack([rng.uniform(0, 640, 500), rng.uniform(0, 480, 500), rng.uniform(300, 1500, 500)], -1)
    xyz = geo.uvd_to_xyz(uvd, camera=NYU.camera)
    np.testing.assert_allclose(geo.xyz_to_uvd(xyz, camera=NYU.camera), uvd, rtol=0, atol=1e-9)
    # closed form: the principal point maps to the optical axis, y points up
    np.testing.assert_allclose(geo.uvd_to_xyz([320, 240, 800], camera=NYU.camera), [0, 0, 800])
    assert geo.uvd_to_xyz([320, 100, 800], camera=NYU.camera)[1] > 0
    np.testing.assert_allclose(geo.uvd_to_xyz([320 + 588.03, 240, 1000], camera=NYU.camera), [1000, 0, 1000])


def test_crop_window_matrix_matches_point_maps():
    win = geo.CropWindow.around((300.0, 200.0, 750.0), 300.0, 128, margin=1.625, camera=NYU.camera)
    pts = np.array([[300.0, 200.0], [310.5, 190.25], [250.0, 260.0]])
    hom = np.c_[pts, np.ones(len(pts))] @ win.matrix().T
    np.testing.assert_allclose(hom[:, :2], win.image_to_crop(pts))
    np.testing.assert_allclose(win.crop_to_image(win.image_to_crop(pts)), pts)
    np.testing.assert_allclose(win.image_to_crop(pts[:1]), [[64.0, 64.0]])
    # the cube spans crop_size / margin pixels: 300 mm at 750 mm is 2*150*fx/750 image pixels
    assert win.scale * 2 * 150 * geo.FX / 750 == pytest.approx(128 / 1.625)


def test_normalise_denormalise_targets_round_trip():
    rng = np.random.default_rng(1)
    center = np.array([10.0, -20.0, 700.0])
    joints = center + rng.uniform(-140, 140, (14, 3))
    target = geo.normalize_joints(joints, center, 300.0)
    assert np.abs(target).max() <= 1.0
    np.testing.assert_allclose(geo.denormalize_joints(target, center, 300.0), joints, atol=1e-9)
    # batched form with per-sample cubes
    t2 = geo.normalize_joints(joints[None].repeat(2, 0), center[None].repeat(2, 0), np.array([300.0, 249.9]))
    np.testing.assert_allclose(geo.denormalize_joints(t2, center[None].repeat(2, 0), np.array([300.0, 249.9]))[0], joints)


def test_normalize_depth_background_and_range():
    crop = np.array([[0, 700, 849], [851, 551, 549]], dtype=np.uint16)
    norm = geo.normalize_depth(crop, 700.0, 300.0)
    np.testing.assert_allclose(norm, [[1, 0, 149 / 150], [1, -149 / 150, 1]], atol=1e-6)


def test_crop_errors_name_the_frame():
    depth = np.zeros((480, 640), np.uint16)
    win = geo.CropWindow.around((700.0, 200.0, 700.0), 300.0, 64, camera=NYU.camera)
    with pytest.raises(geo.CropError, match="frame 17.*outside"):
        geo.crop_depth(depth, win, frame="17")
    inside = geo.CropWindow.around((320.0, 240.0, 700.0), 300.0, 64, camera=NYU.camera)
    crop = geo.crop_depth(depth, inside, frame="18")
    with pytest.raises(geo.CropError, match="frame 18.*valid depth pixels"):
        geo.check_crop(crop, 700.0, 300.0, frame="18")


def test_center_crop_of_stored_crop_equals_direct_crop():
    rng = np.random.default_rng(2)
    depth = rng.integers(1, 3000, (480, 640)).astype(np.uint16)
    center = (321.3, 233.7, 650.0)
    stored = geo.crop_depth(depth, geo.CropWindow.around(center, 300.0, 104, margin=1.625, camera=NYU.camera))
    direct = geo.crop_depth(depth, geo.CropWindow.around(center, 300.0, 64, camera=NYU.camera))
    # a stored crop has the output's pixel scale: its centre is exactly the direct crop
    assert geo.stored_size(64, 1.625) == 104
    assert np.array_equal(geo.center_crop(stored, 64), direct)


def test_test_cube_rule():
    assert geo.test_cube_mm(2440, 300.0, 249.9, 2441) == 300.0
    assert geo.test_cube_mm(2441, 300.0, 249.9, 2441) == 249.9
    assert geo.test_cube_mm(9999, 300.0, 249.9, -1) == 300.0

"""One inference path: `predict`, `evaluate --centre detected|refined` and a Predictor called directly (as
`bench infer` calls it) give the same joints for the same raw frames."""
from __future__ import annotations

import numpy as np

from murauer_dist.frames import nyu
from murauer_dist.frames.datasets import NYU
from murauer_dist.inference.centres import evaluate_centres_command
from murauer_dist.inference.checkpoints import load_pose, load_refiner
from murauer_dist.inference.predict import predict_command
from murauer_dist.inference.predictor import Predictor, apply_localize_overrides
from test_localize import setup  # noqa: F401  (the fixture: blob-hand shards, their raw frames, a run, a refiner)


def test_predict_evaluate_centre_and_the_predictor_give_the_same_joints(setup, tmp_path):  # noqa: F811
    run, root, refiner = str(setup["run"]), str(setup["root"]), str(setup["trained"]["path"])
    plain = predict_command(run, root, str(tmp_path / "plain"), overlays=0)
    refined = predict_command(run, root, str(tmp_path / "refined"), refiner=refiner, overlays=0)
    evaluate_centres_command(run, out=str(tmp_path / "eval"), centre="all", refiner=refiner, root=root)
    for mode, predicted in (("detected", plain), ("refined", refined)):
        assert np.loadtxt(tmp_path / "eval" / mode / "results_xyz.txt").shape == (6, 14 * 3)
        assert predicted["pred_xyz"].shape == (6, 14, 3)
        # the same text: the same frames, crop centres and joints to the digit
        assert ((tmp_path / "eval" / mode / "results_xyz.txt").read_text()
                == (tmp_path / ("plain" if mode == "detected" else "refined") / "results_xyz.txt").read_text())

    pose = load_pose(run)
    apply_localize_overrides(pose.config, [])
    split = nyu.NyuSplit(root, "test", NYU)
    depths = [split.depth(index, 1) for index in range(len(split))]
    predictor = Predictor.from_checkpoints(pose, load_refiner(refiner))
    found = predictor(depths)                                         # bench infer's call, torch backend
    np.testing.assert_array_equal(found.joints_xyz, refined["pred_xyz"])
    np.testing.assert_array_equal(found.centre_uvd, refined["centres_uvd"])
    at_detected = predictor.at_centres(depths, found.detected_xyz, refine=False)     # evaluate --centre detected
    np.testing.assert_array_equal(at_detected.joints_xyz, plain["pred_xyz"])
    uvd = np.loadtxt(tmp_path / "refined" / "results_uvd.txt").reshape(-1, 14, 3)
    np.testing.assert_allclose(found.joints_uvd, uvd, atol=1e-3)           # results_uvd.txt: 4 decimals

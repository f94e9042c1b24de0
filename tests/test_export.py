"""`murauer-dist export` and `bench infer`: exported files against torch on the CPU (inference/export.py).

The model is the `tiny` preset with random weights (BatchNorm statistics randomised too, so folding
them into the convolutions is checked); nothing is downloaded.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from murauer_dist.cli import main as cli_main
from murauer_dist.config import load_config, public_dict
from murauer_dist.errors import UserError
from murauer_dist.inference import export
from murauer_dist.inference.checkpoints import PoseCheckpoint, RefinerCheckpoint, load_inference, load_pose
from murauer_dist.models import build_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return model


def write_checkpoint(path, method: str = "murauer", seed: int = 0, *overrides: str):
    cfg = load_config("tiny", [f"train.method={method}", *overrides])
    model = randomise(build_model(cfg), seed)
    torch.save({"model": model.state_dict(), "config": public_dict(cfg), "stage": "main"}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "final-main.pt")


def reference(checkpoint_path, batch: torch.Tensor, mapped=None) -> np.ndarray:
    pose = load_pose(checkpoint_path)
    return pose.model.predict(batch, mapped=pose.mapped if mapped is None else mapped).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_torch_on_the_cpu(tmp_path, checkpoint, fmt):
    out = tmp_path / f"model{export.FORMATS[fmt]}"
    info = export.export_command(str(checkpoint), fmt=fmt, out=str(out))
    assert out.is_file() and info["mapped"] is True and info["path"] == "crop -> f -> m -> p"
    assert info["parity"]["max_abs_diff"] <= TOLERANCE
    for size in (1, 3, 64):                                   # dynamic batch: any size
        crops = export.example_crops(size, 32, seed=size)
        got = export.run_export(out, fmt, crops)
        expected = reference(checkpoint, crops)
        assert got.shape == (size, 14, 3)
        assert np.abs(got - expected).max() <= TOLERANCE
    sidecar = json.loads((tmp_path / f"{out.name}.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 1, 32, 32] and sidecar["output"]["shape"] == ["batch", 14, 3]
    assert sidecar["checkpoint"] == "final-main.pt" and "cube" in sidecar["output"]["meaning"]


def test_unmapped_method_exports_f_then_p(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "synth.pt", method="synth_only", seed=3)
    info = export.export_command(str(checkpoint), fmt="onnx", out=str(tmp_path / "synth.onnx"))
    assert info["mapped"] is False and info["path"] == "crop -> f -> p"
    crops = export.example_crops(4, 32, seed=9)
    got = export.run_export(tmp_path / "synth.onnx", "onnx", crops)
    assert np.abs(got - reference(checkpoint, crops, mapped=False)).max() <= TOLERANCE
    assert np.abs(got - reference(checkpoint, crops, mapped=True)).max() > 1e-3     # m really left out


def test_released_affine_mapping_exports(tmp_path):
    """Imported released models (murauer-dist import-original) have the affine mapping blocks."""
    checkpoint = write_checkpoint(tmp_path / "affine.pt", "murauer", 5, "model.released_affine_blocks=true")
    info = export.export_command(str(checkpoint), fmt="onnx", out=str(tmp_path / "affine.onnx"))
    crops = export.example_crops(6, 32, seed=2)
    assert info["parity"]["max_abs_diff"] <= TOLERANCE
    assert np.abs(export.run_export(tmp_path / "affine.onnx", "onnx", crops) - reference(checkpoint, crops)).max() \
        <= TOLERANCE


def test_fixed_batch_and_default_out(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "final-main.pt")
    info = export.export_command(str(checkpoint), fmt="onnx", batch="4")
    out = tmp_path / "final-main.onnx"
    assert out.is_file() and info["input"]["shape"][0] == 4
    session = export.ort_session(out)
    assert session.get_inputs()[0].shape == [4, 1, 32, 32]
    with pytest.raises(Exception):
        session.run(None, {"depth": export.example_crops(2, 32).numpy()})


def test_export_module_takes_any_network_and_example(tmp_path):
    """The function a second network (e.g. a hand-centre refiner) is exported with."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    randomise(net).eval()
    example = torch.randn(2, 1, 24, 24)
    for fmt in export.FORMATS:
        path = export.export_module(net, example, tmp_path / f"refiner{export.FORMATS[fmt]}", fmt)
        assert export.check_export(net, path, fmt, torch.randn(5, 1, 24, 24)) <= TOLERANCE


def test_bad_options_are_one_line_user_errors(tmp_path, checkpoint):
    with pytest.raises(UserError, match="--format must be one of onnx, torchscript"):
        export.export_command(str(checkpoint), fmt="tflite")
    with pytest.raises(UserError, match="--batch must be 'dynamic' or a positive integer"):
        export.export_command(str(checkpoint), fmt="onnx", batch="0")
    with pytest.raises(UserError, match="does not exist"):
        export.export_command(str(tmp_path / "missing.pt"), fmt="onnx")


def test_cli_dispatch(tmp_path, checkpoint, capsys):
    out = tmp_path / "cli.torchscript.pt"
    cli_main(["export", str(checkpoint), "--format", "torchscript", "--out", str(out)])
    assert out.is_file() and "max |torchscript - torch|" in capsys.readouterr().out


def test_bench_infer_rows_and_machine(tmp_path):
    from murauer_dist.bench import infer
    result = infer.main("tiny", "1,4", 1, 0.02, "", str(tmp_path / "infer.json"), 0, "localize.iterations=2", frames=8)
    saved = json.loads((tmp_path / "infer.json").read_text())
    assert {"cpu_model", "cpu_cores", "load_average_1min"} <= set(saved["machine"])
    assert [(r["backend"], r["batch"]) for r in saved["rows"]] == [
        (backend, size) for size in (1, 4) for backend in ("torch eager", "TorchScript", "ONNX Runtime")]
    for row in saved["rows"]:
        assert row["end_to_end_frames_per_s"] > 0 and row["network_frames_per_s"] > 0
        assert row["max_abs_diff_vs_eager"] <= TOLERANCE and row["refiner_max_abs_diff_vs_eager"] <= TOLERANCE
        assert min(row["centre_of_mass_ms_per_frame"], row["refiner_ms_per_frame"], row["pose_ms_per_frame"]) > 0
    localisation = saved["localisation"]
    assert localisation["pipeline"].startswith("centre of mass -> 2 refiner iteration(s)")
    assert localisation["full_resolution_centre_ms_per_frame"] > localisation["centre_of_mass_ms_per_frame"] > 0
    assert saved["frames"]["used"] + saved["frames"]["left_out"] == 8 and saved["frames"]["used"] > 0
    assert result["rows"] == saved["rows"]

def write_refiner(path, seed: int = 0):
    """A centre refiner checkpoint of the tiny preset (32x32 crops) with random weights."""
    from murauer_dist.inference.refiner import build_refiner, save_refiner
    cfg = load_config("tiny")
    model = randomise(build_refiner(cfg), seed)
    return save_refiner(path, model, public_dict(cfg), 250.0, "nyu", 60, {"val_centre_error_after_mm": 12.0})


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_refiner_export_matches_torch_and_refines_the_same(tmp_path, fmt):
    from murauer_dist.frames.datasets import NYU
    from murauer_dist.inference.checkpoints import load_refiner
    from murauer_dist.inference.refiner import refine_centres
    from murauer_dist.geometry import uvd_to_xyz
    checkpoint = write_refiner(tmp_path / "refiner.pt")
    info = export.export_command(str(checkpoint), fmt=fmt)            # recognised as a refiner by its format
    out = tmp_path / f"refiner{export.FORMATS[fmt]}"
    assert out.is_file() and info["network"] == "centre refiner"
    assert info["parity"]["batch_sizes"] == [1, 5] and info["parity"]["max_abs_diff"] <= TOLERANCE
    refiner = load_refiner(checkpoint)
    for size in (1, 5, 64):
        crops = export.example_crops(size, 32, seed=size)
        got = export.run_export(out, fmt, crops)
        with torch.inference_mode():
            expected = refiner.model(crops).numpy()
        assert got.shape == (size, 3) and np.abs(got - expected).max() <= TOLERANCE
    sidecar = json.loads((tmp_path / f"{out.name}.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 1, 32, 32] and sidecar["output"]["shape"] == ["batch", 3]
    assert sidecar["output"]["name"] == "offset" and "cube/2" in sidecar["output"]["meaning"]
    assert sidecar["iterations"] == load_config(None).localize.iterations and sidecar["cube_mm"] == 250.0
    # applied as the sidecar says, the file moves centres as the torch refiner does
    rows, cols = np.mgrid[0:480, 0:640]
    frame = np.where((cols - 330) ** 2 + (rows - 250) ** 2 < 40 ** 2, 700, 1800).astype(np.uint16)
    starts = uvd_to_xyz(np.array([[320.0, 240.0, 720.0], [345.0, 260.0, 690.0]]), NYU.camera)
    if fmt == "onnx":
        session = export.ort_session(out)
        offsets = lambda crops: session.run(None, {"depth": crops})[0]          # noqa: E731
    else:
        with export._quiet_deprecations():
            scripted = torch.jit.load(str(out))
        offsets = lambda crops: scripted(torch.from_numpy(crops)).numpy()      # noqa: E731
    moved = refine_centres(refiner, [frame, frame], starts, NYU.camera, sidecar["iterations"], offsets=offsets)
    reference = refine_centres(refiner, [frame, frame], starts, NYU.camera, sidecar["iterations"])
    assert np.abs(moved - reference).max() < 1e-2 and np.abs(moved - starts).max() > 1e-3


def test_pose_checkpoint_is_not_taken_for_a_refiner(tmp_path, checkpoint):
    assert isinstance(load_inference(checkpoint), PoseCheckpoint)                # by the file's format field
    assert isinstance(load_inference(write_refiner(tmp_path / "r.pt")), RefinerCheckpoint)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a checkpoint"):
        load_inference(tmp_path / "junk.pt")

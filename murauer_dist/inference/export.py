"""`murauer-dist export`: the inference path of a checkpoint as an ONNX or TorchScript file.

What is exported is the path evaluation runs on real images: normalised depth crop (B, 1, S, S)
-> f -> m -> p -> normalised joints (B, J, 3), or f -> p for a model whose method never trained the
mapping (the checkpoint's `mapped`, as inference/checkpoints.py `load_inference` returns it). Crop and de-normalisation
stay outside the file (docs/method.md §2): the input is `(d - z_c) / (cube/2)` with background +1,
the output `(xyz - centre) / (cube/2)`, so `xyz = joints * cube/2 + centre`. A JSON file beside the
export (`OUT.json`) records these conventions, the crop size, the cube sizes, the joints and the
path.

`export_module(module, example, path, fmt)` exports any nn.Module that maps one tensor to one
tensor; `check_export` runs the exported file and compares it with the module in torch.

A centre refiner checkpoint (the file `murauer-dist train-refiner` writes; `load_inference` recognises
it by its format field) exports the same way: normalised crop (B, 1, C, C) around the current centre estimate, in
the refiner's own cube -> offset (B, 3) to the palm centre in units of cube/2, camera axes; the
new centre is `xyz + offset * cube/2`, applied `localize.iterations` times, each re-cropping around
the last estimate, starting from the closest object's centre of mass (localize/centre.py); the
Predictor (inference/predictor.py) runs both files that way.

ONNX uses torch's TorchScript-based exporter (`dynamo=False`), which needs only the `onnx`
package; checking an ONNX file needs `onnxruntime` (both: `pip install murauer_dist[export]`).
TorchScript files are traced and frozen (torch marks TorchScript as deprecated; ONNX is the format
to prefer for deployment).
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from murauer_dist.atomic import atomic_write_bytes, atomic_write_text
from murauer_dist.config import load_config
from murauer_dist.errors import UserError
from murauer_dist.frames.datasets import spec_of
from murauer_dist.inference.checkpoints import PoseCheckpoint, RefinerCheckpoint, load_inference
from murauer_dist.paths import output_file
from murauer_dist.train.checkpoint import resolve_checkpoint

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "depth", "joints"
REFINER_OUTPUT_NAME = "offset"
PARITY_TOLERANCE = 1e-4            # max |export - torch| on normalised joints that the check accepts


class ExportError(UserError):
    """An export that cannot be made (bad format or batch option, missing package)."""


class InferencePath(nn.Module):
    """Normalised real crop (B, 1, S, S) -> normalised joints (B, J, 3): f -> m -> p, or f -> p.

    The ReLU between m (or f) and p is the one MurauerModel.embed applies (docs/method.md §3.2).
    """

    def __init__(self, model: nn.Module, mapped: bool):
        super().__init__()
        self.encoder = model.encoder
        self.mapping = model.mapping if mapped else None
        self.pose_head = model.pose_head
        self.mapped = bool(mapped)

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        z = self.encoder(depth)
        if self.mapping is not None:
            z = self.mapping(z)
        return self.pose_head(torch.relu(z))["pose"]


def inference_path(model: nn.Module, mapped: bool) -> InferencePath:
    """The evaluation path of a MurauerModel as one module, in eval mode (BatchNorm running statistics)."""
    return InferencePath(model, mapped).eval()


def parse_batch(batch) -> int | None:
    """--batch: "dynamic" (None: any batch size) or a fixed positive batch size."""
    if batch is None or str(batch).strip().lower() == "dynamic":
        return None
    try:
        value = int(str(batch).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ExportError(f"export: --batch must be 'dynamic' or a positive integer, got {batch!r}")
    return value


def check_format(fmt: str) -> str:
    fmt = str(fmt).strip().lower()
    if fmt not in FORMATS:
        raise ExportError(f"export: --format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def require(package: str, what: str):
    """Import an optional package or raise an ExportError that says how to install it."""
    try:
        return __import__(package)
    except ImportError:
        raise ExportError(f"{what} needs the Python package {package!r}, which is not installed: "
                          "pip install 'murauer_dist[export]' (or the pins in requirements-cpu.txt)") from None


@contextlib.contextmanager
def _quiet_deprecations():
    """torch 2.9+ marks TorchScript and the TorchScript-based ONNX exporter as deprecated; both still work."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*TracerWarning.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def onnx_bytes(module: nn.Module, example: torch.Tensor, dynamic_batch: bool = True,
               input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME, opset: int = OPSET) -> bytes:
    """An ONNX model of `module` (one input, one output) as bytes."""
    require("onnx", "ONNX export")
    buffer = io.BytesIO()
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    with _quiet_deprecations(), torch.no_grad():
        torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, input_names=[input_name],
                          output_names=[output_name], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
    return buffer.getvalue()


def torchscript_module(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """`module` traced on `example` and frozen (BatchNorm folded where torch can). A traced module takes
    any batch size when the module has no batch-dependent Python control flow (MURAUER's has none)."""
    with _quiet_deprecations(), torch.no_grad():
        traced = torch.jit.trace(module.eval(), (example,), check_trace=False)
        return torch.jit.freeze(traced.eval())


def torchscript_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with _quiet_deprecations():
        torch.jit.save(torchscript_module(module, example), buffer)
    return buffer.getvalue()


def export_module(module: nn.Module, example: torch.Tensor, path: str | Path, fmt: str,
                  dynamic_batch: bool = True, output_name: str = OUTPUT_NAME) -> Path:
    """Write `module` (eval mode; one tensor in, one tensor out) as `fmt` to `path`, atomically."""
    fmt = check_format(fmt)
    data = (onnx_bytes(module, example, dynamic_batch=dynamic_batch, output_name=output_name) if fmt == "onnx"
            else torchscript_bytes(module, example))
    atomic_write_bytes(path, data)
    return Path(path)


def ort_session(path: str | Path, threads: int = 0, spin: bool = True):
    """An onnxruntime CPU session for an exported file (threads 0: onnxruntime's default).

    spin=False: its worker threads sleep between runs instead of spinning, so that other work in the
    process (torch, the crop) gets the cores (onnxruntime spins by default)."""
    ort = require("onnxruntime", "Running an ONNX file")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_export(path: str | Path, fmt: str, batch: torch.Tensor) -> np.ndarray:
    """The exported file's output for `batch`, in a fresh runtime (onnxruntime, or torch.jit.load)."""
    fmt = check_format(fmt)
    if fmt == "onnx":
        session = ort_session(path)
        name = session.get_inputs()[0].name
        return session.run(None, {name: batch.detach().cpu().numpy().astype(np.float32)})[0]
    with _quiet_deprecations(), torch.inference_mode():
        return torch.jit.load(str(path), map_location="cpu")(batch).cpu().numpy()


def check_export(module: nn.Module, path: str | Path, fmt: str, batch: torch.Tensor) -> float:
    """max |exported - torch| over the output for `batch` (module in eval mode, on the CPU)."""
    with torch.inference_mode():
        expected = module.eval()(batch).cpu().numpy()
    got = run_export(path, fmt, batch)
    if got.shape != expected.shape:
        raise ExportError(f"export check: {path} gives shape {got.shape}, torch gives {expected.shape}")
    return float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())


def example_crops(batch: int, crop_size: int, seed: int = 0) -> torch.Tensor:
    """Depth-crop-like inputs: background +1 with a hand-sized blob of values in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    crops = torch.ones(batch, 1, crop_size, crop_size)
    side = max(2, crop_size // 2)
    start = (crop_size - side) // 2
    crops[:, :, start:start + side, start:start + side] = torch.rand(batch, 1, side, side, generator=generator) * 2 - 1
    return crops


def default_out(checkpoint_file: Path, fmt: str) -> Path:
    """CHECKPOINT_DIR/NAME.onnx or NAME.torchscript.pt beside the checkpoint file."""
    return checkpoint_file.with_name(checkpoint_file.stem + FORMATS[fmt])


def _default_note(out: str) -> str:
    """What error messages add to the output path when --out was not given."""
    return "" if out else "the default: beside the checkpoint"


def describe_export(cfg, mapped: bool, fmt: str, fixed_batch: int | None, checkpoint_name: str) -> dict:
    """What a user of the exported file needs: input/output conventions, crop and cube, joints."""
    info = {"format": fmt, "checkpoint": checkpoint_name, "method": cfg.train.method,
            "path": "crop -> f -> m -> p" if mapped else "crop -> f -> p", "mapped": bool(mapped),
            "input": {"name": INPUT_NAME, "shape": [fixed_batch or "batch", 1, cfg.data.crop_size, cfg.data.crop_size],
                      "dtype": "float32",
                      "meaning": "depth crop normalised to (d - z_c) / (cube/2), background and depth outside the "
                                 "cube +1 (docs/method.md, section 2)"},
            "output": {"name": OUTPUT_NAME, "shape": [fixed_batch or "batch", cfg.model.num_joints, 3],
                       "dtype": "float32",
                       "meaning": "joints (xyz - centre) / (cube/2); xyz in mm = joints * cube/2 + centre"},
            "crop_size": cfg.data.crop_size, "dataset": cfg.data.dataset}
    for key in ("cube_mm", "second_actor_cube_mm", "second_actor_from"):
        if hasattr(cfg.data, key):
            info[key] = getattr(cfg.data, key)
    try:
        info["joint_labels"] = list(spec_of(cfg).joints.labels)
    except (ImportError, AttributeError, KeyError, ValueError):
        pass
    return info


def export_command(checkpoint: str, fmt: str = "onnx", out: str = "", batch="dynamic",
                   check: bool = True) -> dict:
    """Export CHECKPOINT's inference path, or a centre refiner checkpoint's network; returns the
    description written to OUT.json (with the parity)."""
    fmt = check_format(fmt)
    fixed = parse_batch(batch)
    if fmt == "onnx":
        require("onnx", "ONNX export")
    source = resolve_checkpoint(checkpoint)
    path = output_file(Path(out) if out else default_out(Path(source), fmt), "export --out", _default_note(out))
    loaded = load_inference(source, "cpu")
    if isinstance(loaded, RefinerCheckpoint):
        return export_refiner(loaded, path, fmt, fixed, check)
    return export_pose(loaded, path, fmt, fixed, check)


def export_pose(pose: PoseCheckpoint, path: Path, fmt: str, fixed: int | None, check: bool) -> dict:
    """Export a pose network's inference path (crop -> f -> m -> p, or f -> p)."""
    info = describe_export(pose.config, pose.mapped, fmt, fixed, pose.path.name)
    return write_export(inference_path(pose.model, pose.mapped), pose.crop_size, path, fmt, fixed, check, info,
                        OUTPUT_NAME)


def write_export(module: nn.Module, crop_size: int, path: Path, fmt: str, fixed: int | None, check: bool,
                 info: dict, output_name: str) -> dict:
    """Export `module` (crops (B, 1, S, S) in), check it against torch on batches 1 and 5 (or the fixed
    batch) and write `info` with the parity to PATH.json; an ExportError past PARITY_TOLERANCE."""
    example = example_crops(fixed or 2, crop_size)
    export_module(module, example, path, fmt, dynamic_batch=fixed is None, output_name=output_name)
    if check:
        sizes = [fixed] if fixed else [1, 5]
        if fmt == "onnx" and not _has("onnxruntime"):
            info["parity"] = "not checked: onnxruntime is not installed"
        else:
            diff = max(check_export(module, path, fmt, example_crops(size, crop_size, seed=1)) for size in sizes)
            info["parity"] = {"max_abs_diff": diff, "batch_sizes": sizes, "tolerance": PARITY_TOLERANCE}
            if diff > PARITY_TOLERANCE:
                raise ExportError(f"export: {path} differs from torch by {diff:.2e} (> {PARITY_TOLERANCE:g}) on "
                                  f"its output ({output_name}); the file was written but should not be used")
    atomic_write_text(str(path) + ".json", json.dumps(info, indent=2) + "\n")
    parity = info.get("parity")
    parity_text = (f"max |{fmt} - torch| = {parity['max_abs_diff']:.2e} on batches {parity['batch_sizes']}"
                   if isinstance(parity, dict) else parity or "not checked")
    print(f"wrote {path} ({info['path']}, batch {fixed or 'dynamic'}, {path.stat().st_size / 1e6:.1f} MB); "
          f"{parity_text}; conventions in {path}.json")
    return info


# ---- the centre refiner ----------------------------------------------------------------------------

def describe_refiner_export(refiner, fmt: str, fixed: int | None, checkpoint_name: str, iterations: int) -> dict:
    """What a user of an exported refiner needs: input/output conventions, crop, cube, how to apply it."""
    batch = fixed or "batch"
    return {"format": fmt, "checkpoint": checkpoint_name, "network": "centre refiner",
            "path": "crop -> centre refiner -> offset",
            "input": {"name": INPUT_NAME, "shape": [batch, 1, refiner.crop_size, refiner.crop_size], "dtype": "float32",
                      "meaning": f"depth crop around the current centre estimate (u, v, z_c) in the refiner's cube "
                                 f"of {refiner.cube_mm:g} mm, normalised to (d - z_c) / (cube/2), background and depth "
                                 f"outside the cube +1 (docs/method.md, section 2)"},
            "output": {"name": REFINER_OUTPUT_NAME, "shape": [batch, 3], "dtype": "float32",
                       "meaning": "offset from the crop centre to the palm centre in units of cube/2, camera axes "
                                  "(x, y, z); new centre xyz in mm = centre xyz + offset * cube/2"},
            "apply": f"start from the closest object's centre of mass (murauer_dist/localize/centre.py); crop around "
                     f"the centre, run the network, move the centre by offset * cube/2; repeat `iterations` times, "
                     f"each re-cropping around the last estimate; a centre whose crop leaves the image keeps its last "
                     f"estimate. Then crop for the pose network around the result",
            "iterations": int(iterations), "crop_size": refiner.crop_size, "cube_mm": refiner.cube_mm,
            "dataset": refiner.dataset, "step": refiner.step, "metrics": refiner.metrics}


def export_refiner(refiner: RefinerCheckpoint, path: Path, fmt: str, fixed: int | None, check: bool) -> dict:
    """Export a centre refiner checkpoint's network; OUT.json says how to apply it (`iterations`: this
    version's localize.iterations, the number `predict` and `evaluate --centre` use)."""
    info = describe_refiner_export(refiner, fmt, fixed, refiner.path.name, load_config(None).localize.iterations)
    return write_export(refiner.model, refiner.crop_size, path, fmt, fixed, check, info, REFINER_OUTPUT_NAME)


def _has(package: str) -> bool:
    try:
        __import__(package)
    except ImportError:
        return False
    return True

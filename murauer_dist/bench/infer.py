"""`murauer-dist bench infer [--preset demo-cpu] [--batches 1,64] [--repeats 5] [--threads N] [--checkpoint C] [--out FILE]`:
inference throughput on the CPU, torch eager vs TorchScript vs ONNX Runtime.

Per backend and batch size, frames/s of the network alone (normalised crops in, normalised joints
out) and end to end: a 640x480 depth frame with a known hand centre -> crop (geometry.CropWindow,
crop_depth, normalize_depth) -> network -> joints in camera mm. Hand localisation is not included:
this version has no localisation module, so the crop centre is given (as in the NYU protocol, the
ground-truth palm centre); `LOCALISATION` below is where one plugs in.

The network is the preset's with random weights (seeded), or `--checkpoint`'s; its inference path
(crop -> f -> m -> p, or f -> p) is exported with murauer_dist/export.py into a temporary folder
and loaded back, so the TorchScript and ONNX rows measure the files a user deploys. Each repeat
measures every backend and batch size side by side for at least `--seconds`; the table shows the
median over the repeats, and the JSON also the parity of each export against eager torch. Every
backend runs with `--threads` threads (default: as many as the process may use). On a machine that
other jobs keep busy (load average above the core count), torch's thread pool loses much more than
onnxruntime's from sharing the cores; `--threads 1` shows what torch does without that.
"""
from __future__ import annotations

import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.machine import describe, machine, usable_cores
from murauer_dist.errors import UserError

WARMUP = 3
TARGET_FPS = 200.0            # end to end, demo network, batch 64, 2-core CPU
TARGET_BATCH = 64
FRAME_POOL = 64               # distinct frames cycled through
LOCALISATION = None           # a callable depth_mm (H, W) -> centre (u, v, d); None: the centre is given


def parse_batches(batches) -> list[int]:
    if isinstance(batches, int):
        return [batches]
    if isinstance(batches, (list, tuple)):
        values = [int(b) for b in batches]
    else:
        values = [int(b) for b in str(batches).replace("(", "").replace(")", "").split(",") if str(b).strip()]
    if not values or min(values) < 1:
        raise UserError(f"bench infer: --batches must be positive integers like '1,64', got {batches!r}")
    return values


def make_frames(count: int, seed: int = 0, width: int = 640, height: int = 480, fx: float = 588.03,
                ux: float = 320.0, uy: float = 240.0) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint16 depth frames (mm) of a wall, a torso and a hand of spheres, and each hand's centre (u, v, d)."""
    rng = np.random.default_rng(seed)
    frames = np.empty((count, height, width), dtype=np.uint16)
    centres = np.empty((count, 3))
    vv, uu = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    for index in range(count):
        depth = np.full((height, width), 1600.0, dtype=np.float32)
        torso = (np.abs(uu - width * 0.5) < width * 0.3) & (vv > height * 0.6)
        depth[torso] = 1150.0
        z = rng.uniform(550, 850)
        u, v = rng.uniform(width * 0.3, width * 0.7), rng.uniform(height * 0.3, height * 0.7)
        for du, dv, radius_mm in [(0, 0, 45)] + [(rng.uniform(-70, 70), rng.uniform(-70, 20), 12) for _ in range(10)]:
            cu, cv, r_px = u + du * fx / z, v + dv * fx / z, radius_mm * fx / z
            dist2 = ((uu - cu) ** 2 + (vv - cv) ** 2) / r_px ** 2
            inside = dist2 <= 1.0
            surface = z - radius_mm * np.sqrt(np.clip(1.0 - dist2, 0.0, 1.0))
            depth[inside] = np.minimum(depth[inside], surface[inside])
        frames[index] = np.round(depth).astype(np.uint16)
        centres[index] = (u, v, z)
    return frames, centres


def prepare(frames, centres, crop_size: int, cube_mm: float) -> np.ndarray:
    """Full frames (a sequence of (H, W) arrays in mm) and hand centres (u, v, d) -> normalised crops
    (B, 1, S, S) float32."""
    from murauer_dist import geometry
    crops = np.empty((len(frames), 1, crop_size, crop_size), dtype=np.float32)
    for index, (frame, centre) in enumerate(zip(frames, centres)):
        if LOCALISATION is not None:
            centre = LOCALISATION(frame)
        window = geometry.CropWindow.around(centre, cube_mm, crop_size)
        crops[index, 0] = geometry.normalize_depth(geometry.crop_depth(frame, window), centre[2], cube_mm)
    return crops


def to_mm(joints: np.ndarray, centres: np.ndarray, cube_mm: float) -> np.ndarray:
    """Normalised joints (B, J, 3) -> camera mm around each crop centre (u, v, d) (NYU camera)."""
    from murauer_dist import geometry
    return geometry.denormalize_joints(joints, geometry.uvd_to_xyz(centres), cube_mm)


def _backends(module, crop_size: int, folder: Path, threads: int) -> dict:
    """name -> callable float32 numpy (B, 1, S, S) -> numpy joints; the exports written to `folder`."""
    from murauer_dist import export

    def eager(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    backends, notes = {"torch eager": eager}, {}
    example = export.example_crops(2, crop_size)
    scripted_path = export.export_module(module, example, folder / "model.torchscript.pt", "torchscript")
    with export._quiet_deprecations():
        scripted = torch.jit.load(str(scripted_path), map_location="cpu")

    def torchscript(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return scripted(torch.from_numpy(batch)).numpy()

    backends["TorchScript"] = torchscript
    try:
        onnx_path = export.export_module(module, example, folder / "model.onnx", "onnx")
        session = export.ort_session(onnx_path, threads=threads, spin=False)   # do not starve the torch rows
        name = session.get_inputs()[0].name

        def onnxruntime(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {name: batch})[0]

        backends["ONNX Runtime"] = onnxruntime
    except export.ExportError as err:
        notes["ONNX Runtime"] = f"skipped: {err}"
    return backends, notes


def _time(function, seconds: float) -> tuple[int, float]:
    """(calls, elapsed) of calling `function` until at least `seconds` passed (at least twice)."""
    calls, start = 0, time.perf_counter()
    while True:
        function()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= 2 and elapsed >= seconds:
            return calls, elapsed


def main(preset: str = "demo-cpu", batches="1,64", repeats: int = 5, seconds: float = 0.5, checkpoint: str = "",
         out: str = "", threads: int = 0, *overrides: str) -> dict:
    from murauer_dist.config import load_config
    from murauer_dist.export import inference_path
    from murauer_dist.methods import uses_mapping
    from murauer_dist.models import build_model

    sizes = parse_batches(batches)
    threads = int(threads) or usable_cores()
    torch.set_num_threads(threads)
    if checkpoint:
        from murauer_dist.train.checkpoint import load_for_inference
        model, cfg, mapped = load_for_inference(checkpoint, "cpu")
        source = Path(checkpoint).name
    else:
        cfg = load_config(preset, overrides)
        torch.manual_seed(cfg.train.seed)
        model, mapped, source = build_model(cfg), uses_mapping(cfg.train.method, "main"), f"preset {preset}, random weights"
    module = inference_path(model, mapped)
    crop, cube = cfg.data.crop_size, float(cfg.data.cube_mm)
    frames, centres = make_frames(FRAME_POOL)
    host = machine()                                      # before the runs: the load of other jobs
    timings: dict = {}
    parity: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        backends, notes = _backends(module, crop, Path(tmp), threads)
        checked = prepare(frames[:8], centres[:8], crop, cube)
        reference = backends["torch eager"](checked)
        for name, run in backends.items():
            parity[name] = float(np.abs(run(checked) - reference).max())
        offsets = itertools.count()

        def next_frames(size: int) -> np.ndarray:
            """The next `size` frames of the pool (cycling), so end-to-end rows do not reuse one frame."""
            start = next(offsets) * size
            return (start + np.arange(size)) % FRAME_POOL

        def views(index: np.ndarray) -> list:
            return [frames[i] for i in index]             # no copy of the full frames

        def end_to_end(run, size: int) -> np.ndarray:
            index = next_frames(size)
            joints = run(prepare(views(index), centres[index], crop, cube))
            return to_mm(joints, centres[index], cube)

        ready = {}                                        # network-only rows: crops made once
        for size in sizes:
            index = next_frames(size)
            ready[size] = prepare(views(index), centres[index], crop, cube)
        for size in sizes:
            timings[("crop", size)] = []
            for name, run in backends.items():
                timings[(name, size)] = {"network": [], "end_to_end": []}
                for _ in range(WARMUP):
                    run(ready[size])
                    end_to_end(run, size)
        for _ in range(int(repeats)):                     # every row once per repeat, side by side
            for size in sizes:
                index = next_frames(size)
                calls, elapsed = _time(lambda: prepare(views(index), centres[index], crop, cube), seconds / 4)
                timings[("crop", size)].append(calls * size / elapsed)
                for name, run in backends.items():
                    calls, elapsed = _time(lambda: run(ready[size]), seconds)
                    timings[(name, size)]["network"].append(calls * size / elapsed)
                    calls, elapsed = _time(lambda: end_to_end(run, size), seconds)
                    timings[(name, size)]["end_to_end"].append(calls * size / elapsed)
    host_after = machine()
    rows = []
    for size in sizes:
        crop_rate = statistics.median(timings[("crop", size)])
        for name in backends:
            entry = timings[(name, size)]
            network, e2e = statistics.median(entry["network"]), statistics.median(entry["end_to_end"])
            rows.append({"backend": name, "batch": size, "network_frames_per_s": round(network, 1),
                         "end_to_end_frames_per_s": round(e2e, 1), "end_to_end_ms_per_batch": round(1e3 * size / e2e, 2),
                         "crop_frames_per_s": round(crop_rate, 1), "max_abs_diff_vs_eager": parity[name],
                         "repeats_frames_per_s": [round(v, 1) for v in entry["end_to_end"]]})
    at_target = [r for r in rows if r["batch"] == TARGET_BATCH]
    best = max(at_target, key=lambda r: r["end_to_end_frames_per_s"]) if at_target else None
    result = {"preset": preset if not checkpoint else None, "checkpoint": checkpoint or None, "model": source,
              "path": "crop -> f -> m -> p" if mapped else "crop -> f -> p", "crop_size": crop,
              "parameters": sum(p.numel() for p in module.parameters()),
              "localisation": "not included: no localisation module; crops use the given hand centre",
              "threads": threads, "repeats": int(repeats), "seconds_per_measurement": float(seconds),
              "machine": host, "load_average_1min_after": host_after["load_average_1min"], "rows": rows,
              "notes": notes, "torch": torch.__version__}
    try:
        import onnxruntime
        result["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        result["onnxruntime"] = None
    if best is not None:
        result["target"] = {"end_to_end_frames_per_s": TARGET_FPS, "batch": TARGET_BATCH,
                            "best_backend": best["backend"], "best_frames_per_s": best["end_to_end_frames_per_s"],
                            "met": best["end_to_end_frames_per_s"] >= TARGET_FPS}
    print(f"bench infer: {source}, {result['path']}, {crop}x{crop} crops, {result['parameters'] / 1e6:.2f} M "
          f"parameters, {threads} threads, median of {repeats} repeats")
    print(describe(host) + f" (after: {host_after['load_average_1min']})")
    print(f"end to end = 640x480 frame -> crop around the given hand centre -> network -> joints in mm "
          f"(localisation not included)")
    print(f"{'backend':13} {'batch':>5} {'network fr/s':>13} {'end-to-end fr/s':>16} {'ms/batch':>9} "
          f"{'crop fr/s':>10} {'max|diff|':>10}")
    for r in rows:
        print(f"{r['backend']:13} {r['batch']:5d} {r['network_frames_per_s']:13.1f} {r['end_to_end_frames_per_s']:16.1f} "
              f"{r['end_to_end_ms_per_batch']:9.2f} {r['crop_frames_per_s']:10.1f} {r['max_abs_diff_vs_eager']:10.1e}")
    for name, note in notes.items():
        print(f"{name}: {note}")
    if best is not None:
        print(f"target >= {TARGET_FPS:.0f} frames/s end to end at batch {TARGET_BATCH}: "
              f"{'met' if result['target']['met'] else 'NOT met'} (best: {best['backend']}, "
              f"{best['end_to_end_frames_per_s']:.1f} frames/s)")
    if out:
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result

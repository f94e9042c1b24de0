"""`murauer-dist bench infer [--preset demo-cpu] [--batches 1,64] [--repeats 5] [--threads N] [--checkpoint C]
[--refiner R] [--frames 64] [--out FILE]`: inference throughput on the CPU, torch eager vs TorchScript
vs ONNX Runtime, hand localisation included.

Per backend and batch size, frames/s of
  network alone: normalised crops in, normalised joints out;
  end to end: the Predictor of `predict` (inference/predictor.py) with the row's backend: a 640x480
    depth frame -> the closest object's centre of mass (localize/centre.py) -> the centre refiner,
    localize.iterations times (crop around the estimate, refiner network, move the centre;
    inference/refiner.py) -> crop around the refined centre -> pose network -> joints in camera mm.
The end-to-end time per frame is split into centre of mass, refiner (its crops and network) and
pose (crop, network, mm); the refiner runs in the row's backend. Each repeat also times the centre
of mass at full resolution (`full_resolution_centre`, the reference the block search is tested
against), so that the table shows what the block search saves on this machine, side by side.

Frames: `--frames` procedural test frames (murauer_dist/frames/procedural, realism profile "nyu-fit":
a forearm that leaves the image, a table under the hand in about a third of the scenes, structured-
light dropout, clutter) of the dataset's camera, cycled through; frames in which no hand is found
or whose crop leaves the image are left out (the JSON counts them). The network-only rows crop
around the labelled palm centre.

The pose network is the preset's with random weights (seeded), or `--checkpoint`'s; its inference
path (crop -> f -> m -> p, or f -> p) is exported with inference/export.py into a temporary
folder and loaded back, so the TorchScript and ONNX rows measure the files a user deploys. The
refiner is `--refiner`'s, or one of the preset's refiner architecture with random weights (the
same work per frame as a trained one), exported the same way. Each repeat measures every backend
and batch size side by side for at least `--seconds`; the table shows the median over the
repeats, and the JSON also the parity of each export against eager torch. Every backend runs with
`--threads` threads (default: as many as the process may use). On a machine that other jobs keep
busy (load average above the core count), torch's thread pool loses much more than onnxruntime's
from sharing the cores; `--threads 1` shows what torch does without that.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.machine import describe, machine
from murauer_dist.cores import usable_cores
from murauer_dist.config import load_config
from murauer_dist.errors import UserError
from murauer_dist.frames.datasets import spec_of
from murauer_dist.frames.procedural.frames import FrameRenderer, GeneratorSettings, make_split_sequence
from murauer_dist.frames.procedural.realism import PROFILES
from murauer_dist.geometry import CropError
from murauer_dist.inference import export
from murauer_dist.inference.checkpoints import RefinerCheckpoint, load_pose, load_refiner
from murauer_dist.inference.crops import frame_crops
from murauer_dist.inference.predictor import STAGES, Predictor, apply_localize_overrides
from murauer_dist.inference.refiner import build_refiner
from murauer_dist.localize.centre import CentreSettings, NoHandError, centre_of_mass, full_resolution_centre
from murauer_dist.methods import uses_mapping
from murauer_dist.models import build_model

WARMUP = 3
TARGET_FPS = 200.0            # end to end with localisation, demo network, batch 64, 2-core CPU
TARGET_BATCH = 64
FRAME_POOL = 64               # distinct frames cycled through
REALISM = "nyu-fit"           # the procedural profile with arms, tables and sensor dropout
REFERENCE_FRAMES = 8          # frames the full-resolution centre of mass is timed on, per repeat


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


def make_frames(count: int, dataset: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` procedural test frames of camera 1 (uint16 mm, REALISM profile) of `dataset` and their
    labelled palm centres (u, v, d)."""
    settings = GeneratorSettings.for_dataset(dataset, realism=PROFILES[REALISM])
    renderer = FrameRenderer(seed, "test", make_split_sequence(seed, "test", count, settings), settings)
    rendered = [renderer.render(index) for index in range(count)]
    centre = settings.spec.joints.center_source
    return np.stack([r["real"][0] for r in rendered]), np.stack([r["uvd"][0][centre] for r in rendered])


def crops_around(frames, centres_uvd: np.ndarray, crop_size: int, cube_mm: float, camera) -> np.ndarray:
    """Full frames (a sequence of (H, W) arrays in mm) and crop centres (u, v, d) -> normalised crops
    (B, 1, S, S) float32; a CropError when a crop leaves the image."""
    crops, usable = frame_crops(frames, centres_uvd, cube_mm, crop_size, camera)
    if not usable.all():
        raise CropError(f"bench infer: the crops of frames {np.flatnonzero(~usable).tolist()} leave the image")
    return crops[:, None]


class TimedPredictor:
    """One backend's Predictor over batches of frames; adds up each stage's seconds."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.reset()

    def __call__(self, frames) -> np.ndarray:
        """Joints (B, J, 3) in camera mm of the frames."""
        found = self.predictor(frames)
        for stage in STAGES:
            self.seconds[stage] += found.seconds[stage]
        self.frames += len(frames)
        return found.joints_xyz

    def reset(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.frames = 0

    def ms_per_frame(self) -> dict:
        return {stage: 1e3 * seconds / max(self.frames, 1) for stage, seconds in self.seconds.items()}


def _random_refiner(cfg) -> RefinerCheckpoint:
    """The preset's refiner architecture with seeded random weights, as inference/checkpoints.py loads one."""
    torch.manual_seed(cfg.refiner.seed)
    model = build_refiner(cfg).eval()
    return RefinerCheckpoint(model, cfg.data.crop_size, float(cfg.data.cube_mm), cfg.data.dataset,
                             Path("random weights"))


def _torch_runner(network):
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(batch)).numpy()
    return run


def _onnx_runner(session):
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def _backends(module, refiner_net, crop_size: int, refiner_crop: int, folder: Path, threads: int) -> tuple:
    """(name -> (pose, offsets): callables of float32 numpy crops (B, 1, S, S) -> numpy joints or centre
    offsets, notes); the exports written to `folder`."""
    backends = {"torch eager": (_torch_runner(module), _torch_runner(refiner_net))}
    notes = {}
    networks = {"model": (module, crop_size, export.OUTPUT_NAME),
                "refiner": (refiner_net, refiner_crop, export.REFINER_OUTPUT_NAME)}
    scripted = []
    for stem, (network, size, _) in networks.items():
        path = export.export_module(network, export.example_crops(2, size), folder / f"{stem}.torchscript.pt",
                                    "torchscript")
        with export._quiet_deprecations():
            scripted.append(_torch_runner(torch.jit.load(str(path), map_location="cpu")))
    backends["TorchScript"] = tuple(scripted)
    try:
        sessions = []
        for stem, (network, size, output) in networks.items():
            path = export.export_module(network, export.example_crops(2, size), folder / f"{stem}.onnx", "onnx",
                                        output_name=output)
            sessions.append(export.ort_session(path, threads=threads, spin=False))   # do not starve the torch rows
        backends["ONNX Runtime"] = tuple(_onnx_runner(session) for session in sessions)
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


def _usable_frames(frames, labels_uvd, check: Predictor) -> tuple[list[int], int]:
    """(indices of the frames the whole pipeline handles, how many it does not: no hand found, or a
    crop that leaves the image)."""
    kept = []
    for index in range(len(frames)):
        try:
            check([frames[index]])
            crops_around([frames[index]], labels_uvd[index:index + 1], check.crop_size, check.cube_mm, check.camera)
            kept.append(index)
        except (NoHandError, CropError):
            continue
    return kept, len(frames) - len(kept)


def _load_models(preset: str, checkpoint: str, refiner: str, overrides):
    """(pose inference module, its cfg, mapped, source text, RefinerCheckpoint) with localize settings
    from this version's defaults and the localize.KEY=VALUE overrides."""
    if checkpoint:
        pose = load_pose(checkpoint, "cpu")
        model, cfg, mapped = pose.model, pose.config, pose.mapped
        apply_localize_overrides(cfg, overrides)
        source = Path(checkpoint).name
    else:
        cfg = load_config(preset, overrides)
        torch.manual_seed(cfg.train.seed)
        model, mapped, source = build_model(cfg), uses_mapping(cfg.train.method, "main"), f"preset {preset}, random weights"
    if refiner:
        loaded = load_refiner(refiner, "cpu")
        loaded.check_fits(cfg.data.crop_size, cfg.data.dataset, f"the pose model ({source})")
    else:
        loaded = _random_refiner(cfg)
    return export.inference_path(model, mapped), cfg, mapped, source, loaded


def _parity(backends: dict, pool, labels_uvd, crop: int, cube: float, loaded: RefinerCheckpoint, camera) -> dict:
    """max |backend - torch eager| per backend: [pose network, refiner] on crops of 8 frames."""
    checked = crops_around(pool[:8], labels_uvd[:8], crop, cube, camera)
    refiner_checked = crops_around(pool[:8], labels_uvd[:8], loaded.crop_size, loaded.cube_mm, camera)
    reference = [run(batch) for run, batch in zip(backends["torch eager"], (checked, refiner_checked))]
    return {name: [float(np.abs(run(batch) - expected).max())
                   for run, batch, expected in zip(runs, (checked, refiner_checked), reference)]
            for name, runs in backends.items()}


def _measure(backends: dict, predictors: dict, pool, labels_uvd, sizes: list[int], repeats: int, seconds: float,
             camera, settings) -> dict:
    """Every row once per repeat, side by side: frames/s of the network alone and end to end, the stages'
    ms/frame, and the centre of mass at full resolution against the block search."""
    any_predictor = next(iter(predictors.values())).predictor
    crop, cube = any_predictor.crop_size, any_predictor.cube_mm
    offsets = itertools.count()

    def next_frames(size: int) -> list:
        """The next `size` frames of the pool (cycling), so end-to-end rows do not reuse one frame."""
        start = next(offsets) * size
        return [pool[i % len(pool)] for i in range(start, start + size)]

    ready, timings = {}, {}                               # network-only rows: crops made once
    for size in sizes:
        index = np.arange(size) % len(pool)
        ready[size] = crops_around([pool[i] for i in index], labels_uvd[index], crop, cube, camera)
    for size in sizes:
        for name, (pose, _) in backends.items():
            timings[(name, size)] = {"network": [], "end_to_end": [], "stages": []}
            for _ in range(WARMUP):
                pose(ready[size])
                predictors[name](next_frames(size))
    timings["full_resolution_centre"], timings["centre_of_mass"] = [], []
    for _ in range(int(repeats)):
        sample = next_frames(REFERENCE_FRAMES)
        for function in (full_resolution_centre, centre_of_mass):
            calls, elapsed = _time(lambda: [function(frame, camera, settings) for frame in sample], seconds / 4)
            timings[function.__name__].append(1e3 * elapsed / (calls * len(sample)))
        for size in sizes:
            for name, (pose, _) in backends.items():
                calls, elapsed = _time(lambda: pose(ready[size]), seconds)
                timings[(name, size)]["network"].append(calls * size / elapsed)
                predictors[name].reset()
                calls, elapsed = _time(lambda: predictors[name](next_frames(size)), seconds)
                timings[(name, size)]["end_to_end"].append(calls * size / elapsed)
                timings[(name, size)]["stages"].append(predictors[name].ms_per_frame())
    return timings


def _rows(timings: dict, sizes: list[int], backends: dict, parity: dict) -> list[dict]:
    rows = []
    for size in sizes:
        for name in backends:
            entry = timings[(name, size)]
            network, e2e = statistics.median(entry["network"]), statistics.median(entry["end_to_end"])
            stages = {stage: round(statistics.median(s[stage] for s in entry["stages"]), 3) for stage in STAGES}
            rows.append({"backend": name, "batch": size, "network_frames_per_s": round(network, 1),
                         "end_to_end_frames_per_s": round(e2e, 1), "end_to_end_ms_per_batch": round(1e3 * size / e2e, 2),
                         "centre_of_mass_ms_per_frame": stages["centre"], "refiner_ms_per_frame": stages["refiner"],
                         "pose_ms_per_frame": stages["pose"], "max_abs_diff_vs_eager": parity[name][0],
                         "refiner_max_abs_diff_vs_eager": parity[name][1],
                         "repeats_frames_per_s": [round(v, 1) for v in entry["end_to_end"]]})
    return rows


def _result(run: dict, timings: dict, rows: list[dict], notes: dict, host: dict, host_after: dict) -> dict:
    """The JSON of the benchmark; `run`: the setup (preset, checkpoint, source, mapped, cfg, module, loaded,
    refiner, settings, spec, pool size, left out, threads, repeats, seconds)."""
    fast_ms = statistics.median(timings["centre_of_mass"])
    full_ms = statistics.median(timings["full_resolution_centre"])
    loaded, crop, iterations = run["loaded"], run["cfg"].data.crop_size, int(run["cfg"].localize.iterations)
    result = {"preset": run["preset"] if not run["checkpoint"] else None, "checkpoint": run["checkpoint"] or None,
              "model": run["source"], "path": "crop -> f -> m -> p" if run["mapped"] else "crop -> f -> p",
              "crop_size": crop, "parameters": sum(p.numel() for p in run["module"].parameters()),
              "localisation": {"pipeline": f"centre of mass -> {iterations} refiner iteration(s) in the row's backend",
                               "refiner": str(run["refiner"]) if run["refiner"] else "preset architecture, random weights",
                               "refiner_parameters": sum(p.numel() for p in loaded.model.parameters()),
                               "refiner_crop_size": loaded.crop_size, "refiner_cube_mm": loaded.cube_mm,
                               "settings": dataclasses.asdict(run["settings"]),
                               "centre_of_mass_ms_per_frame": round(fast_ms, 3),
                               "full_resolution_centre_ms_per_frame": round(full_ms, 3),
                               "speedup": round(full_ms / fast_ms, 2)},
              "frames": {"source": f"procedural test frames, realism {REALISM}, dataset {run['spec'].name}",
                         "used": run["used"], "left_out": run["left_out"]},
              "threads": run["threads"], "repeats": int(run["repeats"]), "seconds_per_measurement": float(run["seconds"]),
              "machine": host, "load_average_1min_after": host_after["load_average_1min"], "rows": rows,
              "notes": notes, "torch": torch.__version__, "onnxruntime": _onnxruntime_version()}
    at_target = [r for r in rows if r["batch"] == TARGET_BATCH]
    if at_target:
        best = max(at_target, key=lambda r: r["end_to_end_frames_per_s"])
        result["target"] = {"end_to_end_frames_per_s": TARGET_FPS, "batch": TARGET_BATCH,
                            "best_backend": best["backend"], "best_frames_per_s": best["end_to_end_frames_per_s"],
                            "met": best["end_to_end_frames_per_s"] >= TARGET_FPS}
    return result


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime  # lazy: optional: onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def main(preset: str = "demo-cpu", batches="1,64", repeats: int = 5, seconds: float = 0.5, checkpoint: str = "",
         out: str = "", threads: int = 0, *overrides: str, refiner: str = "", frames: int = FRAME_POOL) -> dict:
    sizes = parse_batches(batches)
    if int(frames) < 1:
        raise UserError(f"bench infer: --frames must be a positive number of frames, got {frames!r}")
    threads = int(threads) or usable_cores()
    torch.set_num_threads(threads)
    module, cfg, mapped, source, loaded = _load_models(preset, checkpoint, refiner, overrides)
    spec = spec_of(cfg)
    camera, crop, cube = spec.camera, cfg.data.crop_size, float(cfg.data.cube_mm)
    settings, iterations = CentreSettings.from_config(cfg), int(cfg.localize.iterations)
    pool, labels_uvd = make_frames(int(frames), spec.name)
    host = machine()                                      # before the runs: the load of other jobs
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        backends, notes = _backends(module, loaded.model, crop, loaded.crop_size, Path(tmp), threads)
        predictors = {name: TimedPredictor(Predictor(pose, camera, crop, cube, settings, loaded, iterations, offsets))
                      for name, (pose, offsets) in backends.items()}
        kept, left_out = _usable_frames(pool, labels_uvd, predictors["torch eager"].predictor)
        if not kept:
            raise UserError(f"bench infer: the localisation found no usable hand in any of the {len(pool)} frames")
        pool, labels_uvd = [pool[i] for i in kept], labels_uvd[kept]
        parity = _parity(backends, pool, labels_uvd, crop, cube, loaded, camera)
        timings = _measure(backends, predictors, pool, labels_uvd, sizes, repeats, seconds, camera, settings)
    host_after = machine()
    run = {"preset": preset, "checkpoint": checkpoint, "source": source, "mapped": mapped, "cfg": cfg, "module": module,
           "loaded": loaded, "refiner": refiner, "settings": settings, "spec": spec, "used": len(pool),
           "left_out": left_out, "threads": threads, "repeats": repeats, "seconds": seconds}
    result = _result(run, timings, _rows(timings, sizes, backends, parity), notes, host, host_after)
    _print_table(result, source, iterations, threads, repeats, host, host_after)
    if out:
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    return result


def _print_table(result: dict, source: str, iterations: int, threads: int, repeats: int, host: dict,
                 host_after: dict) -> None:
    local = result["localisation"]
    print(f"bench infer: {source}, {result['path']}, {result['crop_size']}x{result['crop_size']} crops, "
          f"{result['parameters'] / 1e6:.2f} M parameters; refiner {local['refiner']} "
          f"({local['refiner_parameters'] / 1e6:.2f} M, {iterations} iteration(s)); {threads} threads, median of "
          f"{repeats} repeats; {result['frames']['used']} frames ({result['frames']['source']}, "
          f"{result['frames']['left_out']} left out)")
    print(describe(host) + f" (after: {host_after['load_average_1min']})")
    print("end to end = 640x480 frame -> centre of mass -> refiner x iterations -> crop -> network -> joints in mm; "
          "its ms/frame split into centre of mass, refiner (crops + network) and pose (crop + network + mm)")
    print(f"{'backend':13} {'batch':>5} {'network fr/s':>13} {'end-to-end fr/s':>16} {'ms/batch':>9} "
          f"{'centre ms':>10} {'refiner ms':>11} {'pose ms':>8} {'max|diff|':>10}")
    for r in result["rows"]:
        diff = max(r["max_abs_diff_vs_eager"], r["refiner_max_abs_diff_vs_eager"])
        print(f"{r['backend']:13} {r['batch']:5d} {r['network_frames_per_s']:13.1f} {r['end_to_end_frames_per_s']:16.1f} "
              f"{r['end_to_end_ms_per_batch']:9.2f} {r['centre_of_mass_ms_per_frame']:10.2f} "
              f"{r['refiner_ms_per_frame']:11.2f} {r['pose_ms_per_frame']:8.2f} {diff:10.1e}")
    print(f"centre of mass: {local['centre_of_mass_ms_per_frame']:.2f} ms/frame (block search); at full resolution "
          f"{local['full_resolution_centre_ms_per_frame']:.2f} ms/frame, {local['speedup']:.1f}x slower")
    for name, note in result["notes"].items():
        print(f"{name}: {note}")
    target = result.get("target")
    if target is not None:
        print(f"target >= {TARGET_FPS:.0f} frames/s end to end at batch {TARGET_BATCH}: "
              f"{'met' if target['met'] else 'NOT met'} (best: {target['best_backend']}, "
              f"{target['best_frames_per_s']:.1f} frames/s)")

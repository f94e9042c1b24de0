"""`murauer-dist evaluate RUN --centre gt|detected|refined|all [--refiner CKPT]`: the test protocol
under each way of finding the crop centre.

    gt        the protocol (docs/method.md §6.1): crops around the ground-truth palm centre, from the
              test shards (eval/evaluate.py, unchanged)
    detected  crops around the closest object's centre of mass (localize/centre.py) in the raw test frame
    refined   the centre of mass moved by the refiner (inference/refiner.py), localize.iterations times
    all       the three side by side (refined only with --refiner)

The shards hold crops around the ground-truth centre only, so detected and refined read the raw
camera-1 frames from the NYU-layout dataset the shards were cut from (the test manifest's source
root; else data.root; --root overrides) and crop them around their centre with the protocol's cube
per frame, through the Predictor (inference/predictor.py) that `predict` runs. They score the same frames as gt (the test shards' frames), against the same ground
truth. A frame without an object in view keeps the previous frame's centre, and a centre off the
image gives an all-background crop (both counted as failed, and scored).
Each mode writes the usual outputs (eval/evaluate.py write_evaluation) to its folder: RUN/eval,
RUN/eval-detected, RUN/eval-refined (or --out DIR/{gt,detected,refined} for `all`, --out DIR for one);
metrics.json gains `centre` (the mode) and `centre_error` (mm from the centre used to the
ground-truth palm joint). `all` also writes RUN/eval-centres.{md,json}: one table, the three side by side.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from murauer_dist.atomic import atomic_write_text
from murauer_dist.errors import UserError
from murauer_dist.frames.readers import open_split
from murauer_dist.batches.eval_loader import build_eval_loader
from murauer_dist.eval.evaluate import _shards_root, eval_dir, predict, subject_split_of, write_evaluation
from murauer_dist.inference.checkpoints import PoseCheckpoint, RefinerCheckpoint, load_pose, load_refiner
from murauer_dist.inference.predictor import Predictor, apply_localize_overrides, torch_pose
from murauer_dist.localize.centre import CentreSettings, NoHandError
from murauer_dist.paths import output_folder, what_is
from murauer_dist.shards.manifest import MANIFEST, read_manifest
from murauer_dist.tracking.progress import progress

CENTRES = ("gt", "detected", "refined")
EXAMPLES = 16                        # crops kept for the overlay grid
BATCH = 32
SHARD_SOURCE_TOL_MM = 0.05           # shard crop centre vs the raw dataset's label (float32 rounding)


class CentreEvaluationError(UserError, ValueError):
    """An option or dataset that `evaluate --centre` cannot use."""


def centre_error_stats(centres_xyz: np.ndarray, palm_xyz: np.ndarray) -> dict:
    """Distance statistics, and per camera axis (x, y, z = depth) the mean signed offset centre - palm
    (a bias, e.g. a centre placed too deep: z > 0) and the mean absolute offset."""
    offset = np.asarray(centres_xyz, dtype=np.float64) - np.asarray(palm_xyz, dtype=np.float64)
    error = np.linalg.norm(offset, axis=-1)
    return {"mean_mm": float(error.mean()), "median_mm": float(np.median(error)),
            "p90_mm": float(np.percentile(error, 90)), "max_mm": float(error.max()),
            "over_50mm": float((error > 50.0).mean()),
            "bias_xyz_mm": [float(v) for v in offset.mean(axis=0)],
            "abs_xyz_mm": [float(v) for v in np.abs(offset).mean(axis=0)]}


def source_root(cfg, root: str = "") -> Path:
    """The raw dataset of the test shards: --root, else the test manifest's source root, else data.root."""
    if root:
        return Path(root)
    manifest = Path(cfg.data.shards) / "test" / MANIFEST
    if manifest.is_file():
        recorded = (read_manifest(manifest.parent).get("source") or {}).get("root")
        if recorded and Path(recorded).is_dir():
            return Path(recorded)
    return Path(cfg.data.root)


def _open_test_split(cfg, root: Path, spec):
    try:
        return open_split(root, "test", spec)
    except UserError as err:
        raise CentreEvaluationError(f"evaluate --centre detected/refined reads the raw test frames the shards were made "
                                    f"from, but {err} (give that dataset with --root ROOT)") from err


def _check_same_source(split, frames: np.ndarray, shard_centres: np.ndarray, root: Path) -> None:
    """The raw dataset's palm centres must be the shards' crop centres (same frames, same labels)."""
    if len(split) <= int(frames.max()):
        raise CentreEvaluationError(f"{root}/test holds {len(split)} frames, but the test shards hold frame "
                                    f"{int(frames.max())}: the shards were not made from {root}; give their dataset "
                                    f"with --root ROOT")
    labels = split.all_labels(1).center_xyz[frames]
    worst = float(np.abs(labels - shard_centres).max())
    if worst > SHARD_SOURCE_TOL_MM:
        raise CentreEvaluationError(f"{root}/test: the palm centres of its frames differ from the test shards' crop "
                                    f"centres by up to {worst:.2f} mm: the shards were not made from {root}; give "
                                    f"their dataset with --root ROOT")


def detect_centres(predictor: Predictor, split, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closest object's centre of mass (N, 3) xyz of raw test frames, and which frames had none (N,)
    bool: those keep the previous frame's centre (the first one: the image centre at the median depth)."""
    centres, failed, previous = [], [], None
    for frame in progress(frames, total=len(frames), desc="detect centres"):
        depth = split.depth(int(frame), 1, "real")
        try:
            centre = predictor.detect(depth, frame=f"test/{int(frame)}").center_xyz
            failed.append(False)
        except NoHandError:
            if previous is None:
                z = float(np.median(depth[depth > 0])) if (depth > 0).any() else 600.0
                previous = np.array([0.0, 0.0, z])
            centre = previous
            failed.append(True)
        previous = centre
        centres.append(centre)
    return np.stack(centres), np.asarray(failed, bool)


def predict_at_centres(predictor: Predictor, split, frames: np.ndarray, centres_xyz: np.ndarray, cubes: np.ndarray,
                       desc: str = "evaluate") -> dict:
    """Poses of raw test frames cropped around `centres_xyz` (first moved by the predictor's refiner, if any).

    Returns pred_xyz (N, J, 3), centre_xyz (N, 3) (the centres used), off_image (N,) bool (no crop could be
    made: the crop is all background), examples (crops for the overlay grid).
    """
    count = len(frames)
    keep = set(np.unique(np.linspace(0, count - 1, min(EXAMPLES, count)).round().astype(int)).tolist())
    pred, used, off_image = [], [], []
    examples = {"depth": [], "frame": [], "center_xyz": [], "cube_mm": []}
    starts = range(0, count, BATCH)
    for start in progress(starts, total=len(starts), desc=desc):
        rows = list(range(start, min(start + BATCH, count)))
        depths = [split.depth(int(frames[row]), 1, "real") for row in rows]
        found = predictor.at_centres(depths, centres_xyz[rows], cubes[rows])      # off the image: background
        pred.append(found.joints_xyz)
        used.append(found.centre_xyz)
        off_image.extend(found.off_image.tolist())
        for row, crop, centre in zip(rows, found.crops, found.centre_xyz):
            if row in keep:
                examples["depth"].append(crop)
                examples["frame"].append(int(frames[row]))
                examples["center_xyz"].append(centre)
                examples["cube_mm"].append(float(cubes[row]))
    return {"pred_xyz": np.concatenate(pred), "centre_xyz": np.concatenate(used),
            "off_image": np.asarray(off_image, bool),
            "examples": {key: np.asarray(value) for key, value in examples.items()}}


def _out_dirs(run_dir: Path, out: str, modes: list[str]) -> dict[str, Path]:
    if out and len(modes) == 1:
        return {modes[0]: Path(out)}
    if out:
        return {mode: Path(out) / mode for mode in modes}
    return {mode: (eval_dir(run_dir) if mode == "gt" else run_dir / f"eval-{mode}") for mode in modes}


def format_centre_table(rows: dict[str, dict]) -> str:
    """Markdown table: per centre, frames, joint error and its ratio to gt (per test subject too, where
    the test split has two), centre error."""
    base = rows.get("gt", {})
    subjects = all(row.get("subject2_mean_error_mm") is not None for row in rows.values())

    def versus(row: dict, key: str) -> str:
        return f"{row[key] / base[key]:.3f}x" if base.get(key) else "-"
    header = "| centre | frames | mean joint error (mm) | vs gt |"
    if subjects:
        header += " subject 1 / 2 (mm) | subject 1 / 2 vs gt |"
    lines = [header + " median joint error (mm) | centre error mean / median / p90 (mm) | failed |",
             "|---" * (header.count("|") + 2) + "|"]
    for mode, row in rows.items():
        centre = row["centre_error"]
        line = f"| {mode} | {row['frames']} | {row['mean_error_mm']:.2f} | {versus(row, 'mean_error_mm')} |"
        if subjects:
            line += (f" {row['subject1_mean_error_mm']:.2f} / {row['subject2_mean_error_mm']:.2f} | "
                     f"{versus(row, 'subject1_mean_error_mm')} / {versus(row, 'subject2_mean_error_mm')} |")
        lines.append(line + f" {row['median_error_mm']:.2f} | {centre['mean_mm']:.1f} / {centre['median_mm']:.1f} / "
                            f"{centre['p90_mm']:.1f} | {row.get('failed', 0)} |")
    return "\n".join(lines) + "\n"


def _modes(checkpoint: str, centre: str, refiner: str) -> list[str]:
    """The centres to score; a CentreEvaluationError for an option that cannot be used."""
    choices = (*CENTRES, "all")
    if centre not in choices:
        raise CentreEvaluationError(f"evaluate: --centre must be one of {', '.join(choices)}, got {centre!r}")
    if centre == "refined" and not refiner:
        raise CentreEvaluationError("evaluate --centre refined needs --refiner REFINER_CKPT (written by "
                                    "`murauer-dist train-refiner PRESET`)")
    if not Path(checkpoint).exists():
        raise CentreEvaluationError(f"evaluate: checkpoint {checkpoint} {what_is(checkpoint)} (a checkpoint file or "
                                    f"a run folder)")
    modes = list(CENTRES if centre == "all" else (centre,))
    if centre == "all" and not refiner:
        modes.remove("refined")
    return modes


def _load(checkpoint: str, refiner: str, overrides, test_shards: str, batch: int,
          device) -> tuple[PoseCheckpoint, RefinerCheckpoint | None]:
    """The pose network (its config with the localize overrides, --test-shards and --batch) and the refiner."""
    pose = load_pose(checkpoint, device)
    cfg = pose.config
    apply_localize_overrides(cfg, overrides)
    if test_shards:
        cfg.data.shards = _shards_root(test_shards)
    if batch:
        cfg.loader.eval_batch = int(batch)
    loaded = None
    if refiner:
        loaded = load_refiner(refiner, device)
        loaded.check_fits(cfg.data.crop_size, cfg.data.dataset, f"pose model {checkpoint}")
    return pose, loaded


def _print_centre_error(mode: str, frames: int, centre_error: dict, failed: int) -> None:
    print(f"centre {mode}: {frames} frames, centre error mean {centre_error['mean_mm']:.1f} mm, median "
          f"{centre_error['median_mm']:.1f} mm, bias x/y/z "
          + "/".join(f"{v:+.1f}" for v in centre_error["bias_xyz_mm"]) + " mm, mean |x|/|y|/|z| "
          + "/".join(f"{v:.1f}" for v in centre_error["abs_xyz_mm"]) + " mm"
          + (f", {failed} without an object in view" if failed else ""))


def _write_table(results: dict[str, dict], out: str, run_dir: Path) -> None:
    """The modes side by side: OUT/centres.{md,json} or RUN/eval-centres.{md,json}."""
    table = format_centre_table(results)
    where = Path(out) if out else run_dir
    name = "centres" if out else "eval-centres"
    atomic_write_text(where / f"{name}.md", table)
    summary = {mode: {key: row[key] for key in ("frames", "mean_error_mm", "median_error_mm", "centre_error",
                                                "failed", "out") if key in row} for mode, row in results.items()}
    atomic_write_text(where / f"{name}.json", json.dumps(summary, indent=1) + "\n")
    print(table, end="")
    print(f"wrote {where / (name + '.md')} and {name}.json")


class _RawCentres:
    """detected and refined: the raw test frames, their centres of mass (found once) and the Predictor."""

    def __init__(self, cfg, root: str, spec, protocol: dict, predictor: Predictor):
        self.root = source_root(cfg, root)
        self.split = _open_test_split(cfg, self.root, spec)
        _check_same_source(self.split, protocol["frames"], protocol["center_xyz"], self.root)
        self.frames, self.cubes, self.predictor = protocol["frames"], protocol["cube_mm"], predictor
        self.detected, self.missed = detect_centres(predictor, self.split, self.frames)

    def predict(self, mode: str, refiner: RefinerCheckpoint | None) -> tuple[dict, int]:
        """(predict_at_centres of the detected centres, refined when `refiner` is given; frames failed)."""
        predictor = dataclasses.replace(self.predictor, refiner=refiner)
        found = predict_at_centres(predictor, self.split, self.frames, self.detected, self.cubes,
                                   desc=f"{mode} centres")
        return found, int((self.missed | found["off_image"]).sum())


def evaluate_centres_command(checkpoint: str, test_shards: str = "", out: str = "", batch: int = 0,
                             centre: str = "gt", refiner: str = "", root: str = "", overrides=()) -> dict:
    """Evaluate CHECKPOINT under the centre(s) `centre` (see the module doc); returns {mode: metrics}."""
    modes = _modes(checkpoint, centre, refiner)
    run_dir = Path(checkpoint).resolve() if Path(checkpoint).is_dir() else Path(checkpoint).resolve().parent
    output_folder(out or run_dir, "evaluate --out", "" if out else "the default: the run folder")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pose, loaded = _load(checkpoint, refiner, overrides, test_shards, batch, device)
    cfg = pose.config
    loader = build_eval_loader(cfg, "test", rank=0, world_size=1, device=device, domain="real")
    spec = loader.spec
    protocol = predict(pose.model, loader, device, mapped=pose.mapped)          # the gt centre, from the shards
    frames, gt_xyz = protocol["frames"], protocol["gt_xyz"]
    dirs = _out_dirs(run_dir, out, modes)
    info = {"checkpoint": str(checkpoint), "shards": cfg.data.shards, "method": cfg.train.method, "domain": "real",
            "mapped": pose.mapped}
    predictor = Predictor(torch_pose(pose, device), spec.camera, pose.crop_size, pose.cube_mm,
                          CentreSettings.from_config(cfg), None, int(cfg.localize.iterations))
    results: dict[str, dict] = {}
    raw, subject_split = None, subject_split_of(cfg, spec)
    for mode in modes:
        pred, centres, examples, failed, extra = protocol["pred_xyz"], protocol["center_xyz"], protocol["examples"], 0, {}
        if mode != "gt":
            raw = raw or _RawCentres(cfg, root, spec, protocol, predictor)
            found, failed = raw.predict(mode, loaded if mode == "refined" else None)
            pred, centres, examples = found["pred_xyz"], found["centre_xyz"], found["examples"]
            extra = {"raw_root": str(raw.root)}
            if mode == "refined":
                extra.update(refiner=str(refiner), iterations=cfg.localize.iterations)
        centre_error = centre_error_stats(centres, gt_xyz[:, spec.joints.center])
        _print_centre_error(mode, len(frames), centre_error, failed)
        metrics = write_evaluation(dirs[mode], pred, gt_xyz, examples, frames=frames,
                                   subject_split=subject_split, name=f"{Path(checkpoint).stem}-{mode}",
                                   spec=spec, info={**info, **extra, "centre": mode, "centre_error": centre_error,
                                                    "localize": vars(cfg.localize).copy(), "failed": failed})
        results[mode] = {**metrics, "centre_error": centre_error, "failed": failed, "out": str(dirs[mode])}
        print(f"wrote results_xyz.txt, results_uvd.txt, metrics.json and plots to {dirs[mode]}")
    if len(modes) > 1:
        _write_table(results, out, run_dir)
    return results

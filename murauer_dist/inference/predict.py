"""`murauer-dist predict CHECKPOINT INPUT --out DIR`: 3D hand poses of raw depth frames, no ground truth.

INPUT: raw depth frames (an NYU-layout folder, a folder of depth PNGs or a .npy stack), opened by
inference/frames_in.py. Per frame, the Predictor (inference/predictor.py): the
hand's centre (the closest object's centre of mass, localize/centre.py; then the refiner's
iterations when --refiner is given), the crop around it (the checkpoint's crop size and
data.cube_mm or --cube-mm), the pose (the path the model was trained for), de-normalised to
camera mm. DIR gets results_xyz.txt and results_uvd.txt (community layout, one line per frame),
frames.txt (the frame names, one per line: file names, or STEM_I for frame I of a .npy stack),
centres.txt (per frame: detected u v d, used u v d), overlays/NAME.png (predicted joints on the
frame; --overlays N evenly spaced frames, -1 all, 0 none) and, for more than one overlay,
animation.gif; skipped.txt lists the frames that were skipped: frames that cannot be read as depth
frames of the camera (always: cut short, not a PNG, another size; counted on stderr, the others are
predicted) and frames without a hand (with --skip-empty). The kind of a PNG folder is taken from its
first readable file.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from murauer_dist.atomic import atomic_write_bytes, atomic_write_text
from murauer_dist.eval.result_files import write_result_file
from murauer_dist.inference.checkpoints import PoseCheckpoint, load_pose, load_refiner
from murauer_dist.inference.frames_in import Frames, PredictError, UnreadableFrameError, open_frames
from murauer_dist.inference.overlays import overlay_rows, render_overlay, write_gif
from murauer_dist.inference.predictor import Predictor, apply_localize_overrides
from murauer_dist.localize.centre import NoHandError
from murauer_dist.paths import output_folder, what_is
from murauer_dist.tracking.progress import progress

BATCH = 32


@dataclass
class Collected:
    """What the batches gave, in frame order: the frames with a pose, and those skipped."""

    rows: list = field(default_factory=list)            # frame index of each pose
    detected_uvd: list = field(default_factory=list)    # the centre of mass
    used_uvd: list = field(default_factory=list)        # the crop centre (after the refiner)
    poses_xyz: list = field(default_factory=list)
    pngs: list = field(default_factory=list)            # (frame name, overlay PNG bytes)
    skipped: list = field(default_factory=list)         # "NAME: why" of frames without a hand or crop
    unreadable: list = field(default_factory=list)      # "NAME: why" of frames that cannot be read


def positive_number(value, option: str, zero_means_default: bool = False) -> float:
    """`value` as a finite float > 0 (0 too when it means "the default"); PredictError naming the option."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PredictError(f"predict: {option} must be a number, got {value!r}") from None
    if zero_means_default and number == 0:
        return 0.0
    if not math.isfinite(number) or number <= 0:
        raise PredictError(f"predict: {option} must be a finite number > 0{' (0: the default)' if zero_means_default else ''}, "
                           f"got {value}")
    return number


def _skip(err: Exception, name: str, skip_empty: bool, collected: Collected) -> None:
    """A frame without a hand (or crop): listed with --skip-empty, else the end of the command."""
    if not skip_empty:
        raise PredictError(f"{err} (--skip-empty writes the other frames and lists the skipped ones)") from err
    collected.skipped.append(f"{name}: {err}")


def _predict_batch(predictor: Predictor, frames: Frames, rows: list[int], skip_empty: bool, chosen: set[int],
                   bones, collected: Collected) -> None:
    """Read, localise and predict frames `rows`, adding what they give to `collected`."""
    good, depths, detections = [], [], []
    for row in rows:
        try:
            depth = frames.load(row)
        except UnreadableFrameError as err:
            collected.unreadable.append(f"{frames.names[row]}: {err}")
            continue
        try:
            detections.append(predictor.detect(depth, frame=frames.names[row]))
        except NoHandError as err:
            _skip(err, frames.names[row], skip_empty, collected)
            continue
        good.append(row)
        depths.append(depth)
    if not good:
        return
    found = predictor.at_centres(depths, np.stack([d.center_xyz for d in detections]), off_image="drop",
                                 names=[frames.names[row] for row in good])
    for index, err in found.errors.items():
        _skip(err, frames.names[good[index]], skip_empty, collected)
    joints_uvd, used_uvd = found.joints_uvd, found.centre_uvd
    for at, index in enumerate(found.rows):
        row, detected = good[index], detections[index].center_uvd
        collected.rows.append(row)
        collected.detected_uvd.append(detected)
        collected.used_uvd.append(used_uvd[at])
        collected.poses_xyz.append(found.joints_xyz[at])
        if row in chosen:
            zoom = 0.75 * predictor.cube_mm * predictor.camera.fx / max(float(used_uvd[at][2]), 1.0)   # 1.5 cubes
            collected.pngs.append((frames.names[row], render_overlay(depths[index], joints_uvd[at], detected,
                                                                     used_uvd[at], bones, frames.names[row], zoom)))


def _write_outputs(out_dir: Path, collected: Collected, frames: Frames, camera, fps: float) -> np.ndarray:
    """DIR's files (see the module doc); the poses (N, J, 3) in camera mm."""
    names = [frames.names[row] for row in collected.rows]
    skipped = collected.unreadable + collected.skipped
    out_dir.mkdir(parents=True, exist_ok=True)
    poses_xyz = np.stack(collected.poses_xyz)
    write_result_file(out_dir / "results_xyz.txt", poses_xyz, "xyz", camera)
    write_result_file(out_dir / "results_uvd.txt", poses_xyz, "uvd", camera)
    atomic_write_text(out_dir / "frames.txt", "".join(f"{name}\n" for name in names))
    atomic_write_text(out_dir / "centres.txt", "# frame detected_u detected_v detected_d used_u used_v used_d\n" + "".join(
        f"{name} " + " ".join(f"{value:.3f}" for value in (*det, *use)) + "\n"
        for name, det, use in zip(names, collected.detected_uvd, collected.used_uvd)))
    if skipped:
        atomic_write_text(out_dir / "skipped.txt", "".join(f"{line}\n" for line in skipped))
    for name, data in collected.pngs:
        atomic_write_bytes(out_dir / "overlays" / f"{Path(name).stem}.png", data)
    if len(collected.pngs) > 1:
        write_gif([data for _, data in collected.pngs], out_dir / "animation.gif", fps)
    return poses_xyz


def _load(checkpoint: str, refiner: str, overrides, cube_mm: float, device) -> tuple[PoseCheckpoint, Predictor]:
    """CHECKPOINT's pose network and the Predictor of CHECKPOINT (and --refiner) with this version's localize settings and overrides."""
    pose = load_pose(checkpoint, device)
    apply_localize_overrides(pose.config, overrides)
    loaded = None
    if refiner:
        loaded = load_refiner(refiner, device)
        loaded.check_fits(pose.crop_size, pose.spec.name, f"pose model {checkpoint}")
    return pose, Predictor.from_checkpoints(pose, loaded, device, cube_mm)


def predict_command(checkpoint: str, input: str, out: str, *overrides: str, refiner: str = "", fmt: str = "auto",
                    split: str = "test", cube_mm: float = 0.0, overlays: int = 100, fps: float = 10.0,
                    skip_empty: bool = False, batch: int = BATCH) -> dict:
    """Predict the poses of INPUT's frames with CHECKPOINT into OUT; see the module doc."""
    if not out:
        raise PredictError("predict: --out DIR is required (where the result files and overlays go)")
    if not Path(checkpoint).exists():
        raise PredictError(f"predict: checkpoint {checkpoint} {what_is(checkpoint)} (expected a checkpoint file or a "
                           f"run folder)")
    fps = positive_number(fps, "--fps")
    cube_mm = positive_number(cube_mm, "--cube-mm", zero_means_default=True)
    out_dir = output_folder(out, "predict --out")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pose, predictor = _load(checkpoint, refiner, overrides, cube_mm, device)
    spec = pose.spec
    frames = open_frames(input, fmt, predictor.camera, spec.depth_encoding, split)
    print(f"predict: {len(frames)} frame(s) of {frames.source}; model {checkpoint} ({predictor.crop_size}x"
          f"{predictor.crop_size} crops, cube {predictor.cube_mm:g} mm{', mapped' if pose.mapped else ''}); "
          f"centre: closest object's centre of mass"
          + (f", then {predictor.iterations} refiner step(s) of {refiner}" if refiner else ""), flush=True)
    chosen, collected = overlay_rows(len(frames), int(overlays)), Collected()
    starts = range(0, len(frames), batch)
    for start in progress(starts, total=len(starts), desc="predict"):
        rows = list(range(start, min(start + batch, len(frames))))
        _predict_batch(predictor, frames, rows, skip_empty, chosen, spec.joints.bones, collected)
    skipped, unreadable = collected.unreadable + collected.skipped, collected.unreadable
    if not collected.rows:
        raise PredictError(f"predict: no frame of {frames.source} gave a pose ({len(skipped)} skipped; first: "
                           f"{skipped[0] if skipped else '-'})")
    poses_xyz = _write_outputs(out_dir, collected, frames, predictor.camera, fps)
    pngs = collected.pngs
    print(f"predict: wrote {len(poses_xyz)} pose(s) to {out_dir} (results_xyz.txt, results_uvd.txt, frames.txt, "
          f"centres.txt" + (f", {len(pngs)} overlay(s)" if pngs else "") + (", animation.gif" if len(pngs) > 1 else "")
          + (f"; {len(skipped)} frame(s) skipped, see skipped.txt" if skipped else "") + ")", flush=True)
    if unreadable:
        print(f"predict: {len(unreadable)} of {len(frames)} frame(s) could not be read and were skipped (first: "
              f"{unreadable[0]}); all are listed in {out_dir / 'skipped.txt'}", file=sys.stderr, flush=True)
    return {"frames": len(poses_xyz), "skipped": len(skipped), "unreadable": len(unreadable), "out": str(out_dir),
            "pred_xyz": poses_xyz, "centres_uvd": np.stack(collected.used_uvd),
            "names": [frames.names[row] for row in collected.rows]}

"""`murauer-dist predict CHECKPOINT INPUT --out DIR`: 3D hand poses of raw depth frames, no ground truth.

INPUT is one of
    an NYU-layout folder       ROOT/{test,train}/depth_1_*.png (--split, default test) or a split folder
                               itself: camera 1's real frames, in the dataset's depth encoding
    a folder of depth PNGs     *.png in name order: NYU's RGB encoding ((G << 8) | B, "nyu-rgb") or 16-bit
                               grayscale in mm ("gray16"); detected from the first file, or --format
    a .npy file                a stack (N, H, W) (or one frame (H, W)) of depth in mm, 0 = no depth
Frames must have the camera's image size (the checkpoint's dataset: data.dataset).

Per frame: the hand's centre (the closest object's centre of mass, centre.py; then the refiner's
iterations when --refiner is given), the crop around it (geometry.py, the checkpoint's crop size
and data.cube_mm or --cube-mm), the pose (the path the model was trained for), de-normalised to
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

import io
import math
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from murauer_dist.atomic import atomic_write_bytes, atomic_write_text
from murauer_dist.frames.nyu import PNG_SIGNATURE, CorruptImageError, decode_depth_png
from murauer_dist.frames.datasets import DEPTH_ENCODINGS, Camera, spec_of
from murauer_dist.errors import UserError
from murauer_dist.eval.result_files import write_result_file
from murauer_dist.geometry import CropError, denormalize_joints, xyz_to_uvd
from murauer_dist.localize.centre import CentreSettings, NoHandError, centre_of_mass
from murauer_dist.localize.refiner import frame_crop, load_refiner, refine_centres
from murauer_dist.paths import output_folder, what_is
from murauer_dist.tracking.progress import progress

FORMATS = ("auto", "npy", *DEPTH_ENCODINGS)
BATCH = 32
GIF_WIDTH = 480                      # pixels of an animation frame


class PredictError(UserError, ValueError):
    """An INPUT, option or frame that `predict` cannot use."""


class UnreadableFrameError(PredictError):
    """One frame of INPUT that cannot be read as a depth frame of the camera: skipped and listed."""


@dataclass
class Frames:
    """A sequence of depth frames: names and a loader of frame i -> (H, W) depth in mm."""

    names: list[str]
    load: Callable[[int], np.ndarray]
    source: str                      # what INPUT was taken as (for the console)

    def __len__(self) -> int:
        return len(self.names)


def png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR; PredictError when it is no PNG."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise PredictError(f"{path}: not a PNG file (no PNG signature); depth frames are PNGs or a .npy stack")
    return struct.unpack(">IIBB", head[16:26])


def describe_png(bits: int, colour: int) -> str:
    kinds = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
    return f"{bits}-bit {kinds.get(colour, f'colour type {colour}')}"


def png_encoding(bits: int, colour: int) -> str | None:
    """The depth encoding a PNG header fits: gray16 (16-bit grayscale), nyu-rgb (8-bit RGB/RGBA) or None."""
    if bits == 16 and colour == 0:
        return "gray16"
    if bits == 8 and colour in (2, 6):
        return "nyu-rgb"
    return None


def check_png(path: Path, encoding: str, camera: Camera) -> None:
    """PredictError naming the file unless it is a `encoding` PNG of the camera's size."""
    width, height, bits, colour = png_header(path)
    if png_encoding(bits, colour) != encoding:
        expected = "16-bit grayscale (depth in mm)" if encoding == "gray16" else "8-bit RGB (depth = (G << 8) | B)"
        raise PredictError(f"{path}: a {describe_png(bits, colour)} PNG, expected {expected} for --format {encoding}; "
                           f"depth PNGs are 16-bit grayscale (gray16) or NYU's RGB encoding (nyu-rgb)")
    if (width, height) != camera.size:
        raise PredictError(f"{path}: {width}x{height} pixels, expected {camera.width}x{camera.height} (the camera of "
                           f"the checkpoint's dataset); give frames of that camera, or a model trained on data of "
                           f"this camera (data.dataset)")


def first_png(paths: list[Path]) -> Path:
    """The first of `paths` with a readable PNG header (a damaged file is skipped as a frame, not taken as the
    sample of the folder); PredictError when none has one."""
    for path in paths:
        try:
            png_header(path)
        except (PredictError, OSError):
            continue
        return path
    raise PredictError(f"{paths[0].parent}: none of its {len(paths)} .png file(s) is a readable PNG (first: "
                       f"{paths[0].name} {what_is(paths[0])})")


def _png_frames(paths: list[Path], encoding: str, camera: Camera, source: str) -> Frames:
    check_png(first_png(paths), encoding, camera)      # a folder of another kind is one error, up front

    def load(index: int) -> np.ndarray:
        path = paths[index]
        try:
            check_png(path, encoding, camera)
            return decode_depth_png(path, encoding)
        except PredictError as err:
            raise UnreadableFrameError(str(err)) from err
        except (CorruptImageError, OSError) as err:
            raise UnreadableFrameError(f"{path}: not a readable depth PNG ({err})") from err
    return Frames([p.name for p in paths], load, source)


def _npy_frames(path: Path, camera: Camera) -> Frames:
    try:
        stack = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise PredictError(f"{path}: not a readable .npy array ({err}); expected depth in mm of shape (N, H, W)") from err
    if stack.ndim == 2:
        stack = stack[None]
    expected = f"(N, {camera.height}, {camera.width})"
    if stack.ndim != 3 or stack.shape[1:] != (camera.height, camera.width):
        raise PredictError(f"{path}: an array of shape {tuple(stack.shape)}, expected {expected} depth frames in mm "
                           f"(the camera of the checkpoint's dataset)")
    if not (np.issubdtype(stack.dtype, np.integer) or np.issubdtype(stack.dtype, np.floating)):
        raise PredictError(f"{path}: dtype {stack.dtype}, expected numbers (depth in mm) of shape {expected}")
    if len(stack) == 0:
        raise PredictError(f"{path}: holds 0 frames (shape {tuple(stack.shape)})")
    width = len(str(len(stack) - 1))

    def load(index: int) -> np.ndarray:
        return np.nan_to_num(np.asarray(stack[index], dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return Frames([f"{path.stem}_{i:0{width}d}" for i in range(len(stack))], load, f".npy stack {path}")


def open_frames(path: str | os.PathLike, fmt: str, camera: Camera, dataset_encoding: str, split: str = "test") -> Frames:
    """The frames of INPUT (see the module doc); PredictError for anything that is not one."""
    if fmt not in FORMATS:
        raise PredictError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    if not path.exists():
        raise PredictError(f"input {path} {what_is(path)} (expected an NYU-layout folder, a folder of depth PNGs or a "
                           f".npy file)")
    if path.is_file():
        if path.suffix.lower() != ".npy" or fmt not in ("auto", "npy"):
            raise PredictError(f"input {path}: a single file must be a .npy stack of depth frames (N, H, W) in mm "
                               f"(--format npy or auto); for PNGs give their folder")
        return _npy_frames(path, camera)
    if fmt == "npy":
        raise PredictError(f"--format npy needs a .npy file, but {path} is a folder")
    folder = path
    if (path / split).is_dir() and any((path / split).glob("depth_1_*.png")):
        folder = path / split
    elif not any(path.glob("depth_1_*.png")) and any((path / s).is_dir() for s in ("train", "test")):
        raise PredictError(f"input {path}: an NYU-layout root without camera-1 depth frames in {path / split} "
                           f"(depth_1_*.png); choose the split with --split train|test")
    nyu_frames = sorted(folder.glob("depth_1_*.png"))
    if nyu_frames:
        encoding = dataset_encoding if fmt == "auto" else fmt
        return _png_frames(nyu_frames, encoding, camera, f"NYU-layout folder {folder} (camera 1, real)")
    pngs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not pngs:
        others = sum(1 for p in folder.iterdir() if not p.name.startswith("."))
        what = "is empty" if not others else f"holds no .png files ({others} other entries)"
        raise PredictError(f"input folder {folder} {what}: give an NYU-layout folder, a folder of depth PNGs or a .npy "
                           f"stack (N, H, W) in mm")
    encoding = fmt
    if fmt == "auto":
        sample = first_png(pngs)
        width, height, bits, colour = png_header(sample)
        encoding = png_encoding(bits, colour)
        if encoding is None:
            raise PredictError(f"{sample}: a {describe_png(bits, colour)} PNG, which holds no depth in mm; expected "
                               f"16-bit grayscale (gray16) or 8-bit RGB with depth = (G << 8) | B (nyu-rgb)")
    return _png_frames(pngs, encoding, camera, f"folder of {encoding} depth PNGs {folder}")


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


def apply_localize_overrides(cfg, overrides) -> None:
    """cfg.localize := this version's defaults with `localize.KEY=VALUE` overrides (typed and range-checked
    by the config). Localisation is no property of the pose model: the localize section a checkpoint
    recorded when it was trained is not used."""
    from murauer_dist.config import ConfigError, load_config
    overrides = [str(item) for item in overrides]
    for item in overrides:
        key = item.split("=", 1)[0].strip().lstrip("-")
        if "=" not in item or not key.startswith("localize."):
            raise ConfigError(f"override {item!r}: predict and evaluate take localize.KEY=VALUE overrides only "
                              f"(the pose model's settings come from its checkpoint)")
    cfg.localize = load_config(None, overrides).localize


def _overlay_figure(depth: np.ndarray, joints_uvd: np.ndarray, detected_uvd: np.ndarray, used_uvd: np.ndarray,
                    bones, title: str, zoom_px: float):
    """The whole frame (left) and the hand's surroundings (right, +-zoom_px around the crop centre)."""
    from matplotlib.figure import Figure
    height, width = depth.shape
    figure = Figure(figsize=(10.0, 4.0))
    shown = np.where(depth > 0, depth, np.nan)
    near = float(used_uvd[2])
    for index, zoom in enumerate((False, True)):
        axes = figure.add_subplot(1, 2, index + 1)
        axes.imshow(shown, cmap="viridis", vmin=near - 250.0, vmax=near + 450.0, interpolation="nearest")
        for start, end in bones:
            axes.plot(joints_uvd[[start, end], 0], joints_uvd[[start, end], 1], color="#d62728",
                      linewidth=1.8 if zoom else 1.0)
        axes.scatter(joints_uvd[:, 0], joints_uvd[:, 1], s=16 if zoom else 4, color="#d62728", zorder=3,
                     label="predicted joints")
        axes.plot(*detected_uvd[:2], marker="x", color="white", markersize=8, linestyle="none", label="centre of mass")
        axes.plot(*used_uvd[:2], marker="+", color="#ff7f0e", markersize=12, linestyle="none", label="crop centre")
        if zoom:
            axes.set_xlim(used_uvd[0] - zoom_px, used_uvd[0] + zoom_px)
            axes.set_ylim(used_uvd[1] + zoom_px, used_uvd[1] - zoom_px)
            axes.legend(loc="lower left", fontsize="x-small", framealpha=0.6)
        else:
            axes.set_xlim(-0.5, width - 0.5)
            axes.set_ylim(height - 0.5, -0.5)
        axes.set_axis_off()
    figure.suptitle(title, fontsize="small")
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.03)
    return figure


def render_overlay(depth, joints_uvd, detected_uvd, used_uvd, bones, title: str, zoom_px: float = 120.0) -> bytes:
    """PNG bytes of one frame with its predicted joints (red), centre of mass (x) and crop centre (+)."""
    figure = _overlay_figure(depth, joints_uvd, detected_uvd, used_uvd, bones, title, zoom_px)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def write_gif(pngs: list[bytes], path: Path, fps: float) -> Path:
    from PIL import Image
    frames = []
    for data in pngs:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            scale = GIF_WIDTH / image.width
            frames.append(image.resize((GIF_WIDTH, max(1, round(image.height * scale)))).quantize(colors=128))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)),
                   loop=0, optimize=False)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def overlay_rows(count: int, overlays: int) -> set[int]:
    """Which frames get an overlay: all (-1), none (0), or `overlays` evenly spaced ones."""
    if overlays < 0 or overlays >= count:
        return set(range(count))
    if overlays == 0:
        return set()
    return set(np.unique(np.linspace(0, count - 1, overlays).round().astype(int)).tolist())


def predict_command(checkpoint: str, input: str, out: str, *overrides: str, refiner: str = "", fmt: str = "auto",
                    split: str = "test", cube_mm: float = 0.0, overlays: int = 100, fps: float = 10.0,
                    skip_empty: bool = False, batch: int = BATCH) -> dict:
    """Predict the poses of INPUT's frames with CHECKPOINT into OUT; see the module doc."""
    from murauer_dist.train.checkpoint import load_for_inference
    if not out:
        raise PredictError("predict: --out DIR is required (where the result files and overlays go)")
    if not Path(checkpoint).exists():
        raise PredictError(f"predict: checkpoint {checkpoint} {what_is(checkpoint)} (expected a checkpoint file or a "
                           f"run folder)")
    fps = positive_number(fps, "--fps")
    cube_mm = positive_number(cube_mm, "--cube-mm", zero_means_default=True)
    out_dir = output_folder(out, "predict --out")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg, mapped = load_for_inference(checkpoint, device)
    apply_localize_overrides(cfg, overrides)
    spec = spec_of(cfg)
    camera, crop_size = spec.camera, cfg.data.crop_size
    cube = float(cube_mm or cfg.data.cube_mm)
    loaded = None
    if refiner:
        loaded = load_refiner(refiner, device)
        loaded.check_fits(crop_size, spec.name, f"pose model {checkpoint}")
    frames = open_frames(input, fmt, camera, spec.depth_encoding, split)
    settings = CentreSettings.from_config(cfg)
    print(f"predict: {len(frames)} frame(s) of {frames.source}; model {checkpoint} ({crop_size}x{crop_size} crops, "
          f"cube {cube:g} mm{', mapped' if mapped else ''}); centre: closest object's centre of mass"
          + (f", then {cfg.localize.iterations} refiner step(s) of {refiner}" if loaded else ""), flush=True)
    chosen = overlay_rows(len(frames), int(overlays))
    kept, detected, used, poses, skipped, unreadable, pngs = [], [], [], [], [], [], []
    starts = range(0, len(frames), batch)
    for start in progress(starts, total=len(starts), desc="predict"):
        rows = list(range(start, min(start + batch, len(frames))))
        depths, found = {}, {}
        for row in rows:
            try:
                depth = frames.load(row)
            except UnreadableFrameError as err:
                unreadable.append(f"{frames.names[row]}: {err}")
                continue
            try:
                found[row] = centre_of_mass(depth, camera, settings, frame=frames.names[row])
                depths[row] = depth
            except NoHandError as err:
                if not skip_empty:
                    raise PredictError(f"{err} (--skip-empty writes the other frames and lists the skipped ones)") from err
                skipped.append(f"{frames.names[row]}: {err}")
        good = [row for row in rows if row in found]
        if not good:
            continue
        centres = np.stack([found[row].center_xyz for row in good])
        if loaded is not None:
            centres = refine_centres(loaded, [depths[r] for r in good], centres, camera, cfg.localize.iterations)
        crops, ready = [], []
        for row, centre in zip(good, centres):
            try:
                crops.append(frame_crop(depths[row], xyz_to_uvd(centre, camera), cube, crop_size, camera,
                                        frames.names[row]))
                ready.append((row, centre))
            except CropError as err:
                if not skip_empty:
                    raise PredictError(f"{err} (--skip-empty writes the other frames and lists the skipped ones)") from err
                skipped.append(f"{frames.names[row]}: {err}")
        if not ready:
            continue
        tensor = torch.from_numpy(np.stack(crops)[:, None]).to(device)
        normalised = model.predict(tensor, mapped=mapped).float().cpu().numpy()
        centre_rows = np.stack([centre for _, centre in ready])
        joints = denormalize_joints(normalised, centre_rows, np.full(len(ready), cube))
        for (row, centre), pose in zip(ready, joints):
            kept.append(row)
            detected.append(found[row].center_uvd)
            used.append(xyz_to_uvd(centre, camera))
            poses.append(pose)
            if row in chosen:
                zoom = 0.75 * cube * camera.fx / max(float(used[-1][2]), 1.0)      # 1.5 cubes across
                pngs.append((frames.names[row], render_overlay(depths[row], xyz_to_uvd(pose, camera),
                                                               found[row].center_uvd, used[-1], spec.joints.bones,
                                                               frames.names[row], zoom)))
    skipped = unreadable + skipped
    if not kept:
        raise PredictError(f"predict: no frame of {frames.source} gave a pose ({len(skipped)} skipped; first: "
                           f"{skipped[0] if skipped else '-'})")
    out_dir.mkdir(parents=True, exist_ok=True)
    poses_xyz = np.stack(poses)
    write_result_file(out_dir / "results_xyz.txt", poses_xyz, "xyz", camera)
    write_result_file(out_dir / "results_uvd.txt", poses_xyz, "uvd", camera)
    atomic_write_text(out_dir / "frames.txt", "".join(f"{frames.names[row]}\n" for row in kept))
    atomic_write_text(out_dir / "centres.txt", "# frame detected_u detected_v detected_d used_u used_v used_d\n" + "".join(
        f"{frames.names[row]} " + " ".join(f"{value:.3f}" for value in (*det, *use)) + "\n"
        for row, det, use in zip(kept, detected, used)))
    if skipped:
        atomic_write_text(out_dir / "skipped.txt", "".join(f"{line}\n" for line in skipped))
    for name, data in pngs:
        atomic_write_bytes(out_dir / "overlays" / f"{Path(name).stem}.png", data)
    if len(pngs) > 1:
        write_gif([data for _, data in pngs], out_dir / "animation.gif", fps)
    print(f"predict: wrote {len(kept)} pose(s) to {out_dir} (results_xyz.txt, results_uvd.txt, frames.txt, centres.txt"
          + (f", {len(pngs)} overlay(s)" if pngs else "") + (", animation.gif" if len(pngs) > 1 else "")
          + (f"; {len(skipped)} frame(s) skipped, see skipped.txt" if skipped else "") + ")", flush=True)
    if unreadable:
        print(f"predict: {len(unreadable)} of {len(frames)} frame(s) could not be read and were skipped (first: "
              f"{unreadable[0]}); all are listed in {out_dir / 'skipped.txt'}", file=sys.stderr, flush=True)
    return {"frames": len(kept), "skipped": len(skipped), "unreadable": len(unreadable), "out": str(out_dir), "pred_xyz": poses_xyz,
            "centres_uvd": np.stack(used), "names": [frames.names[row] for row in kept]}

"""The INPUT of `murauer-dist predict`: raw depth frames, opened as a sequence of (H, W) arrays in mm.

INPUT is one of
    an NYU-layout folder       ROOT/{test,train}/depth_1_*.png (--split, default test) or a split folder
                               itself: camera 1's real frames, in the dataset's depth encoding
    a folder of depth PNGs     *.png in name order: NYU's RGB encoding ((G << 8) | B, "nyu-rgb") or 16-bit
                               grayscale in mm ("gray16"); detected from the first file, or --format
    a .npy file                a stack (N, H, W) (or one frame (H, W)) of depth in mm, 0 = no depth
Frames must have the camera's image size (the checkpoint's dataset: data.dataset). A frame that cannot
be read as a depth frame of the camera (cut short, not a PNG, another size) raises UnreadableFrameError
when it is loaded, so that `predict` skips and lists it; the kind of a PNG folder is taken from its
first readable file.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from murauer_dist.errors import UserError
from murauer_dist.frames.datasets import DEPTH_ENCODINGS, Camera
from murauer_dist.frames.nyu import PNG_SIGNATURE, CorruptImageError, decode_depth_png
from murauer_dist.paths import what_is

FORMATS = ("auto", "npy", *DEPTH_ENCODINGS)


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

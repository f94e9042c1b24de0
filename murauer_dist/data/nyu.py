"""Reader (and writer) for the NYU hand pose layout, used for the real download and the procedural set.

    ROOT/{train,test}/depth_{cam}_{frame:07d}.png       real depth, cam in 1..3, frame 1-based
    ROOT/{train,test}/synthdepth_{cam}_{frame:07d}.png  synthetic rendering of the same pose
    ROOT/{train,test}/joint_data.mat                     joint_uvd, joint_xyz: (3 cams, N, 36, 3)

Depth PNGs are 640x480 RGB with depth in mm = (G << 8) | B.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from scipy.io.matlab import MatReadError

from murauer_dist import geometry
from murauer_dist.errors import UserError

SPLITS = ("train", "test")
DOMAINS = {"real": "depth", "synth": "synthdepth"}
CAMERAS = (1, 2, 3)
NUM_NYU_JOINTS = 36
MAKE_HINT = ("download the NYU hand pose dataset, or make the procedural one with "
             "`murauer-dist synth-data OUT`")


class LayoutError(UserError, FileNotFoundError):
    """A folder that is not (or not completely) an NYU-layout dataset."""


class CorruptImageError(OSError):
    """PNG bytes that fail the chunk structure or CRC check, or that do not decode."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# what Pillow and zlib raise on broken image data (Pillow raises SyntaxError for some broken chunks)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


def png_corruption(data: bytes) -> str | None:
    """Why `data` is not an intact PNG (signature, chunk layout, a chunk's CRC-32), or None.

    Every chunk carries a CRC-32 of its type and data; Pillow checks it only for the chunks before
    the image data, so a damaged IDAT can decode to garbage without an error. Checking all of them
    costs one zlib.crc32 pass over the file (tens of microseconds for a 640x480 depth PNG).
    """
    if data[:8] != PNG_SIGNATURE:
        return "no PNG signature"
    view, at, size = memoryview(data), 8, len(data)
    while True:
        if at + 12 > size:
            return f"truncated at byte {at} of {size} (no IEND chunk)"
        length, kind = struct.unpack_from(">I4s", data, at)
        name = kind.decode("latin-1")
        end = at + 8 + length
        if end + 4 > size:
            return f"chunk {name} at byte {at} runs past the end of the file ({size} bytes): truncated"
        if zlib.crc32(view[at + 4:end]) != int.from_bytes(view[end:end + 4], "big"):
            return f"chunk {name} at byte {at} fails its CRC check: the file is corrupt"
        if kind == b"IEND":
            return None
        at = end + 4


def decode_depth_png(data: bytes | str | os.PathLike) -> np.ndarray:
    """NYU PNG (bytes or path) -> uint16 depth in mm, (480, 640).

    Raises CorruptImageError (an OSError) when a chunk's CRC or the compressed stream is broken.
    """
    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    problem = png_corruption(data)
    if problem is not None:
        raise CorruptImageError(problem)
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
    except DECODE_ERRORS as err:
        raise CorruptImageError(f"does not decode ({type(err).__name__}: {err})") from err
    return (rgb[..., 1].astype(np.uint16) << 8) | rgb[..., 2].astype(np.uint16)


def encode_depth_png(depth_mm: np.ndarray) -> bytes:
    """uint16 depth (mm) -> NYU PNG bytes (R=0, G=high byte, B=low byte)."""
    depth = np.asarray(depth_mm, dtype=np.uint16)
    rgb = np.zeros(depth.shape + (3,), dtype=np.uint8)
    rgb[..., 1] = depth >> 8
    rgb[..., 2] = depth & 0xFF
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def depth_filename(domain: str, cam: int, index: int) -> str:
    """File name of 0-based frame `index` (NYU numbers files from 1)."""
    return f"{DOMAINS[domain]}_{cam}_{index + 1:07d}.png"


@dataclass(frozen=True)
class FrameLabels:
    """Joints of one frame in one camera: all 36 NYU joints, uvd (px, px, mm) and xyz (mm, y up)."""

    uvd: np.ndarray   # (36, 3)
    xyz: np.ndarray   # (36, 3)

    @property
    def eval_uvd(self) -> np.ndarray:
        return self.uvd[list(geometry.EVAL_JOINTS)]

    @property
    def eval_xyz(self) -> np.ndarray:
        return self.xyz[list(geometry.EVAL_JOINTS)]

    @property
    def center_uvd(self) -> np.ndarray:
        return self.uvd[geometry.EVAL_JOINTS[geometry.CENTER_JOINT]]

    @property
    def center_xyz(self) -> np.ndarray:
        return self.xyz[geometry.EVAL_JOINTS[geometry.CENTER_JOINT]]


def _mat_variables(path: Path) -> str:
    """The variable names of a readable .mat file, for messages."""
    try:
        names = [entry[0] for entry in scipy.io.whosmat(path)]
    except (MatReadError, *DECODE_ERRORS, TypeError, NotImplementedError) as err:
        return f"no readable variable list: {err}"
    return ", ".join(repr(name) for name in names) if names else "no variables"


class NyuSplit:
    """One split (`train` or `test`) of an NYU-layout folder."""

    def __init__(self, root: str | os.PathLike, split: str):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.folder = self.root / split
        if not self.root.is_dir():
            raise LayoutError(f"dataset root {self.root} does not exist; {MAKE_HINT}")
        if not self.folder.is_dir():
            raise LayoutError(f"{self.folder} is missing: an NYU-layout root holds train/ and test/; {MAKE_HINT}")
        if not self.mat_path.is_file():
            raise LayoutError(f"{self.mat_path} is missing: each split needs its joint_data.mat; {MAKE_HINT}")

    @property
    def mat_path(self) -> Path:
        return self.folder / "joint_data.mat"

    @cached_property
    def _joints(self) -> dict[str, np.ndarray]:
        expected = (f"expected a MATLAB .mat file (version 5 to 7.2) with numeric joint_uvd and joint_xyz of "
                    f"shape (3, N, {NUM_NYU_JOINTS}, 3), as in the NYU download; {MAKE_HINT}")
        try:
            mat = scipy.io.loadmat(self.mat_path, variable_names=["joint_uvd", "joint_xyz"])
        except NotImplementedError as err:       # scipy's answer to MATLAB v7.3 (HDF5) files
            raise LayoutError(f"{self.mat_path}: a MATLAB v7.3 (HDF5) file, which cannot be read here ({err}); "
                              f"save it with `save(..., '-v7')`; {expected}") from err
        except (MatReadError, *DECODE_ERRORS, TypeError, MemoryError, OverflowError, IndexError) as err:
            raise LayoutError(f"{self.mat_path}: not a readable .mat file ({type(err).__name__}: {err}); "
                              f"{expected}") from err
        joints = {}
        for key in ("joint_uvd", "joint_xyz"):
            if key not in mat:
                raise LayoutError(f"{self.mat_path}: variable '{key}' is missing (it holds "
                                  f"{_mat_variables(self.mat_path)}); {expected}")
            try:
                array = np.asarray(mat[key], dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise LayoutError(f"{self.mat_path}: '{key}' is not a numeric array (a {type(mat[key]).__name__} "
                                  f"of dtype {getattr(mat[key], 'dtype', '?')}); {expected}") from err
            if array.ndim != 4 or array.shape[0] != 3 or array.shape[2] != NUM_NYU_JOINTS or array.shape[3] != 3:
                raise LayoutError(f"{self.mat_path}: '{key}' has shape {array.shape}, expected (3, N, 36, 3)")
            joints[key] = array
        if joints["joint_uvd"].shape != joints["joint_xyz"].shape:
            raise LayoutError(f"{self.mat_path}: joint_uvd {joints['joint_uvd'].shape} and joint_xyz "
                              f"{joints['joint_xyz'].shape} disagree")
        if joints["joint_uvd"].shape[1] == 0:
            raise LayoutError(f"{self.mat_path}: joint_uvd and joint_xyz hold 0 frames; {expected}")
        return joints

    def __len__(self) -> int:
        return self._joints["joint_uvd"].shape[1]

    def labels(self, index: int, cam: int) -> FrameLabels:
        return FrameLabels(self._joints["joint_uvd"][cam - 1, index], self._joints["joint_xyz"][cam - 1, index])

    def all_labels(self, cam: int) -> FrameLabels:
        """All frames at once: uvd/xyz of shape (N, 36, 3)."""
        return FrameLabels(self._joints["joint_uvd"][cam - 1], self._joints["joint_xyz"][cam - 1])

    def depth_path(self, index: int, cam: int, domain: str = "real") -> Path:
        return self.folder / depth_filename(domain, cam, index)

    def depth(self, index: int, cam: int, domain: str = "real") -> np.ndarray:
        """uint16 depth in mm (480, 640). A missing or unreadable file names its path."""
        path = self.depth_path(index, cam, domain)
        if not path.is_file():
            raise LayoutError(f"{path} is missing (frame {index}, camera {cam}, {domain})")
        try:
            depth = decode_depth_png(path)
        except OSError as err:
            raise LayoutError(f"{path}: not a readable PNG ({err})") from err
        if depth.shape != (geometry.IMAGE_HEIGHT, geometry.IMAGE_WIDTH):
            raise LayoutError(f"{path}: {depth.shape[1]}x{depth.shape[0]} pixels, expected 640x480")
        return depth

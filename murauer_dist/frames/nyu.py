"""Reader (and writer) for the NYU hand pose layout, used for the real download and the procedural sets.

    ROOT/{train,test}/depth_{cam}_{frame:07d}.png       real depth, cam in 1..C, frame 1-based
    ROOT/{train,test}/synthdepth_{cam}_{frame:07d}.png  synthetic rendering of the same pose
    ROOT/{train,test}/joint_data.mat                     joint_uvd, joint_xyz: (C cams, N, J_source, 3)

The dataset spec (murauer_dist/frames/datasets.py) gives C, J_source, the image size and the depth
encoding: NYU's depth PNGs are 640x480 RGB with depth in mm = (G << 8) | B ("nyu-rgb"); "gray16"
PNGs hold the depth in mm as 16-bit grayscale. The reader interface is frames/readers.py.
"""
from __future__ import annotations

import io
import os
import re
import struct
import zlib
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from scipy.io.matlab import MatReadError

from murauer_dist.frames.datasets import DatasetSpec
from murauer_dist.frames.readers import SPLITS, FrameLabels
from murauer_dist.errors import UserError
from murauer_dist.paths import what_is

__all__ = ["FrameLabels", "NyuSplit", "LayoutError", "CorruptImageError", "decode_depth_png", "encode_depth_png",
           "depth_filename", "DOMAINS", "SPLITS"]

DOMAINS = {"real": "depth", "synth": "synthdepth"}
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


GRAY16_MODES = ("I;16", "I;16B", "I;16L", "I")          # what Pillow opens a 16-bit grayscale PNG as


def decode_depth_png(data: bytes | str | os.PathLike, encoding: str) -> np.ndarray:
    """Depth PNG (bytes or path) -> uint16 depth in mm, (H, W); `encoding` a datasets.DEPTH_ENCODINGS key.

    Raises CorruptImageError (an OSError) when a chunk's CRC or the compressed stream is broken, or
    when a "gray16" file is not a 16-bit grayscale image.
    """
    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    problem = png_corruption(data)
    if problem is not None:
        raise CorruptImageError(problem)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if encoding == "gray16":
                if image.mode not in GRAY16_MODES:
                    raise CorruptImageError(f"a {image.mode} PNG, but the dataset's depth encoding is gray16 "
                                            f"(16-bit grayscale)")
                return np.asarray(image).astype(np.uint16)
            rgb = np.asarray(image.convert("RGB"))
    except DECODE_ERRORS as err:
        if isinstance(err, CorruptImageError):
            raise
        raise CorruptImageError(f"does not decode ({type(err).__name__}: {err})") from err
    return (rgb[..., 1].astype(np.uint16) << 8) | rgb[..., 2].astype(np.uint16)


def encode_depth_png(depth_mm: np.ndarray, encoding: str) -> bytes:
    """uint16 depth (mm) -> PNG bytes: "nyu-rgb" (R=0, G=high byte, B=low byte) or "gray16"."""
    depth = np.asarray(depth_mm, dtype=np.uint16)
    buffer = io.BytesIO()
    if encoding == "gray16":
        Image.fromarray(depth).save(buffer, format="PNG", compress_level=1)      # mode I;16
        return buffer.getvalue()
    rgb = np.zeros(depth.shape + (3,), dtype=np.uint8)
    rgb[..., 1] = depth >> 8
    rgb[..., 2] = depth & 0xFF
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def read_depth_frame(path: Path, spec: DatasetSpec, which: str) -> np.ndarray:
    """uint16 depth in mm of one frame file of dataset `spec`; a missing or unreadable file, or one of
    another size than the camera's, is a LayoutError naming the path (and `which` frame it is)."""
    if not path.is_file():
        raise LayoutError(f"{path} is missing ({which})")
    try:
        depth = decode_depth_png(path, spec.depth_encoding)
    except OSError as err:
        raise LayoutError(f"{path}: not a readable PNG ({err})") from err
    camera = spec.camera
    if depth.shape != (camera.height, camera.width):
        raise LayoutError(f"{path}: {depth.shape[1]}x{depth.shape[0]} pixels, expected "
                          f"{camera.width}x{camera.height} (dataset {spec.name!r})")
    return depth


def depth_filename(domain: str, cam: int, index: int) -> str:
    """File name of 0-based frame `index` (NYU numbers files from 1)."""
    return f"{DOMAINS[domain]}_{cam}_{index + 1:07d}.png"


def _mat_variables(path: Path) -> str:
    """The variable names of a readable .mat file, for messages."""
    try:
        names = [entry[0] for entry in scipy.io.whosmat(path)]
    except (MatReadError, *DECODE_ERRORS, TypeError, NotImplementedError) as err:
        return f"no readable variable list: {err}"
    return ", ".join(repr(name) for name in names) if names else "no variables"


class NyuSplit:
    """One split (`train` or `test`) of an NYU-layout folder holding a dataset of `spec`."""

    def __init__(self, root: str | os.PathLike, split: str, spec: DatasetSpec):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.spec = spec
        self.folder = self.root / split
        if not self.root.is_dir():
            raise LayoutError(f"dataset root {self.root} {what_is(self.root)}, expected an NYU-layout folder; {MAKE_HINT}")
        if not self.folder.is_dir():
            raise LayoutError(f"{self.folder} is missing: an NYU-layout root holds train/ and test/; {MAKE_HINT}")
        if not self.labels_path.is_file():
            raise LayoutError(f"{self.labels_path} is missing: each split needs its joint_data.mat; {MAKE_HINT}")

    @property
    def labels_path(self) -> Path:
        return self.folder / "joint_data.mat"

    @property
    def domains(self) -> dict[str, str]:
        """The spec's domains and their file prefixes (synthdepth_* only where the spec has twins)."""
        return {domain: DOMAINS[domain] for domain in self.spec.domains}

    @property
    def cameras(self) -> tuple[int, ...]:
        """The physical cameras of a frame (1-based)."""
        return tuple(range(1, self.spec.num_cameras + 1))

    def check_images(self) -> None:
        """LayoutError unless the split holds at least one depth PNG of camera 1 per domain, and the first
        one's header (size, bit depth, colour type) fits the dataset spec: a folder of another dataset
        is named as such instead of every frame failing to crop."""
        for domain, prefix in self.domains.items():
            first = next(self.folder.glob(f"{prefix}_1_*.png"), None)
            if first is None:
                raise LayoutError(f"{self.folder} holds no {domain} depth images (expected files like "
                                  f"{self.depth_path(0, 1, domain).name}); {MAKE_HINT}")
            self._check_header(first)

    def frames_without_labels(self) -> list[int]:
        """0-based indices of frames that have depth images in the folder but no labels in joint_data.mat
        (frames at or beyond its frame count), sorted; one directory listing, no image is read."""
        pattern = re.compile(r"^(?:%s)_(\d+)_(\d+)\.png$" % "|".join(re.escape(p) for p in self.domains.values()))
        count, extra = len(self), set()
        with os.scandir(self.folder) as entries:
            for entry in entries:
                match = pattern.match(entry.name)
                if match and int(match.group(2)) - 1 >= count:
                    extra.add(int(match.group(2)) - 1)
        return sorted(extra)

    def _check_header(self, path: Path) -> None:
        with open(path, "rb") as handle:
            head = handle.read(26)
        if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
            return                                       # a broken file: reported per frame when it is read
        width, height, bits, colour = struct.unpack(">IIBB", head[16:26])
        camera, encoding = self.spec.camera, self.spec.depth_encoding
        gray16 = bits == 16 and colour == 0
        if (width, height) != camera.size or gray16 != (encoding == "gray16"):
            kind = "16-bit grayscale" if gray16 else f"{bits}-bit colour type {colour}"
            raise LayoutError(f"{path}: a {width}x{height} {kind} PNG, but dataset {self.spec.name!r} has "
                              f"{camera.width}x{camera.height} {encoding} depth images: is this a dataset of "
                              f"another kind? Choose it with data.dataset=NAME (one of murauer_dist/frames/datasets.py)")

    @cached_property
    def _joints(self) -> dict[str, np.ndarray]:
        cams, n_joints = self.spec.num_cameras, self.spec.joints.source_count
        shape = f"({cams}, N, {n_joints}, 3)"
        layout = f"as dataset {self.spec.name!r} has"
        expected = (f"expected a MATLAB .mat file (version 5 to 7.2) with numeric joint_uvd and joint_xyz of "
                    f"shape {shape}, {layout}; {MAKE_HINT}")
        try:
            mat = scipy.io.loadmat(self.labels_path, variable_names=["joint_uvd", "joint_xyz"])
        except NotImplementedError as err:       # scipy's answer to MATLAB v7.3 (HDF5) files
            raise LayoutError(f"{self.labels_path}: a MATLAB v7.3 (HDF5) file, which cannot be read here ({err}); "
                              f"save it with `save(..., '-v7')`; {expected}") from err
        except (MatReadError, *DECODE_ERRORS, TypeError, MemoryError, OverflowError, IndexError) as err:
            raise LayoutError(f"{self.labels_path}: not a readable .mat file ({type(err).__name__}: {err}); "
                              f"{expected}") from err
        joints = {}
        for key in ("joint_uvd", "joint_xyz"):
            if key not in mat:
                raise LayoutError(f"{self.labels_path}: variable '{key}' is missing (it holds "
                                  f"{_mat_variables(self.labels_path)}); {expected}")
            try:
                array = np.asarray(mat[key], dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise LayoutError(f"{self.labels_path}: '{key}' is not a numeric array (a {type(mat[key]).__name__} "
                                  f"of dtype {getattr(mat[key], 'dtype', '?')}); {expected}") from err
            if array.ndim != 4 or array.shape[0] != cams or array.shape[2] != n_joints or array.shape[3] != 3:
                raise LayoutError(f"{self.labels_path}: '{key}' has shape {array.shape}, expected {shape} "
                                  f"(dataset {self.spec.name!r})")
            joints[key] = array
        if joints["joint_uvd"].shape != joints["joint_xyz"].shape:
            raise LayoutError(f"{self.labels_path}: joint_uvd {joints['joint_uvd'].shape} and joint_xyz "
                              f"{joints['joint_xyz'].shape} disagree")
        if joints["joint_uvd"].shape[1] == 0:
            raise LayoutError(f"{self.labels_path}: joint_uvd and joint_xyz hold 0 frames; {expected}")
        return joints

    def __len__(self) -> int:
        return self._joints["joint_uvd"].shape[1]

    def labels(self, index: int, cam: int) -> FrameLabels:
        return FrameLabels(self._joints["joint_uvd"][cam - 1, index], self._joints["joint_xyz"][cam - 1, index],
                           self.spec.joints)

    def all_labels(self, cam: int) -> FrameLabels:
        """All frames at once: uvd/xyz of shape (N, J_source, 3)."""
        return FrameLabels(self._joints["joint_uvd"][cam - 1], self._joints["joint_xyz"][cam - 1], self.spec.joints)

    def depth_path(self, index: int, cam: int, domain: str = "real") -> Path:
        return self.folder / depth_filename(domain, cam, index)

    def depth(self, index: int, cam: int, domain: str = "real") -> np.ndarray:
        """uint16 depth in mm (height, width of the camera). A missing or unreadable file names its path."""
        return read_depth_frame(self.depth_path(index, cam, domain), self.spec, f"frame {index}, camera {cam}, {domain}")

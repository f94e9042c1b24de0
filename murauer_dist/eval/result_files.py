"""Community hand-pose result files: read with strict validation, write atomically.

Layout (docs/method.md §7): one line per test frame in dataset order, J joints x 3 values,
joint-major (j0_a j0_b j0_c j1_a ...), written with %.4f. Two unit systems:
- uvd: u, v in pixels of the dataset camera's image (NYU: 640x480), d in mm;
- xyz: camera coordinates in mm, in the camera's axes (NYU: y up, z = depth).
The dataset's camera (datasets.Camera, always passed) converts between them. Files carry no header,
so the units are checked against what a hand in front of that camera can look like
(`plausible_formats`); scoring adds a check against the ground truth.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from murauer_dist.atomic import atomic_write_text
from murauer_dist.frames.datasets import DATASETS, Camera
from murauer_dist.errors import UserError
from murauer_dist.geometry import uvd_to_xyz, xyz_to_uvd
from murauer_dist.paths import what_is

FORMATS = ("uvd", "xyz")
# A point is consistent with a format when it lands (with this slack in pixels) in the image and
# its depth lies in the range of a depth camera; a file is when nearly all of its points are.
IMAGE_SLACK_PX = 64
DEPTH_RANGE_MM = (50.0, 10000.0)
MAX_ABS_XY_MM = 600.0
MIN_CONSISTENT_FRACTION = 0.99


class ResultFormatError(UserError, ValueError):
    """A result file that does not hold what the community layout says (names file and line)."""


@dataclass(frozen=True)
class ResultFile:
    """The joints of one result file, in the units it was written in."""

    path: str
    fmt: str                   # "uvd" or "xyz"
    values: np.ndarray         # (N, J, 3) as stored
    camera: Camera             # the dataset's; converts uvd <-> xyz

    @property
    def xyz(self) -> np.ndarray:
        return self.values if self.fmt == "xyz" else uvd_to_xyz(self.values, self.camera)

    @property
    def uvd(self) -> np.ndarray:
        return self.values if self.fmt == "uvd" else xyz_to_uvd(self.values, self.camera)


def _check_fmt(fmt: str, allow_auto: bool = False) -> None:
    allowed = FORMATS + (("auto",) if allow_auto else ())
    if fmt not in allowed:
        raise ResultFormatError(f"format must be one of {', '.join(allowed)}, got {fmt!r}")


def _in_image(u: np.ndarray, v: np.ndarray, camera: Camera) -> np.ndarray:
    return ((u >= -IMAGE_SLACK_PX) & (u <= camera.width + IMAGE_SLACK_PX)
            & (v >= -IMAGE_SLACK_PX) & (v <= camera.height + IMAGE_SLACK_PX))


def consistent_fraction(values: np.ndarray, camera: Camera) -> dict[str, float]:
    """Fraction of points that could be a hand joint seen by `camera`, read as uvd and as xyz."""
    points = np.asarray(values, np.float64).reshape(-1, 3)
    depth_ok = (points[:, 2] > DEPTH_RANGE_MM[0]) & (points[:, 2] < DEPTH_RANGE_MM[1])
    as_uvd = depth_ok & _in_image(points[:, 0], points[:, 1], camera)
    projected = xyz_to_uvd(points, camera)
    as_xyz = (depth_ok & _in_image(projected[:, 0], projected[:, 1], camera)
              & (np.abs(points[:, :2]) <= MAX_ABS_XY_MM).all(axis=1))
    return {"uvd": float(as_uvd.mean()), "xyz": float(as_xyz.mean())}


def plausible_formats(values: np.ndarray, camera: Camera) -> list[str]:
    """The formats the values are consistent with, the likelier first.

    Both can fit (a hand right of and above the optical axis has positive x, y like pixels);
    then negative first coordinates mean xyz (pixels of an in-image hand are >= 0), else uvd.
    """
    fractions = consistent_fraction(values, camera)
    formats = [fmt for fmt in FORMATS if fractions[fmt] >= MIN_CONSISTENT_FRACTION]
    if len(formats) == 2:
        negative = float((np.asarray(values)[..., :2] < 0).mean())
        formats = ["xyz", "uvd"] if negative > 0.01 else ["uvd", "xyz"]
    return formats


def _describe_units(fractions: dict[str, float], camera: Camera) -> str:
    return (f"{fractions['uvd']:.1%} of the points fit uvd (u in [0, {camera.width}] px, v in [0, {camera.height}] px, "
            f"d > 0 mm), {fractions['xyz']:.1%} fit xyz (mm, |x|, |y| < {MAX_ABS_XY_MM:.0f}, z > 0, in view)")


def _other_cameras_hint(values: np.ndarray, fmt: str, camera: Camera) -> str:
    """'; they fit the camera of dataset X (pass --dataset X)' when another known dataset's camera fits."""
    fitting = [spec.name for spec in DATASETS.values() if spec.camera != camera
               and (fmt if fmt != "auto" else "uvd") in plausible_formats(values, spec.camera)]
    return f"; they fit the camera of dataset {fitting[0]!r} (pass --dataset {fitting[0]})" if fitting else ""


def resolve_format(values: np.ndarray, fmt: str, path: str, camera: Camera) -> str:
    """The format to read `values` in: `fmt` checked against the data, or detected for "auto"."""
    _check_fmt(fmt, allow_auto=True)
    plausible = plausible_formats(values, camera)
    if fmt == "auto":
        if not plausible:
            raise ResultFormatError(f"{path}: the values fit neither uvd nor xyz units: "
                                    f"{_describe_units(consistent_fraction(values, camera), camera)}"
                                    f"{_other_cameras_hint(values, fmt, camera)}")
        return plausible[0]
    if fmt not in plausible:
        other = [f for f in plausible if f != fmt]
        hint = (f"; they look like {other[0]} (pass --format {other[0]} or auto)" if other
                else _other_cameras_hint(values, fmt, camera))
        raise ResultFormatError(f"{path}: declared {fmt}, but the values do not fit {fmt} units: "
                                f"{_describe_units(consistent_fraction(values, camera), camera)}{hint}")
    return fmt


def _joint_count_hint(values: int) -> str:
    """'; 48 values are the 16 joints of dataset X (pass --dataset X)' when a known dataset has that many."""
    names = [spec.name for spec in DATASETS.values() if 3 * spec.joints.count == values]
    return (f"; {values} values are the {values // 3} joints of dataset {names[0]!r} (pass --dataset {names[0]})"
            if names else "")


def _parse_lines(text: str, path: str, num_joints: int) -> np.ndarray:
    lines = text.split("\n")
    while lines and lines[-1].strip() == "":
        lines.pop()                      # the final newline (and blank lines after the last frame)
    expected = 3 * num_joints
    rows = [line.split() for line in lines]
    for number, row in enumerate(rows, start=1):
        if len(row) != expected:
            raise ResultFormatError(f"{path}: line {number}: expected {expected} values "
                                    f"({num_joints} joints x 3), found {len(row)}{_joint_count_hint(len(row))}")
    try:
        values = np.array(rows, dtype=np.float64).reshape(len(rows), num_joints, 3)
    except ValueError:
        for number, row in enumerate(rows, start=1):
            for column, token in enumerate(row, start=1):
                try:
                    float(token)
                except ValueError:
                    raise ResultFormatError(f"{path}: line {number}, column {column}: "
                                            f"expected a number, found {token!r}") from None
        raise
    bad = ~np.isfinite(values)
    if bad.any():
        frame, joint, coord = np.argwhere(bad)[0]
        raise ResultFormatError(f"{path}: line {frame + 1}, column {3 * joint + coord + 1} (joint {joint}): "
                                f"expected a finite number, found {values[frame, joint, coord]}")
    return values


def _read_text(path: str) -> str:
    """The file's text; gzip-compressed files (.gz) are read transparently."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ResultFormatError(f"{path}: a damaged gzip file ({err})") from None
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ResultFormatError(f"{path}: line {line}: not a text result file (byte {data[err.start]:#04x} at "
                                f"offset {err.start}); expected lines of numbers") from None


def read_result_file(path: str | Path, fmt: str, expected_rows: int | None, num_joints: int,
                     camera: Camera) -> ResultFile:
    """Read and validate a result file; `fmt` "uvd", "xyz" or "auto" (detected from the values);
    expected_rows: the line count it must have (None: any); `num_joints` and `camera`: the dataset's."""
    path = str(path)
    _check_fmt(fmt, allow_auto=True)
    if not Path(path).is_file():
        raise ResultFormatError(f"{path}: no such result file (it {what_is(path)})")
    values = _parse_lines(_read_text(path), path, num_joints)
    if values.shape[0] == 0:
        raise ResultFormatError(f"{path}: the file holds no lines (expected one line per test frame)")
    if expected_rows is not None and values.shape[0] != expected_rows:
        raise ResultFormatError(f"{path}: expected {expected_rows} lines (one per test frame), "
                                f"found {values.shape[0]}")
    return ResultFile(path, resolve_format(values, fmt, path, camera), values, camera)


def format_result_lines(values: np.ndarray) -> str:
    """(N, J, 3) -> the text of a result file: one %.4f line per frame."""
    flat = np.asarray(values, np.float64).reshape(len(values), -1)
    buffer = io.StringIO()
    np.savetxt(buffer, flat, fmt="%.4f", delimiter=" ")
    return buffer.getvalue()


def write_result_file(path: str | Path, joints_xyz: np.ndarray, fmt: str, camera: Camera) -> Path:
    """Write (N, J, 3) camera-mm joints as a result file in `fmt` ("uvd" or "xyz", projected with
    `camera`), atomically."""
    _check_fmt(fmt)
    joints_xyz = np.asarray(joints_xyz, np.float64)
    if joints_xyz.ndim != 3 or joints_xyz.shape[-1] != 3:
        raise ValueError(f"joints must be (N, J, 3) camera mm, got {joints_xyz.shape}")
    if not np.isfinite(joints_xyz).all():
        raise ValueError(f"refusing to write {path}: the joints hold NaN or inf")
    values = joints_xyz if fmt == "xyz" else xyz_to_uvd(joints_xyz, camera)
    atomic_write_text(path, format_result_lines(values))
    return Path(path)

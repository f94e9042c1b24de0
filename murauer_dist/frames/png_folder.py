"""Reader for a folder of 16-bit depth PNGs with one labels text file per split ("png-uvd").

    ROOT/{train,test}/NAME.png      one frame, one camera: 16-bit grayscale PNG, depth in mm
    ROOT/{train,test}/labels.txt    one line per frame: NAME.png then J x (u v d), whitespace separated

Frame i of a split is line i of its labels file (blank lines and lines starting with # are skipped).
The spec gives J (joints.source_count), the image size and the camera; xyz is computed from uvd with
the spec's camera. There are no synthetic twins: the spec says `synthetic: false` (checked here).
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from murauer_dist import geometry
from murauer_dist.frames.datasets import DatasetSpec
from murauer_dist.frames.nyu import LayoutError, read_depth_frame
from murauer_dist.frames.readers import SPLITS, FrameLabels

LABELS_FILE = "labels.txt"


class PngUvdSplit:
    """One split (`train` or `test`) of a png-uvd folder holding a dataset of `spec`."""

    def __init__(self, root: str | os.PathLike, split: str, spec: DatasetSpec):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if spec.synthetic or spec.num_cameras != 1 or spec.depth_encoding != "gray16":
            raise LayoutError(f"dataset {spec.name!r}: the png-uvd reader reads one camera of gray16 depth PNGs "
                              f"without synthetic twins; its spec must say num_cameras: 1, depth_encoding: gray16, "
                              f"synthetic: false")
        self.root, self.split, self.spec = Path(root), split, spec
        self.folder = self.root / split
        if not self.labels_path.is_file():
            raise LayoutError(f"{self.labels_path} is missing: a png-uvd dataset holds {{train,test}}/{LABELS_FILE} "
                              f"(one line per frame: file name, then {spec.joints.source_count} x u v d)")

    @property
    def labels_path(self) -> Path:
        return self.folder / LABELS_FILE

    @property
    def cameras(self) -> tuple[int, ...]:
        return (1,)

    @cached_property
    def _table(self) -> tuple[list[str], np.ndarray]:
        """(file names, uvd (N, J, 3)) of the labels file; LayoutError naming the line otherwise."""
        count = self.spec.joints.source_count
        names, rows = [], []
        for number, line in enumerate(self.labels_path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{self.labels_path}, line {number}"
            if len(fields) != 1 + 3 * count:
                raise LayoutError(f"{where}: {len(fields)} fields, expected a file name and {count} x (u v d) = "
                                  f"{1 + 3 * count} (dataset {self.spec.name!r})")
            try:
                values = np.array([float(field) for field in fields[1:]])
            except ValueError:
                raise LayoutError(f"{where}: the joints must be numbers (u v d), got {' '.join(fields[1:4])} ...") from None
            if not np.all(np.isfinite(values)):
                raise LayoutError(f"{where}: the joints hold NaN or inf")
            names.append(fields[0])
            rows.append(values.reshape(count, 3))
        if not rows:
            raise LayoutError(f"{self.labels_path}: no labelled frame (one line per frame: file name, then u v d x {count})")
        return names, np.stack(rows)

    def __len__(self) -> int:
        return len(self._table[0])

    def check_images(self) -> None:
        first = self.depth_path(0, 1)
        if not first.is_file():
            raise LayoutError(f"{first} is missing: {self.labels_path} line 1 names it")
        self.depth(0, 1)

    def frames_without_labels(self) -> list[int]:
        """A png-uvd folder has no frame numbers beyond its labels file: PNGs it does not name are not frames."""
        return []

    def labels(self, index: int, cam: int) -> FrameLabels:
        uvd = self._table[1][index]
        return FrameLabels(uvd, geometry.uvd_to_xyz(uvd, self.spec.camera), self.spec.joints)

    def all_labels(self, cam: int) -> FrameLabels:
        uvd = self._table[1]
        return FrameLabels(uvd, geometry.uvd_to_xyz(uvd, self.spec.camera), self.spec.joints)

    def depth_path(self, index: int, cam: int, domain: str = "real") -> Path:
        if domain != "real":
            raise LayoutError(f"dataset {self.spec.name!r} has no {domain} images (synthetic: false)")
        return self.folder / self._table[0][index]

    def depth(self, index: int, cam: int, domain: str = "real") -> np.ndarray:
        """uint16 depth in mm (height, width of the camera). A missing or unreadable file names its path."""
        return read_depth_frame(self.depth_path(index, cam, domain), self.spec,
                                f"frame {index}, line {index + 1} of {self.labels_path.name}")

"""The one interface between a dataset's files and the shard writer: a split of frames with labels.

    open_split(root, split, spec) -> FrameReader      the reader `spec.reader` names, for one split

A FrameReader gives, per 0-based frame and 1-based physical camera, the labels of all source joints
(`FrameLabels`: uvd, xyz and the spec's JointSpec) and the depth images in mm of each of its domains
(real, and synth where the spec says the layout has synthetic twins), plus what make-shards records
about its source (root, the labels file for its digest, image paths for the shard digests).

    READERS["nyu-layout"]   frames/nyu.py: the NYU download, every procedural dataset (C cameras, .mat labels,
                            depth_* and synthdepth_* PNGs)
    READERS["png-uvd"]      frames/png_folder.py: one camera, 16-bit depth PNGs, one labels text file per split

A dataset in another layout adds its reader class here and names it in its spec (docs/datasets.md).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from murauer_dist.frames.datasets import DatasetError, DatasetSpec, JointSpec

SPLITS = ("train", "test")


@dataclass(frozen=True)
class FrameLabels:
    """Joints of one frame (or of all frames, with a leading axis) in one camera: all source joints,
    uvd (px, px, mm) and xyz (mm, in the dataset camera's axes); `joints` says which are evaluated and
    which is the crop centre."""

    uvd: np.ndarray   # (..., J_source, 3)
    xyz: np.ndarray   # (..., J_source, 3)
    joints: JointSpec

    @property
    def eval_uvd(self) -> np.ndarray:
        return self.uvd[..., list(self.joints.evaluated), :]

    @property
    def eval_xyz(self) -> np.ndarray:
        return self.xyz[..., list(self.joints.evaluated), :]

    @property
    def center_uvd(self) -> np.ndarray:
        return self.uvd[..., self.joints.center_source, :]

    @property
    def center_xyz(self) -> np.ndarray:
        return self.xyz[..., self.joints.center_source, :]


class FrameReader(Protocol):
    root: Path
    split: str                                 # "train" or "test"
    folder: Path
    spec: DatasetSpec

    @property
    def labels_path(self) -> Path: ...         # the labels file (its SHA-256 goes into the manifest)

    @property
    def cameras(self) -> tuple[int, ...]: ...  # physical cameras 1..C

    def __len__(self) -> int: ...              # frames; loads and checks the labels

    def check_images(self) -> None: ...        # LayoutError unless depth images of the spec's domains exist

    def frames_without_labels(self) -> list[int]: ...   # frames with images but no labels (sorted)

    def labels(self, index: int, cam: int) -> FrameLabels: ...

    def all_labels(self, cam: int) -> FrameLabels: ...

    def depth_path(self, index: int, cam: int, domain: str = "real") -> Path: ...

    def depth(self, index: int, cam: int, domain: str = "real") -> np.ndarray: ...


# reader key -> "module:class", imported when a split is opened (the readers import this module)
READERS: dict[str, str] = {"nyu-layout": "murauer_dist.frames.nyu:NyuSplit",
                           "png-uvd": "murauer_dist.frames.png_folder:PngUvdSplit"}


def reader_class(key: str) -> type:
    module, name = READERS[key].split(":")
    return getattr(importlib.import_module(module), name)


def open_split(root: str | os.PathLike, split: str, spec: DatasetSpec) -> FrameReader:
    """Split `split` ("train" or "test") of the dataset at `root`, read as `spec` says."""
    if spec.reader not in READERS:
        raise DatasetError(f"dataset {spec.name!r} names reader {spec.reader!r}; known readers: {', '.join(READERS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return reader_class(spec.reader)(root, split, spec)

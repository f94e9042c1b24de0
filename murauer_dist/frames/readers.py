"""The one interface between a dataset's files and the shard writer: a split of frames with labels.

    open_split(root, split, spec) -> FrameReader      the reader `spec.reader` names, for one split

A FrameReader gives, per 0-based frame and 1-based physical camera, the labels of all source joints
(`FrameLabels`: uvd, xyz and the spec's JointSpec) and the depth images of both domains in mm, plus
what make-shards records about its source (root, joint_data path, image paths for the digests).
NYU's folder layout (frames/nyu.py) serves the real NYU download and every procedural dataset; a
dataset in another layout adds its reader class to READERS and names it in its DatasetSpec.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from murauer_dist.frames import nyu
from murauer_dist.frames.datasets import DatasetError, DatasetSpec


class FrameReader(Protocol):
    root: Path
    split: str
    folder: Path
    spec: DatasetSpec

    @property
    def mat_path(self) -> Path: ...            # the labels file (its SHA-256 goes into the manifest)

    @property
    def cameras(self) -> tuple[int, ...]: ...  # physical cameras 1..C

    def __len__(self) -> int: ...              # frames; loads and checks the labels

    def check_images(self) -> None: ...        # LayoutError unless depth images of both domains exist

    def labels(self, index: int, cam: int) -> nyu.FrameLabels: ...

    def all_labels(self, cam: int) -> nyu.FrameLabels: ...

    def depth_path(self, index: int, cam: int, domain: str = "real") -> Path: ...

    def depth(self, index: int, cam: int, domain: str = "real") -> np.ndarray: ...


READERS: dict[str, type] = {"nyu-layout": nyu.NyuSplit}


def open_split(root: str | os.PathLike, split: str, spec: DatasetSpec) -> FrameReader:
    """Split `split` ("train" or "test") of the dataset at `root`, read as `spec` says."""
    if spec.reader not in READERS:
        raise DatasetError(f"dataset {spec.name!r} names reader {spec.reader!r}; known readers: {', '.join(READERS)}")
    return READERS[spec.reader](root, split, spec)

"""`murauer-dist synth-data OUT`: write the procedural dataset in the NYU layout.

    OUT/{train,test}/depth_{cam}_{frame:07d}.png       real domain (actor hand + sensor model)
    OUT/{train,test}/synthdepth_{cam}_{frame:07d}.png  synthetic domain (template hand, clean)
    OUT/{train,test}/joint_data.mat                     joint_uvd, joint_xyz (3, N, 36, 3), joint_names
    OUT/procedural.json                                 what made it (seed, counts, shapes, sensor)

`dataset` (datasets.DATASETS, default nyu) chooses the camera of the rig (intrinsics, image size, y
axis) and the depth PNG encoding; procedural.json records it (and the camera) unless it is NYU.

Pose sequences are made in this process; frames are rendered by worker processes in chunks, each
frame from its own (seed, split, frame) RNG, so the bytes do not depend on the number of workers.
Each file is written atomically; joint_data.mat last, so an interrupted run is not a valid split.
"""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from murauer_dist.atomic import atomic_write_bytes
from murauer_dist.frames import nyu
from murauer_dist.frames.procedural import hand, png
from murauer_dist.folder_lock import LOCK_NAME, FolderLock
from murauer_dist.frames.procedural.realism import DEFAULT_PROFILE, PROFILES as REALISM_PROFILES
from murauer_dist.frames.procedural.frames import ACTORS, FrameRenderer, GeneratorSettings, make_split_sequence
from murauer_dist.frames.datasets import DATASETS, DEFAULT_DATASET
from murauer_dist.errors import UserError
from murauer_dist.memory import keep_freed_memory
from murauer_dist.tracking.progress import ProgressLines

CHUNK_FRAMES = 8
# The generator's name as the first release wrote it (module path since moved): same seed, same bytes.
GENERATOR = "murauer_dist.data.procedural"
MAT_HEADER = f"MATLAB 5.0 MAT-file, written by {GENERATOR}"
OWN_PATTERNS = ("depth_?_???????.png", "synthdepth_?_???????.png", "joint_data.mat")
_WORKER: dict = {}                                # per-process renderers, set by _init_worker


class SynthDataError(UserError, ValueError):
    """Arguments or an output folder that the generator cannot use."""


def synth_data(out: str | os.PathLike, frames_train: int = 4000, frames_test: int = 800, seed: int = 0,
               workers: int = 2, overwrite: bool = False, settings: GeneratorSettings | None = None,
               progress: bool | None = None, timings: list | None = None, dataset: str | None = None,
               realism: str | None = None) -> Path:
    """Write the dataset to `out` and return its path; see the module docstring for the layout.

    `progress`: True: a tqdm bar; False: nothing; None (default): a bar when stderr is a terminal,
    otherwise a line at every 10 % and at least every 30 s with frames/s and the ETA. `timings`: if a
    list, gets (perf_counter, frames done) after every finished chunk (for the benchmark). `realism`: a
    profile name of realism.PROFILES (default: the settings', else "default").
    """
    counts = {"train": _positive_int("frames_train", frames_train), "test": _positive_int("frames_test", frames_test)}
    workers = _positive_int("workers", workers)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise SynthDataError(f"seed must be a non-negative integer, got {seed!r}")
    if settings is not None and dataset is not None and settings.dataset != dataset:
        raise SynthDataError(f"dataset {dataset!r} and settings of dataset {settings.dataset!r} disagree")
    if dataset is not None and dataset not in DATASETS:
        raise SynthDataError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if realism is not None and realism not in REALISM_PROFILES:
        raise SynthDataError(f"--realism must be one of {', '.join(REALISM_PROFILES)}, got {realism!r}")
    if settings is not None and realism is not None and settings.realism.name != realism:
        raise SynthDataError(f"realism {realism!r} and settings of realism {settings.realism.name!r} disagree")
    _check_writable(Path(out))
    settings = settings or GeneratorSettings.for_dataset(dataset or DEFAULT_DATASET,
                                                         realism=REALISM_PROFILES[realism or DEFAULT_PROFILE])
    # One generator per folder: a second one (another experiment on the same data.root) would clear the
    # files this one is writing.
    with FolderLock(out, "synth-data OUT"):
        return _generate(_prepare_output(Path(out), overwrite), int(seed), counts, settings, workers, progress,
                         timings)


def _generate(root: Path, seed: int, counts: dict, settings: GeneratorSettings, workers: int, progress,
              timings) -> Path:
    keep_freed_memory()                     # here and in the forked workers: no fresh pages per image
    sequences = {split: make_split_sequence(seed, split, n, settings) for split, n in counts.items()}
    total = sum(counts.values())
    if progress is None and not sys.stderr.isatty():
        view = ProgressLines(total, "synth-data", unit="frames")
    else:
        view = tqdm(total=total, desc="synth-data", unit="frame", disable=progress is False)
    with view as bar:
        for split in counts:
            (root / split).mkdir(parents=True, exist_ok=True)
        labels = _render_all(root, seed, sequences, settings, workers, _Progress(bar, timings))
    for split, (uvd, xyz) in labels.items():
        _write_joints(root / split / "joint_data.mat", uvd, xyz)
    _write_manifest(root, seed, counts, settings)
    return root


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise SynthDataError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_writable(root: Path) -> None:
    """Stop before anything is written when `root` cannot take the dataset."""
    if root.exists() and not root.is_dir():
        raise SynthDataError(f"output {root} exists and is not a folder")
    ancestor = root
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise SynthDataError(f"cannot write the dataset to {root}: {ancestor} is not a writable folder")


def _prepare_output(root: Path, overwrite: bool) -> Path:
    """Clear our old files from `root` (with overwrite; else it must be empty but for the lock)."""
    if any(path.name != LOCK_NAME for path in root.iterdir()):
        if not overwrite:
            raise SynthDataError(f"output folder {root} is not empty; choose another OUT or pass --overwrite")
        for split in nyu.SPLITS:
            for pattern in OWN_PATTERNS:
                for path in (root / split).glob(pattern):
                    path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _render_all(root: Path, seed: int, sequences: dict, settings: GeneratorSettings, workers: int, bar) -> dict:
    tasks = [(split, start, min(start + CHUNK_FRAMES, len(seq["segment"])))
             for split, seq in sequences.items() for start in range(0, len(seq["segment"]), CHUNK_FRAMES)]
    labels = {split: {"uvd": np.zeros((3, len(seq["segment"]), hand.NUM_JOINTS, 3)),
                      "xyz": np.zeros((3, len(seq["segment"]), hand.NUM_JOINTS, 3))}
              for split, seq in sequences.items()}
    init_args = (str(root), seed, sequences, settings)
    if workers == 1:
        _init_worker(*init_args)
        results = map(_render_chunk, tasks)
        _collect(results, labels, bar)
    else:
        # fork: no re-import of the caller's __main__ (a plain script works without a main guard);
        # the workers only run numpy/scipy/PIL code, never the parent's threads.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
            _collect(pool.imap_unordered(_render_chunk, tasks), labels, bar)
    return {split: (arrays["uvd"], arrays["xyz"]) for split, arrays in labels.items()}


class _Progress:
    def __init__(self, bar, timings: list | None):
        self.bar, self.timings, self.done = bar, timings, 0

    def update(self, frames: int) -> None:
        self.bar.update(frames)
        self.done += frames
        if self.timings is not None:
            self.timings.append((time.perf_counter(), self.done))


def _collect(results, labels: dict, bar) -> None:
    for split, start, uvd, xyz in results:
        labels[split]["uvd"][:, start:start + uvd.shape[1]] = uvd
        labels[split]["xyz"][:, start:start + xyz.shape[1]] = xyz
        bar.update(uvd.shape[1])


def _init_worker(root: str, seed: int, sequences: dict, settings: GeneratorSettings) -> None:
    renderers = {}
    for split, sequence in sequences.items():
        bank = next(iter(renderers.values())).bank if renderers else None
        renderers[split] = FrameRenderer(seed, split, sequence, settings, bank=bank)
    _WORKER.update(root=Path(root), renderers=renderers, encode=png.ENCODERS[settings.spec.depth_encoding])


def _render_chunk(task: tuple[str, int, int]):
    split, start, stop = task
    renderer, folder = _WORKER["renderers"][split], _WORKER["root"] / split
    uvd, xyz = [], []
    for index in range(start, stop):
        frame = renderer.render(index)
        for cam in (1, 2, 3):
            for domain in ("real", "synth"):
                path = folder / nyu.depth_filename(domain, cam, index)
                atomic_write_bytes(path, _WORKER["encode"](frame[domain][cam - 1]))
        uvd.append(frame["uvd"])
        xyz.append(frame["xyz"])
    return split, start, np.stack(uvd, axis=1), np.stack(xyz, axis=1)


def _write_joints(path: Path, uvd: np.ndarray, xyz: np.ndarray) -> None:
    buffer = io.BytesIO()
    names = np.empty((1, hand.NUM_JOINTS), dtype=object)
    names[0, :] = hand.JOINT_NAMES
    scipy.io.savemat(buffer, {"joint_uvd": uvd, "joint_xyz": xyz,
                              "joint_names": names}, do_compression=False)
    # The MAT 5 header's 116-byte text holds the creation time: fix it so same seed = same bytes.
    data = bytearray(buffer.getvalue())
    data[:116] = MAT_HEADER.ljust(116).encode("ascii")
    atomic_write_bytes(path, bytes(data))


def model_record(settings: GeneratorSettings) -> dict:
    """The hands' and the sensor's parameters as procedural.json records them (JSON types): data made by
    a generator with other values is not reused."""
    record = {"actors": {split: asdict(shape) for split, shape in ACTORS.items()}, "template": asdict(hand.TEMPLATE),
              "sensor": settings.sensor.to_dict()}
    return json.loads(json.dumps(record))


def _write_manifest(root: Path, seed: int, counts: dict, settings: GeneratorSettings) -> None:
    manifest = {
        "generator": GENERATOR, "seed": seed, "frames": counts, **model_record(settings),
        "motion": asdict(settings.motion),
        "rig": {"rotations": settings.rig.rotations.tolist(), "centers_mm": settings.rig.centers.tolist()},
    }
    if settings.dataset != DEFAULT_DATASET:                       # absent: nyu (and files made before)
        manifest["dataset"] = settings.dataset
        manifest["camera"] = asdict(settings.rig.camera)
    if settings.realism.name != DEFAULT_PROFILE:                  # absent: the default profile
        manifest["realism"] = settings.realism.to_dict()
    split = settings.realism.test_subject_split(counts["test"])
    if split is not None:                     # first test frame of the second actor (the eval's subject split)
        manifest["test_subject_split"] = split
    atomic_write_bytes(root / "procedural.json", (json.dumps(manifest, indent=2) + "\n").encode())

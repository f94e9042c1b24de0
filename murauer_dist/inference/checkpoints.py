"""The one way to load a checkpoint for inference: `load_inference(PATH)`.

PATH is a run folder (its checkpoints/final-main.pt, else its latest checkpoint) or a file. The file's
`format` field says what it holds: a centre refiner (inference/refiner.py FORMAT, the file
`murauer-dist train-refiner` writes) or else a pose network (the files `murauer-dist train` and
`import-original` write). Each comes back as its own small record, ready to run: PoseCheckpoint
(network in eval mode, config, mapped, dataset spec, crop size, cube) or RefinerCheckpoint.
`load_pose` and `load_refiner` ask for one kind and say what to do when given the other.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from murauer_dist.config import config_from_dict
from murauer_dist.errors import UserError
from murauer_dist.frames.datasets import DatasetSpec, spec_of
from murauer_dist.inference.refiner import FORMAT as REFINER_FORMAT
from murauer_dist.inference.refiner import VERSION as REFINER_VERSION
from murauer_dist.inference.refiner import CentreRefiner
from murauer_dist.models import build_model
from murauer_dist.paths import what_is
from murauer_dist.train.checkpoint import (CheckpointError, checkpoint_uses_mapping, describe_non_finite,
                                           load_checkpoint, non_finite_tensors, resolve_checkpoint)

POSE, REFINER = "pose network", "centre refiner"
_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, TypeError)


class RefinerError(UserError, ValueError):
    """A refiner checkpoint that cannot be read or does not fit the pose model or data."""


@dataclass
class PoseCheckpoint:
    """A pose network ready to run: model.predict(crops, mapped) gives normalised joints (B, J, 3) of real
    crops through the path the model was trained for (mapped unless the run never trained the mapping)."""

    path: Path                       # the checkpoint file
    model: nn.Module                 # eval mode, on the device it was loaded for
    config: object                   # the Config of the run that wrote it
    mapped: bool

    @property
    def spec(self) -> DatasetSpec:
        """The dataset the network was trained on (data.dataset): camera, joints, depth encoding."""
        return spec_of(self.config)

    @property
    def crop_size(self) -> int:
        return int(self.config.data.crop_size)

    @property
    def cube_mm(self) -> float:
        return float(self.config.data.cube_mm)


@dataclass
class RefinerCheckpoint:
    """A centre refiner ready to run: the network (eval mode), its crop size, cube and dataset name."""

    model: CentreRefiner
    crop_size: int
    cube_mm: float
    dataset: str
    path: Path
    step: int = 0
    metrics: dict = field(default_factory=dict)

    def check_fits(self, crop_size: int, dataset: str, what: str) -> None:
        """RefinerError unless the refiner was trained for this crop size and dataset (`what` names the other side)."""
        if dataset != self.dataset:
            raise RefinerError(f"refiner {self.path} was trained on dataset {self.dataset!r}, but {what} is of dataset "
                               f"{dataset!r} (another camera); train a refiner on its data with "
                               f"`murauer-dist train-refiner PRESET data.dataset={dataset}`")
        if crop_size != self.crop_size:
            raise RefinerError(f"refiner {self.path} was trained on {self.crop_size}x{self.crop_size} crops, but {what} "
                               f"uses {crop_size}x{crop_size} crops; train the refiner on the same shards "
                               f"(`murauer-dist train-refiner PRESET data.crop_size={crop_size} data.shards=...`)")


def load_inference(path: str | os.PathLike, device: str | torch.device = "cpu",
                   expect: str | None = None) -> PoseCheckpoint | RefinerCheckpoint:
    """The checkpoint at `path` (a run folder or a file), of the kind its format field says; `expect`
    (POSE or REFINER) refuses the other kind with a message that says where it goes."""
    if expect == REFINER:
        file, state = Path(path), _read_refiner_file(Path(path))
    else:
        file = resolve_checkpoint(path)
        state = load_checkpoint(file, map_location="cpu")
    kind = REFINER if isinstance(state, dict) and state.get("format") == REFINER_FORMAT else POSE
    if expect is not None and kind != expect:
        raise _wrong_kind(file, state, expect)
    return _refiner_from(state, file, device) if kind == REFINER else _pose_from(state, file, device)


def load_pose(path: str | os.PathLike, device: str | torch.device = "cpu") -> PoseCheckpoint:
    """A pose network; a refiner file is refused with a pointer to --refiner."""
    return load_inference(path, device, expect=POSE)


def load_refiner(path: str | os.PathLike, device: str | torch.device = "cpu") -> RefinerCheckpoint:
    """A centre refiner file (not a run folder); a pose network is refused with a pointer to CHECKPOINT."""
    return load_inference(path, device, expect=REFINER)


def _read_refiner_file(path: Path) -> dict:
    """torch.load(weights_only) of a file given as a refiner; a RefinerError naming the file."""
    if not path.is_file():
        raise RefinerError(f"refiner checkpoint {path} {what_is(path)} (write one with `murauer-dist train-refiner "
                           f"PRESET`)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as err:
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise RefinerError(f"refiner checkpoint {path}: cannot be read, truncated or not a murauer_dist file "
                           f"({type(err).__name__}: {first})") from err


def _wrong_kind(path: Path, state, expect: str) -> UserError:
    if expect == POSE:
        return CheckpointError(f"checkpoint {path} is a centre refiner (`murauer-dist train-refiner` writes it), not a "
                               f"pose model: give a pose model here (a run folder or its checkpoints/final-main.pt) "
                               f"and this file as --refiner")
    if isinstance(state, dict) and "model" in state and "stage" in state:
        return RefinerError(f"{path} is a pose model checkpoint, not a centre refiner: give it as CHECKPOINT and the "
                            f"file `murauer-dist train-refiner` writes as --refiner")
    return RefinerError(f"{path} is not a centre refiner checkpoint (no format {REFINER_FORMAT!r}); "
                        f"write one with `murauer-dist train-refiner PRESET`")


def _pose_from(state: dict, path: Path, device) -> PoseCheckpoint:
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"checkpoint {path}: no config in it, so its network cannot be built; it was not written "
                              f"by `murauer-dist train` or `import-original`")
    cfg = config_from_dict(state["config"])
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[1:2] or [""]
        raise CheckpointError(f"checkpoint {path}: its weights do not fit the network its config describes "
                              f"({first[0].strip()[:160]}); the file was changed or damaged") from None
    bad = non_finite_tensors(state["model"])
    if bad:
        raise CheckpointError(f"checkpoint {path}: {describe_non_finite(bad)}; a model with such weights predicts "
                              f"NaN: use an earlier checkpoint of the run")
    return PoseCheckpoint(path, model.to(device).eval(), cfg, checkpoint_uses_mapping(state))


def _refiner_from(state: dict, path: Path, device) -> RefinerCheckpoint:
    if state.get("version") != REFINER_VERSION:
        raise RefinerError(f"refiner checkpoint {path}: version {state.get('version')!r}, this code reads version "
                           f"{REFINER_VERSION}; train it again with `murauer-dist train-refiner`")
    if "dataset" not in state:
        raise RefinerError(f"refiner checkpoint {path}: no dataset recorded in it, so the camera it was trained for "
                           f"is unknown; train it again with `murauer-dist train-refiner`")
    arch, size = state["architecture"], int(state["crop_size"])
    model = CentreRefiner(size, int(arch["width"]), int(arch["max_width"]), int(arch["hidden"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RefinerError(f"refiner checkpoint {path}: its weights do not fit a {state['crop_size']}x"
                           f"{state['crop_size']} refiner of {arch}: the file was changed or damaged; train it again "
                           f"with `murauer-dist train-refiner`") from err
    return RefinerCheckpoint(model.to(device).eval(), size, float(state["cube_mm"]), str(state["dataset"]), path,
                             int(state.get("step", 0)), state.get("metrics", {}))

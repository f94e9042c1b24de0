"""Complete, atomic checkpoints and automatic resume.

A checkpoint holds the model, the discriminator, both engines' optimizer/schedule state, the
position (stage, epoch, iteration, steps), the counters, every rank's RNG states and data
position, and the resolved config. Everything is stored as tensors and plain Python values, so it
loads with torch.load(weights_only=True).

Files in RUN_DIR/checkpoints/: ckpt-{global step}.pt (every train.checkpoint_every steps and on
a stop signal; the latest train.keep_checkpoints kept) and final-{stage}.pt (end of a stage,
never rotated: final-pretrain.pt is the synthetic-only model a later run may start from).

A checkpoint that cannot be read (cut short by a crash or a copy) never blocks a resume: the newest
readable one is used, and the training run renames the unreadable file to NAME.unreadable (kept for
inspection, out of the way of rotation and of the file the resumed run writes next).

RUN_DIR/config.yaml is the run's resolved config (credentials redacted), written when the run starts
and rewritten only together with a record in RUN_DIR/config-changes.yaml (train/run_config.py decides).
"""
from __future__ import annotations

import errno
import os
import pickle
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from murauer_dist.atomic import atomic_open, atomic_write_text
from murauer_dist.config import config_from_dict, save_config
from murauer_dist.errors import UserError, free_space
from murauer_dist.methods import STAGES, uses_mapping
from murauer_dist.paths import what_is
from murauer_dist.tracking.secrets import scrub_secrets

_NAME = re.compile(rf"^(ckpt-(?P<step>\d+)|final-(?P<stage>{'|'.join(STAGES)}))\.pt$")
UNREADABLE_SUFFIX = ".unreadable"
CONFIG_FILE = "config.yaml"
CHANGES_FILE = "config-changes.yaml"
# What torch.load raises on a file cut short, a file of another kind, or a damaged archive.
_READ_ERRORS = (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError,
                UnicodeDecodeError)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be read, used or written; the message names the file."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message        # the message without the file name


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A checkpoint file or run directory that is not there."""


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def plain(value):
    """numpy values -> Python lists/scalars (so a checkpoint loads with weights_only=True)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain(item) for item in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": plain(np.random.get_state(legacy=False)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {**numpy_state["state"], "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Periodic checkpoints of RUN_DIR, oldest first."""
    folder = checkpoint_dir(run_dir)
    found = [p for p in folder.glob("ckpt-*.pt") if _NAME.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group("step")))


def _set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to NAME.unreadable (NAME.unreadable-2 ... if taken); never deletes it."""
    target, number = path.with_name(path.name + UNREADABLE_SUFFIX), 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}{UNREADABLE_SUFFIX}-{number}")
    os.rename(path, target)
    return target


def find_resumable(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu",
                   set_aside: bool = False) -> tuple[Path | None, dict | None]:
    """(path, state) of the newest readable checkpoint by global step (final files count at their step,
    after the periodic file of the same step); (None, None) when there is none.

    Unreadable files are skipped with a message naming them and why; with `set_aside` (the training run's
    main rank) they are renamed to NAME.unreadable and kept. Checkpoints that exist but none of which
    can be read are an error: starting over silently would throw the run away.
    """
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None, None
    loaded, candidates, skipped = {}, [], []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if not match:
            continue
        if match.group("step") is not None:
            candidates.append(((int(match.group("step")), 0), path))
            continue
        try:                                  # a final file's step is inside it
            loaded[path] = _training_state(path, map_location)
        except CheckpointError as err:
            skipped.append((path, err))
            continue
        candidates.append(((int(loaded[path]["global_step"]), 1 + STAGES.index(match.group("stage"))), path))
    found, state = None, None
    for _, path in sorted(candidates, reverse=True):
        try:
            state = loaded[path] if path in loaded else _training_state(path, map_location)
        except CheckpointError as err:
            skipped.append((path, err))
            continue
        found = path
        break
    for path, err in skipped:
        kept = f"; kept as {_set_aside(path).name}" if set_aside and path.exists() else ""
        print(f"[checkpoint] skipping {path}: {err.reason}{kept}", file=sys.stderr, flush=True)
    if found is None and skipped:
        raise CheckpointError(f"no readable checkpoint in {folder} ({len(skipped)} unreadable, see above); move the "
                              "folder away to start this run over, or choose another train.out")
    if found is not None and skipped:
        print(f"[checkpoint] falling back to {found}", file=sys.stderr, flush=True)
    return found, state


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: the newest readable one by global step (see find_resumable)."""
    return find_resumable(run_dir)[0]


def save_checkpoint(run_dir: str | os.PathLike, state: dict, keep: int, final: bool = False) -> Path:
    """Write atomically (temp file + rename); keep the newest `keep` periodic files.

    A full disk (or quota) is a CheckpointError naming the file and the free space; the temp file is
    removed, so the previous checkpoints stay the newest complete ones.
    """
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"final-{state['stage']}.pt" if final else f"ckpt-{int(state['global_step']):09d}.pt"
    path = folder / name
    try:
        with atomic_open(path, "wb") as handle:
            torch.save(plain(state), handle)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise CheckpointError(
            f"cannot write checkpoint {path}: no space left on the device ({free_space(folder)}); "
            "nothing was half-written. Free some space (or use a train.out on a larger disk) and run the same "
            "command again: it resumes from the last complete checkpoint") from err
    if not final and keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err)) if isinstance(err, pickle.UnpicklingError) else None
    kind = what_is(path)
    if found:
        reason = (f"it holds Python objects ({found.group(1)}), not only tensors and plain values, so "
                  "torch.load(weights_only=True) refuses it: it was not written by murauer_dist (load only files you "
                  "trust)")
    elif not kind.startswith(("is a ZIP", "is a Python pickle")):
        reason = f"not a checkpoint: it {kind}"
        return CheckpointError(f"checkpoint {path}: {reason} (a checkpoint is a torch file that `murauer-dist train` "
                               f"writes)", reason)
    else:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        reason = f"cannot be read, truncated or not a murauer_dist checkpoint ({type(err).__name__}: {first})"
    return CheckpointError(f"checkpoint {path}: {reason}", reason)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint's state dict (weights_only); CheckpointError naming the file when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"checkpoint {path} {what_is(path)}" + ("" if path.exists() else
                                     " (expected a checkpoint file or a run folder)"))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _unreadable(path, err) from err
    except _READ_ERRORS as err:
        raise _unreadable(path, err) from err
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        reason = "not a murauer_dist checkpoint (no 'model' weights in it)"
        raise CheckpointError(f"checkpoint {path}: {reason}", reason)
    return state


def _training_state(path: Path, map_location) -> dict:
    """A checkpoint the training loop can resume from (all of its position fields present)."""
    state = load_checkpoint(path, map_location)
    missing = [key for key in ("stage", "stage_done", "global_step", "epoch", "iteration", "stage_step",
                               "model_engine", "disc_engine", "config") if key not in state]
    if missing or state.get("stage") not in STAGES:
        reason = f"not a training checkpoint (missing {', '.join(missing) or 'a known stage'})"
        raise CheckpointError(f"checkpoint {path}: {reason}", reason)
    return state


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its final-main.pt, else its latest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        final = checkpoint_dir(path) / "final-main.pt"
        found = final if final.is_file() else latest_checkpoint(path)
        if found is None:
            raise MissingCheckpointError(f"run directory {path} has no checkpoints/ (train it with `murauer-dist train`)")
        return found
    return path


# ---- the run directory's config record ---------------------------------------------------------

def read_run_config(run_dir: str | os.PathLike) -> dict | None:
    """RUN_DIR/config.yaml as a tree, None when absent; an unreadable file is a UserError naming it."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path} cannot be read ({type(err).__name__}); it records this run's config: restore it, "
                        "or choose another train.out") from None
    if not isinstance(tree, dict):
        raise UserError(f"{path} is not a config (a mapping of sections); restore it, or choose another train.out")
    return tree


def write_run_config(cfg, run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir) / CONFIG_FILE
    save_config(cfg, path)
    return path


def record_config_changes(run_dir: str | os.PathLike, changes: dict[str, tuple], step: int, forced: bool) -> Path:
    """Append one record ({time, step, forced, changes: {key: {old, new}}}) to RUN_DIR/config-changes.yaml."""
    path = Path(run_dir) / CHANGES_FILE
    records = []
    if path.is_file():
        try:
            records = yaml.safe_load(path.read_text()) or []
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            records = []
        if not isinstance(records, list):
            records = [records]
    records.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "global_step": int(step),
                    "forced": bool(forced),
                    "changes": scrub_secrets({key: {"old": old, "new": new} for key, (old, new) in changes.items()})})
    atomic_write_text(path, yaml.safe_dump(records, sort_keys=False))
    return path


def checkpoint_uses_mapping(state: dict) -> bool:
    """Whether the checkpoint's model runs real images through m: its method and stage decide
    (methods.uses_mapping); checkpoints of earlier versions stored the answer as "eval_mapped"."""
    if "eval_mapped" in state:
        return bool(state["eval_mapped"])
    return uses_mapping(state["config"]["train"]["method"], state["stage"])


def non_finite_tensors(weights: dict) -> dict[str, int]:
    """{name: count of NaN/inf values} of the floating-point tensors of a state dict that hold any."""
    bad = {}
    for name, tensor in weights.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad[name] = count
    return bad


def describe_non_finite(bad: dict[str, int]) -> str:
    names = list(bad)
    shown = ", ".join(f"{name} ({bad[name]} value(s))" for name in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{len(names)} weight tensor(s) hold NaN or inf: {shown}{more}"

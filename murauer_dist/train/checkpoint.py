"""Complete, atomic checkpoints and automatic resume.

A checkpoint holds the model, the discriminator, both engines' optimizer/schedule state, the
position (stage, epoch, iteration, steps), the counters, every rank's RNG states and data
position, and the resolved config. Everything is stored as tensors and plain Python values, so it
loads with torch.load(weights_only=True).

Files in RUN_DIR/checkpoints/: ckpt-{global step}.pt (every train.checkpoint_every steps and on
a stop signal; the latest train.keep_checkpoints kept) and final-{stage}.pt (end of a stage,
never rotated: final-pretrain.pt is the synthetic-only model a later run may start from).
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from murauer_dist.atomic import atomic_open

from murauer_dist.config import config_from_dict

STAGES = ("pretrain", "main")
_NAME = re.compile(r"^(ckpt-(?P<step>\d+)|final-(?P<stage>pretrain|main))\.pt$")


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


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: the newest by global step (final files count at their step)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    candidates = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if not match:
            continue
        if match.group("step") is not None:
            candidates.append(((int(match.group("step")), 0), path))
        else:
            step = int(load_checkpoint(path)["global_step"])
            candidates.append(((step, 1 + STAGES.index(match.group("stage"))), path))
    return max(candidates)[1] if candidates else None


def save_checkpoint(run_dir: str | os.PathLike, state: dict, keep: int, final: bool = False) -> Path:
    """Write atomically (temp file + rename); keep the newest `keep` periodic files."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"final-{state['stage']}.pt" if final else f"ckpt-{int(state['global_step']):09d}.pt"
    path = folder / name
    with atomic_open(path, "wb") as handle:
        torch.save(plain(state), handle)
    if not final and keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError) as err:
        raise RuntimeError(f"checkpoint {path} cannot be read (truncated or not a murauer_dist checkpoint): {err}") from err


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its final-main.pt, else its latest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        final = checkpoint_dir(path) / "final-main.pt"
        found = final if final.is_file() else latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"run directory {path} has no checkpoints/ (train it with `murauer-dist train`)")
        return found
    return path


def load_for_inference(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode on `device`, its Config) from a checkpoint file or a run directory.

    model.predict(depth) gives normalised joints (B, J, 3) through the path the model was trained
    for (mapped for real images unless the run never trained the mapping).
    """
    from murauer_dist.models import build_model

    state = load_checkpoint(resolve_checkpoint(path), map_location="cpu")
    cfg = config_from_dict(state["config"])
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.eval_mapped = bool(state.get("eval_mapped", True))
    return model.to(device).eval(), cfg

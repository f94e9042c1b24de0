"""What gpu-check runs and what it aims for: section names, targets, per-device defaults, options.

Shared by the runner (sections, defaults), the measurements (variants, crops per frame, import
probes) and the report (targets and their verdicts), so each is stated in one place. torch is
imported here: when it is missing, the environment section reports why and the torch sections skip.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

try:
    import torch
except ImportError as _torch_error:             # reported by the environment section
    torch = None
    TORCH_ERROR = str(_torch_error)
else:
    TORCH_ERROR = ""

SECTIONS = ("environment", "gpu_tests", "dataset", "train_step", "loaders", "dali_parity", "rollover", "ddp",
            "deepspeed", "train_resume", "compile", "memory")
TARGET_ITERS_PER_S = 100.0
TARGET_CROPS_PER_S = 13_000.0
TARGET_DATA_WAIT = 0.05
# Images per frame of each stream in one step: pairs real + synth, views two inputs + two targets.
CROPS_PER_FRAME = {"pairs": 2, "synth": 1, "views": 4, "unlabeled_real": 1, "unlabeled_synth": 1}
PROBES = {"dali": "nvidia.dali", "deepspeed": "deepspeed", "wandb": "wandb", "webdataset": "webdataset",
          "numpy": "numpy", "fire": "fire", "yaml": "yaml", "PIL": "PIL", "scipy": "scipy",
          "matplotlib": "matplotlib", "pytest": "pytest", "triton": "triton"}
DEFAULTS = {
    "cuda": {"preset": "nyu", "steps": 50, "warmup": 10, "frames": 256, "compile_backend": "inductor",
             "budget_s": 600.0},
    "cpu": {"preset": "tiny", "steps": 3, "warmup": 1, "frames": 24, "compile_backend": "eager",
            "budget_s": 600.0},
}
# train_resume: the preset's stages shortened (a few hundred steps on a GPU, a few dozen tiny ones on a
# CPU); stopped by SIGTERM once stage 2 has logged, then resumed to the end with the same command.
RESUME = {
    "cuda": {"train.pretrain_epochs": 1, "train.epochs": 2, "train.iters_per_epoch": 100, "train.log_every": 10},
    "cpu": {"train.pretrain_epochs": 1, "train.epochs": 3, "train.iters_per_epoch": 6, "train.log_every": 1},
}
# rollover: the training stream over `epochs` short epochs (+1 step), the bf16 step between batches.
ROLLOVER = {"cuda": {"iters_per_epoch": 20, "epochs": 3}, "cpu": {"iters_per_epoch": 4, "epochs": 2}}
# dali_parity: largest allowed |difference| of normalised crops and targets (both in about [-1, 1]).
PARITY_TOLERANCE = 1e-5
DEEPSPEED_CONFIG = "configs/deepspeed/zero1-bf16.json"
VARIANTS = (  # name, precision, channels_last (eager; the compiled variant is its own, last section)
    ("fp32", "fp32", False),
    ("bf16", "bf16", False),
    ("bf16 + channels-last", "bf16", True),
)
COMPILED = ("bf16 + channels-last + torch.compile", "bf16", True)


class Skip(Exception):
    """A section or row that cannot run here (missing package, no CUDA, ...): reported, not failed."""


class Budget:
    """The run's time budget as a wall-clock deadline, so a child process can check it too."""

    def __init__(self, deadline: float, budget_s: float):
        self.deadline, self.budget_s = float(deadline), float(budget_s)

    def left(self) -> float:
        return self.deadline - time.time()

    def require_time(self, what: str) -> None:
        if self.left() <= 0:
            raise Skip(f"time budget of {self.budget_s:.0f} s used up before {what}")


@dataclasses.dataclass
class Options:
    out_dir: Path
    device: str
    preset: str
    steps: int
    warmup: int
    frames: int
    compile_backend: str
    budget_s: float
    loader_threads: int
    skip: tuple[str, ...]
    keep_data: bool


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip().splitlines()[0][:400] if str(err) else type(err).__name__

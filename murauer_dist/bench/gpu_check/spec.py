"""What gpu-check runs and what it aims for: section names, targets, per-device defaults, options.

Shared by the runner (sections, defaults), the measurements (variants, crops per frame, import
probes) and the report (targets and their verdicts), so each is stated in one place. torch is
imported here: when it is missing, the environment section reports why and the torch sections skip.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

try:
    import torch
except ImportError as _torch_error:             # reported by the environment section
    torch = None
    TORCH_ERROR = str(_torch_error)
else:
    TORCH_ERROR = ""

SECTIONS = ("environment", "gpu_tests", "dataset", "train_step", "loaders", "ddp", "compile", "memory")
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
             "budget_s": 480.0},
    "cpu": {"preset": "tiny", "steps": 3, "warmup": 1, "frames": 24, "compile_backend": "eager",
            "budget_s": 600.0},
}
VARIANTS = (  # name, precision, channels_last (eager; the compiled variant is its own, last section)
    ("fp32", "fp32", False),
    ("bf16", "bf16", False),
    ("bf16 + channels-last", "bf16", True),
)
COMPILED = ("bf16 + channels-last + torch.compile", "bf16", True)


class Skip(Exception):
    """A section or row that cannot run here (missing package, no CUDA, ...): reported, not failed."""


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

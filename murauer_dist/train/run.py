"""A live training run's state: what the loop, the checkpoint writer (run_state.py) and the guards
(guards.py) share. Run holds the config, the process's place in the job, the models and the
counters; Position is where a stage stands; StopFlag turns SIGTERM/SIGINT into a request to stop.
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from murauer_dist import dist


class StopFlag:
    """SIGTERM/SIGINT set a flag instead of killing the process; a second SIGINT interrupts."""

    def __init__(self):
        self.signal = 0
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclass
class Position:
    """Where a stage stands: 1-based epoch, steps done in that epoch and in the stage."""
    epoch: int = 1
    iteration: int = 0
    stage_step: int = 0


@dataclass
class Counters:
    global_step: int = 0
    skipped_total: int = 0
    skipped_in_a_row: int = 0

    def as_dict(self) -> dict:
        return {"global_step": self.global_step, "skipped_total": self.skipped_total,
                "skipped_in_a_row": self.skipped_in_a_row}


@dataclass
class Run:
    cfg: object
    info: dist.DistInfo
    run_dir: Path
    stream_factory: object
    eval_factory: object
    logger: object
    stop: StopFlag
    model: torch.nn.Module = None
    disc: torch.nn.Module = None
    counters: Counters = field(default_factory=Counters)
    last_val: dict = field(default_factory=dict)

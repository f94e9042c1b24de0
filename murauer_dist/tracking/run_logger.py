"""RunLogger: the one object the training loop talks to for metrics.

Only rank 0 writes anything; other ranks get a logger whose methods do nothing.
Every record lands in RUN_DIR/metrics.jsonl (one JSON object per line: "step", "time", metrics),
so nothing depends on the wandb service; wandb (online, offline or disabled, see wandb_run.py) and
the console view (console.py) get the same records.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from murauer_dist.errors import UserError, with_path
from murauer_dist.tracking.console import ConsoleView
from murauer_dist.tracking.secrets import redact_text
from murauer_dist.tracking.wandb_run import open_wandb_run, resolve_wandb_mode

SUMMARY_STEP = -1  # metrics.jsonl step of the end-of-run summary record


def plain_value(value):
    """A JSON-ready scalar: numbers (python, numpy, 0-d tensors) as float, non-finite and the rest as str."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(float(value)) else str(float(value))
    return redact_text(str(value))


class RunLogger:
    def __init__(self, cfg, run_dir: str | Path, rank: int = 0, total_steps: int = 0, desc: str = "train"):
        self.active = rank == 0
        self.run_dir = Path(run_dir)
        self.wandb_run = None
        self._file = None
        self._console = None
        self._wandb_step = -1    # wandb needs a non-decreasing step across stages
        self._step_offset = 0
        if not self.active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        self.wandb_mode = resolve_wandb_mode(cfg.logging.wandb_mode)
        tree = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        try:
            self.wandb_run = open_wandb_run(tree, cfg.logging, self.run_dir, self.wandb_mode)
        except BaseException:
            self._file.close()
            raise
        self._console = ConsoleView(total_steps, desc, enabled=cfg.logging.progress,
                                    every=getattr(cfg.logging, "console_every", 10))

    def log(self, step: int, metrics: dict[str, float], advance: int = 0) -> None:
        """Record named scalars at `step`; `advance` moves the progress view by that many steps."""
        if not self.active:
            return
        values = {name: plain_value(value) for name, value in metrics.items()}
        self._write(step, values)
        if self.wandb_run is not None and values:
            self.wandb_run.log(values, step=self._next_wandb_step(step))
        self._console.update(advance, values)

    def log_images(self, step: int, images: dict[str, str | Path]) -> None:
        """PNG files by name: their paths go to metrics.jsonl as image/<name>, the pictures to wandb."""
        if not self.active or not images:
            return
        self._write(step, {f"image/{name}": str(path) for name, path in images.items()})
        if self.wandb_run is not None:
            import wandb  # lazy: heavy: wandb (only runs that log to wandb pay for it)
            pictures = {f"image/{name}": wandb.Image(str(path)) for name, path in images.items()}
            self.wandb_run.log(pictures, step=self._next_wandb_step(step))

    def summary(self, metrics: dict[str, float]) -> None:
        """End-of-run numbers (e.g. evaluation): a summary/* record and the wandb run summary."""
        if not self.active:
            return
        values = {name: plain_value(value) for name, value in metrics.items()}
        self._write(SUMMARY_STEP, {f"summary/{name}": value for name, value in values.items()})
        if self.wandb_run is not None:
            self.wandb_run.summary.update(values)

    def close(self, exit_code: int = 0) -> None:
        """Flush and finish (idempotent); a non-zero exit_code marks the wandb run as failed."""
        if self._console is not None:
            self._console.close()
            self._console = None
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=exit_code)
            self.wandb_run = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(exit_code=0 if exc_type is None else 1)

    def _write(self, step: int, values: dict) -> None:
        record = {"step": int(step), "time": time.time(), **values}
        try:
            self._file.write(json.dumps(record) + "\n")
        except OSError as err:                  # a full disk: name the file (a write error names none)
            raise with_path(err, self.run_dir / "metrics.jsonl") from None

    def _next_wandb_step(self, step: int) -> int:
        """The trainer's step, shifted when it restarts (stage 2 after stage 1) so wandb keeps it all."""
        if step + self._step_offset < self._wandb_step:
            self._step_offset = self._wandb_step + 1 - step
        self._wandb_step = step + self._step_offset
        return self._wandb_step


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of RUN_DIR/metrics.jsonl; a broken line is an error naming the file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            # A killed run can leave a half-written last line; anywhere else it is corruption.
            if number == len(lines):
                print(f"[tracking] {path}:{number}: ignoring truncated last line", file=sys.stderr)
                break
            raise UserError(f"{path}:{number}: not a JSON object ({err.msg}); the metrics file is damaged "
                            "(only a killed run's last line may be cut short)") from None
    return records

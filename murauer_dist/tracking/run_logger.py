"""RunLogger: the one object the training loop talks to for metrics.

Only rank 0 writes anything; other ranks get a logger whose methods do nothing.
Every record also lands in RUN_DIR/metrics.jsonl, so nothing depends on the wandb service.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm


class RunLogger:
    def __init__(self, cfg, run_dir: str | Path, rank: int = 0, total_steps: int = 0, desc: str = "train"):
        self.active = rank == 0
        self.run_dir = Path(run_dir)
        self._bar = None
        self._file = None
        if not self.active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if cfg.logging.progress and sys.stderr.isatty():
            self._bar = tqdm(total=total_steps, desc=desc, dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float], advance: int = 0) -> None:
        """Record named scalars at `step`; `advance` moves the progress bar."""
        if not self.active:
            return
        record = {"step": int(step), "time": time.time(),
                  **{k: (float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else str(v))
                     for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        if self._bar is not None:
            if advance:
                self._bar.update(advance)
            shown = {k: f"{v:.4g}" for k, v in metrics.items() if isinstance(v, float)}
            self._bar.set_postfix(shown, refresh=False)

    def log_images(self, step: int, images: dict[str, str | Path]) -> None:
        if self.active:
            self.log(step, {f"image/{name}": str(path) for name, path in images.items()})

    def summary(self, metrics: dict[str, float]) -> None:
        if self.active:
            self.log(-1, {f"summary/{k}": v for k, v in metrics.items()})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._file is not None:
            self._file.close()
            self._file = None

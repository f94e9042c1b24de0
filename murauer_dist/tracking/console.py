"""The live console view of long work: a tqdm bar on a terminal, compact lines otherwise.

On a terminal the bar shows step/total, rate, ETA and the chosen metrics. When stderr is not a
terminal (CI, batch jobs, `> log`), a bar would be noise, so a one-line status is printed every
`every` updates (and at the first and last step) so logs still show progress.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

# Metrics worth the space on one line: losses, throughput, errors, learning rate.
SHOWN_WORDS = ("loss", "samples", "error")
SHOWN_NAMES = ("L_total", "lr")
MAX_SHOWN = 6


def _worth_showing(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in SHOWN_NAMES or any(word in name for word in SHOWN_WORDS)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def shown_metrics(metrics: dict) -> dict[str, str]:
    """The few numeric metrics the console shows, named by their last '/' part where that is clear."""
    picked = {}
    for name, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not _worth_showing(name):
            continue
        short_name = name.rsplit("/", 1)[-1]          # "main/L_total" -> "L_total", "loss/total" stays
        picked[short_name if _worth_showing(short_name) else name] = f"{value:.4g}"
        if len(picked) == MAX_SHOWN:
            break
    return picked


class ConsoleView:
    """Progress of `total` units of work; update(advance, metrics) after each chunk."""

    def __init__(self, total: int, desc: str, enabled: bool = True, every: int = 10,
                 terminal: bool | None = None):
        self.total, self.desc, self.every = int(total or 0), desc, max(int(every), 0)
        self.enabled = enabled
        self.done = 0
        self.updates = 0
        self._start = time.monotonic()
        terminal = stderr_is_terminal() if terminal is None else terminal
        self._bar = tqdm(total=self.total or None, desc=desc, dynamic_ncols=True) if enabled and terminal else None

    def update(self, advance: int = 0, metrics: dict | None = None) -> None:
        if not self.enabled:
            return
        self.done += advance
        shown = shown_metrics(metrics or {})
        if self._bar is not None:
            self._bar.update(advance)
            if shown:
                self._bar.set_postfix(shown, refresh=False)
            return
        if advance:
            self.updates += 1
            finished = self.total and self.done >= self.total
            if self.every and (self.updates == 1 or self.updates % self.every == 0 or finished):
                print(self.line(shown), file=sys.stderr, flush=True)

    def line(self, shown: dict[str, str]) -> str:
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"[{self.desc}] {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} ({100.0 * self.done / self.total:.0f}%)"
        parts += [f"{name}={value}" for name, value in shown.items()]
        parts.append(f"{rate:.3g} it/s elapsed {format_duration(elapsed)}")
        if self.total and rate > 0:
            parts.append(f"eta {format_duration((self.total - self.done) / rate)}")
        return " ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

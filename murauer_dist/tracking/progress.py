"""progress(): the console view for any long loop (shard writing, data generation, evaluation).

A tqdm bar on a terminal; otherwise a line about every 10% (or at 1, 10, 100, ... items when the
total is unknown), so CI logs show progress without a bar's carriage returns. Only rank 0 talks:
with RANK set to anything but 0 in the environment nothing is shown. ProgressLines is the same
line view for work that reports counts (a pool's finished chunks) instead of yielding items; it also
prints a line when `every_s` seconds pass without one, with the rate and the ETA.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

from murauer_dist.tracking.console import format_duration, stderr_is_terminal

Item = TypeVar("Item")


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def _line_marks(total: int | None) -> Iterator[int]:
    """Item counts after which a line is printed."""
    if total:
        step = max(total // 10, 1)
        yield from range(step, total, step)
        yield total
    else:
        mark = 1
        while True:
            yield mark
            mark *= 10


def progress(iterable: Iterable[Item], total: int | None = None, desc: str = "",
             enabled: bool = True) -> Iterator[Item]:
    """Yield the items of `iterable` while showing progress (see the module doc)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not (enabled and is_rank_zero()):
        yield from iterable
        return
    if stderr_is_terminal():
        yield from tqdm(iterable, total=total, desc=desc, dynamic_ncols=True)
        return
    start, count, printed = time.monotonic(), 0, 0
    marks = _line_marks(total)
    next_mark = next(marks)
    for item in iterable:
        yield item
        count += 1
        if count == next_mark:
            elapsed = time.monotonic() - start
            done = f"{count}/{total} ({100 * count / total:.0f}%)" if total else f"{count}"
            eta = f" eta {format_duration(elapsed * (total - count) / count)}" if total else ""
            print(f"[{desc or 'progress'}] {done} elapsed {format_duration(elapsed)}{eta}",
                  file=sys.stderr, flush=True)
            next_mark, printed = next(marks, -1), count
    if count != printed:
        print(f"[{desc or 'progress'}] {count} done in {format_duration(time.monotonic() - start)}",
              file=sys.stderr, flush=True)


class ProgressLines:
    """Counts reported with update(n); a line on stderr at every 10% and after `every_s` seconds
    without one, e.g. `[synth-data] 960/4800 frames (20%) 27.4 frames/s elapsed 00:35 eta 02:20`."""

    def __init__(self, total: int, desc: str, unit: str = "items", every_s: float = 30.0):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.start = self.last_line = time.monotonic()
        self.count, self.next_mark = 0, max(total // 10, 1)

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.count >= self.next_mark or now - self.last_line >= self.every_s:
            while self.next_mark <= self.count:
                self.next_mark += max(self.total // 10, 1)
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        eta = f" eta {format_duration((self.total - self.count) / rate)}" if rate > 0 and self.count < self.total else ""
        print(f"[{self.desc}] {self.count}/{self.total} {self.unit} ({100 * self.count / max(self.total, 1):.0f}%) "
              f"{rate:.1f} {self.unit}/s elapsed {format_duration(elapsed)}{eta}", file=sys.stderr, flush=True)
        self.last_line = now

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

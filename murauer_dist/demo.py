"""`murauer-dist demo`: the main job on the embedded dataset, end to end, with progress throughout.

procedural NYU-layout data -> shards -> stage 1 (synthetic pre-training) -> stage 2 (MURAUER with
data.n_labeled labeled real frames) -> evaluation on the real test split (table, result files, plots).
Each step is skipped when its output is already there, so a second run only re-evaluates.

Settings per phase (measured on 2-core machines, see the README's benchmarks): data and shards run
in two forked worker processes that keep freed memory (murauer_dist.memory: a quarter less CPU for
the shard writer); training and evaluation run torch on the cores that the loader's threads leave
(at least one): torch's two OpenMP threads next to DALI's two threads on two cores spin in each
other's way, and under other load a training step took 5-10x longer. OMP_NUM_THREADS, when set,
wins.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from murauer_dist import workflow
from murauer_dist.config import load_config
from murauer_dist.memory import keep_freed_memory


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def torch_threads(cfg) -> int:
    """torch's intra-op threads for training and evaluation: OMP_NUM_THREADS if set, otherwise the
    usable cores less the loader's threads (DALI / DataLoader workers), at least 1."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, usable_cores() - cfg.loader.num_threads)


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """os.environ with `values` set (the training child process inherits it), restored afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _torch_threads(count: int):
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def demo_command(out: str = "runs/demo", preset: str = "demo-cpu", overrides=()) -> dict:
    overrides = [*overrides, f"train.out={out}"]
    cfg = load_config(preset, overrides)
    start = time.perf_counter()
    keep_freed_memory()                      # this process and the generator / shard workers it forks
    workflow.ensure_dataset(cfg)
    workflow.ensure_shards(cfg, preset, overrides)
    threads = torch_threads(cfg)
    with _environment({"OMP_NUM_THREADS": str(threads)}):
        workflow.run_training(preset, overrides)
    with _torch_threads(threads):
        metrics = workflow.evaluate_run(Path(out))
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min: mean joint error {metrics['mean_error_mm']:.2f} mm on "
          f"{metrics['frames']} real test frames with {cfg.data.n_labeled} labeled real training frames")
    print(f"plots and result files: {Path(out) / 'eval'}; training curves: {Path(out) / 'metrics.jsonl'}")
    return metrics

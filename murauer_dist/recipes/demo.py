"""`murauer-dist demo`: the main job on the embedded dataset, end to end, with progress throughout.

procedural NYU-layout data -> shards -> stage 1 (synthetic pre-training) -> stage 2 (MURAUER with
data.n_labeled labeled real frames) -> evaluation on the real test split (table, result files, plots).
Each step is skipped when its output is already there, so a second run only re-evaluates.

Settings per phase (measured on 2-core machines, see the README's benchmarks): data and shards run
in two forked worker processes that keep freed memory (murauer_dist.memory: a quarter less CPU for
the shard writer); training and evaluation run torch on the cores that the loader's threads leave
(workflow.torch_threads).
"""
from __future__ import annotations

import time
from pathlib import Path

from murauer_dist.recipes import workflow
from murauer_dist.config import load_config
from murauer_dist.eval.metrics import subjects_text
from murauer_dist.memory import keep_freed_memory
from murauer_dist.paths import output_folder


def demo_command(out: str = "runs/demo", preset: str = "demo-cpu", overrides=()) -> dict:
    overrides = [*overrides, f"train.out={out}"]
    cfg = load_config(preset, overrides)
    output_folder(out, "demo --out")         # its training run locks it (train.out)
    start = time.perf_counter()
    keep_freed_memory()                      # this process and the generator / shard workers it forks
    workflow.ensure_dataset(cfg)
    workflow.ensure_shards(cfg, preset, overrides)
    workflow.run_training(preset, overrides)
    metrics = workflow.evaluate_run(Path(out), threads=workflow.torch_threads(cfg))
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min: mean joint error {metrics['mean_error_mm']:.2f} mm on "
          f"{metrics['frames']} real test frames with {cfg.data.n_labeled} labeled real training frames")
    subjects = subjects_text(metrics)
    if subjects:                                              # NYU-like test split: two actors
        print(f"  {subjects}")
    print(f"plots and result files: {Path(out) / 'eval'}; training curves: {Path(out) / 'metrics.jsonl'}")
    return metrics

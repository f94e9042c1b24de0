"""`murauer-dist experiment label-efficiency`: MURAUER's gain over the paper's baselines vs labeled frames.

The protocol (README "Label efficiency on the embedded dataset"; docs/method.md §6.2):
- cells = methods x n x seeds: synthetic only (no labeled real data: one cell per seed,
  shown at every n), the paper's "Real & Synth" baseline, its two ablations (distribution matching
  only, view prediction only; by default at n = 10 only) and MURAUER, each for every seed pair:
  training seed i (train.seed: stream order and augmentation draws) with label seed i
  (data.label_seed: which n real frames carry labels; --label-seeds, by default the training seed),
  so the spread over seeds includes the choice of labeled frames; Synth only uses no labels and
  varies the training seed only (--label-seeds fixed: every cell uses the config's data.label_seed);
- the same data for every cell (one dataset, one set of shards; each label seed's subsets are nested
  in n) and the same stage 1 (it uses no labeled frames): OUT/stage1 trains it once, every cell
  starts stage 2 from its final-pretrain.pt;
- every run is an ordinary `murauer-dist train` in a child process, then `evaluate` on the real test
  frames and on their synthetic twins (real minus twin error: the domain gap a model has left, as a
  difference of means; and per frame, the mean distance between the predictions on a real frame and
  on its twin);
  finished runs and evaluations are skipped when the experiment is started again;
- where the error comes from: each reported cell is also scored on its labeled training frames (fit vs
  generalisation) and, on procedural data whose labels are fitted poses, against the poses the real
  test frames show (frames/procedural/shown.py): the domain gap a mapping could still remove;
- loss weights may be chosen per method and n from a small list (--select) by the mean validation
  error over the seeds; the test split is never used for a choice, and the values tried are recorded;
- OUT/results.json (every cell, mean and sample standard deviation over seeds, the paired differences
  against Real & Synth with their 95 % t intervals, the choices, the targets), OUT/results.md (the
  tables), OUT/label_efficiency.png (error vs n with error bars) and OUT/error_sources.png (the
  decomposition per n).
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from murauer_dist.recipes import workflow
from murauer_dist.config import load_config, public_dict
from murauer_dist.config_changes import config_changes, may_change_on_resume
from murauer_dist.shards.labeled import check_labeled_request
from murauer_dist.frames.procedural.shown import label_distance, shown_pose_error, shown_poses
from murauer_dist.frames.datasets import DEFAULT_DATASET, dataset_spec
from murauer_dist.errors import UserError
from murauer_dist.recipes.experiment_options import (ExperimentError, parse_ints, parse_label_seeds, parse_methods,
                                                     parse_select)
from murauer_dist.eval.evaluate import eval_dir
from murauer_dist.eval.result_files import read_result_file
from murauer_dist.recipes.experiment_plots import plot_errors, plot_sources
from murauer_dist.recipes.experiment_report import (ABLATIONS, STAGE1_DIR, check_targets, paired_differences,
                                                    summarize, write_report)
from murauer_dist.folder_lock import FolderLock
from murauer_dist.memory import keep_freed_memory
from murauer_dist.methods import METHODS as REGISTRY
from murauer_dist.paths import output_folder
from murauer_dist.tracking.run_logger import read_metrics
from murauer_dist.train.checkpoint import read_run_config

DEFAULT_METHODS = ("synth_only", "real_synth", "dm_only", "view_only", "murauer")   # table and legend order
DEFAULT_NS = (10, 100)                 # 1000 with --ns 10,100,1000
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_ABLATION_NS = (10,)            # where the domain gap is largest
SELECTION_METRIC = "main/val_mean_error_mm"    # the only metric a choice reads: stage 2's validation error


# ---- the cells -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One stage-2 training run: a method at n labeled frames (None: it uses none) with one training
    seed, the label seed paired with it (None: the config's data.label_seed) and, where --select varies
    them, one candidate's loss weights."""
    method: str
    n: int | None
    seed: int
    weights: tuple[tuple[str, float], ...] = ()
    label_seed: int | None = None

    @property
    def name(self) -> str:
        parts = [self.method, *([f"n{self.n}"] if self.n is not None else []), f"s{self.seed}",
                 *([f"l{self.label_seed}"] if self.label_seed is not None else [])]
        return "-".join(parts + [f"{key}={value:g}" for key, value in self.weights])

    @property
    def group(self) -> tuple[str, int | None]:
        return self.method, self.n

    def overrides(self, stage1: Path) -> list[str]:
        """Config overrides of this cell on top of the preset's and the experiment's."""
        items = [f"train.method={self.method}", f"train.seed={self.seed}", "train.pretrain_epochs=0",
                 f"train.init_checkpoint={stage1}"]
        if self.n is not None:
            items.append(f"data.n_labeled={self.n}")
        if self.label_seed is not None:
            items.append(f"data.label_seed={self.label_seed}")
        return items + [f"loss.{key}={value!r}" for key, value in self.weights]


def uses_labels(method: str) -> bool:
    """Whether a method trains on labeled real frames (else its model is the same at every n)."""
    return any(stream in ("pairs", "views") for stream in REGISTRY[method].streams)


def method_weights(method: str) -> tuple[str, ...]:
    """The cfg.loss fields that weigh a method's terms."""
    return tuple(weight for weight in REGISTRY[method].terms.values() if isinstance(weight, str))


def weight_candidates(method: str, select: dict) -> list[tuple[tuple[str, float], ...]]:
    """Every combination of the --select values of the weights `method` uses ([()] when none)."""
    keys = [key for key in select if key in method_weights(method)]
    return [tuple(zip(keys, values)) for values in itertools.product(*(select[key] for key in keys))]


def plan_cells(methods, ns, seeds, ablation_ns=DEFAULT_ABLATION_NS, select=None,
               label_seeds: tuple[int, ...] | None = None) -> list[Cell]:
    """Every stage-2 run of the experiment, in training order (method, n, weights, seed). Training seed
    i is paired with label_seeds[i] (None: every cell uses the config's data.label_seed); a method
    without labeled frames gets no label seed."""
    select = select or {}
    if label_seeds is not None and len(label_seeds) != len(seeds):
        raise ExperimentError(f"experiment: {len(label_seeds)} label seeds for {len(seeds)} training seeds; "
                              f"they are paired by position")
    missing = [n for n in ablation_ns if n not in ns]
    if missing and any(method in ABLATIONS for method in methods):
        raise ExperimentError(f"experiment: --ablation-ns {', '.join(map(str, missing))} not in --ns "
                              f"{', '.join(map(str, ns))}; the ablations run at a subset of the n values")
    unused = [key for key in select if not any(key in method_weights(method) for method in methods)]
    if unused:
        raise ExperimentError(f"experiment: --select {', '.join(unused)}: no method of --methods uses that weight")
    cells = []
    for method in methods:
        method_ns = ([None] if not uses_labels(method) else
                     [n for n in ns if n in ablation_ns] if method in ABLATIONS else list(ns))
        for n in method_ns:
            paired = label_seeds if label_seeds is not None and n is not None else [None] * len(seeds)
            pairs = list(zip(seeds, paired))
            for weights in weight_candidates(method, select):
                cells.extend(Cell(method, n, seed, weights, label_seed) for seed, label_seed in pairs)
    return cells


# ---- running ---------------------------------------------------------------------------------------

def _check_finished_run(run_dir: Path, preset: str, overrides: list[str]) -> None:
    """A finished run is reused only if it was trained with this cell's config (else a one-line error)."""
    stored = read_run_config(run_dir)
    if stored is None:
        return
    wanted = public_dict(load_config(preset, [*overrides, f"train.out={run_dir}"]))
    changed = {key: values for key, values in config_changes(stored, wanted).items() if not may_change_on_resume(key)}
    if changed:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ExperimentError(f"{run_dir} holds a finished run with another config ({listed}); use another --out "
                              f"for other settings, or delete {run_dir} to train it again")


def _train_once(preset: str, overrides: list[str], run_dir: Path) -> None:
    if (run_dir / "checkpoints" / "final-main.pt").is_file():
        _check_finished_run(run_dir, preset, overrides)
        print(f"[experiment] {run_dir} already trained")
        return
    workflow.run_training(preset, [*overrides, f"train.out={run_dir}"], log_file=run_dir / "train.log")


def _metrics_of(run_dir: Path, domain: str = "real", split: str = "test") -> dict:
    done = eval_dir(run_dir, domain, split) / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    return workflow.evaluate_run(run_dir, domain=domain, split=split)


def _predictions(run_dir: Path, domain: str, spec) -> tuple[np.ndarray, np.ndarray]:
    """The test frames an evaluation scored and its predictions on them, (N, J, 3) camera mm."""
    folder = eval_dir(run_dir, domain)
    frames = np.loadtxt(folder / "frames.txt", dtype=np.int64, ndmin=1)
    pred = read_result_file(folder / "results_xyz.txt", "xyz", len(frames), spec.joints.count, spec.camera).xyz
    return frames, pred


def frame_gap(run_dir: Path, spec) -> float:
    """The domain gap per frame (mm): the mean over the test frames of the mean joint distance between the
    prediction on a real frame and on its synthetic twin. Both evaluations crop around the same label
    centre, so the two predictions share the crop window; unlike real minus twin error, errors in
    different directions do not cancel."""
    real_frames, real = _predictions(run_dir, "real", spec)
    synth_frames, synth = _predictions(run_dir, "synth", spec)
    if not np.array_equal(real_frames, synth_frames):
        raise ExperimentError(f"{run_dir}: {eval_dir(run_dir, 'real').name} and {eval_dir(run_dir, 'synth').name} "
                              f"scored different test frames; delete both folders to evaluate the run again")
    return float(np.linalg.norm(real - synth, axis=-1).mean(axis=1).mean())


def _evaluated(run_dir: Path, shown: dict | None) -> dict:
    """Test errors (real frames and twins) and the per-frame distance between their predictions, the
    errors on the labeled training frames, and, where the data know them (shown: shown_poses of the
    dataset), the real frames' error against the poses they show."""
    metrics = {domain: _metrics_of(run_dir, domain) for domain in ("real", "synth")}
    metrics["train"] = {domain: _metrics_of(run_dir, domain, "labeled") for domain in ("real", "synth")}
    spec = dataset_spec(metrics["real"].get("dataset", DEFAULT_DATASET))
    metrics["gap_per_frame_mm"] = frame_gap(run_dir, spec)
    metrics["view_loss"] = view_loss(run_dir)
    if shown is not None:
        frames, pred = _predictions(run_dir, "real", spec)
        metrics["shown_mean_error_mm"] = shown_pose_error(pred, frames, shown, list(spec.joints.evaluated))
    return metrics


VIEW_LOSS = "main/L_view"


def view_loss(run_dir: Path) -> dict | None:
    """The view decoder's own loss over stage 2: the mean of the first and of the last tenth of the logged
    values of main/L_view (None for a method without view prediction): whether it fits the target views."""
    values = [record[VIEW_LOSS] for record in read_metrics(run_dir) if VIEW_LOSS in record]
    if not values:
        return None
    tenth = max(len(values) // 10, 1)
    return {"view_loss_start": statistics.fmean(values[:tenth]), "view_loss_end": statistics.fmean(values[-tenth:])}


def validation_error(run_dir: Path) -> float:
    """The final model's mean joint error on the validation split (the last one the run logged)."""
    values = [record[SELECTION_METRIC] for record in read_metrics(run_dir) if SELECTION_METRIC in record]
    value = float(values[-1]) if values else float("nan")
    if not math.isfinite(value):
        raise ExperimentError(f"{run_dir}: no finite validation error in metrics.jsonl (needed by --select); "
                              f"validation needs data.val_fraction > 0")
    return value


def cell_record(cell: Cell, metrics: dict, weights: dict) -> dict:
    """One evaluated cell as results.json lists it."""
    real, synth, train = metrics["real"], metrics["synth"], metrics["train"]
    record = {"method": cell.method, "n": cell.n, "seed": cell.seed, "label_seed": cell.label_seed,
              "run": cell.name, "weights": weights,
              "real": real["mean_error_mm"], "synth": synth["mean_error_mm"],
              "gap": real["mean_error_mm"] - synth["mean_error_mm"], "gap_per_frame": metrics["gap_per_frame_mm"],
              "subject1": real.get("subject1_mean_error_mm"), "subject2": real.get("subject2_mean_error_mm"),
              "train_real": train["real"]["mean_error_mm"], "train_synth": train["synth"]["mean_error_mm"]}
    record.update(metrics.get("view_loss") or {})
    if "shown_mean_error_mm" in metrics:
        record["shown"] = metrics["shown_mean_error_mm"]
        record["gap_shown"] = record["shown"] - record["synth"]
    return record


def choose(cells: list[Cell], val_error) -> tuple[list[Cell], list[dict]]:
    """The cells whose results are reported, and one record per (method, n) of the weights tried.

    Where a (method, n) has several weight candidates, the one with the lowest mean validation error
    over its seeds is chosen (the first listed on a tie); val_error(cell) -> mm. The test split plays
    no part. With one candidate nothing is chosen and no validation error is needed.
    """
    groups: dict = {}
    for cell in cells:
        groups.setdefault(cell.group, {}).setdefault(cell.weights, []).append(cell)
    chosen, records = [], []
    for (method, n), candidates in groups.items():
        if len(candidates) == 1:
            (weights, members), = candidates.items()
            chosen += members
            records.append({"method": method, "n": n, "tried": [{"weights": dict(weights)}], "chosen": dict(weights),
                            "by": "only candidate"})
            continue
        tried = []
        for weights, members in candidates.items():
            errors = [val_error(cell) for cell in members]
            tried.append({"weights": dict(weights), "val_mean_error_mm": statistics.fmean(errors),
                          "val_per_seed": errors})
        best = min(range(len(tried)), key=lambda index: tried[index]["val_mean_error_mm"])
        chosen += list(candidates.values())[best]
        records.append({"method": method, "n": n, "tried": tried, "chosen": tried[best]["weights"],
                        "by": "lowest mean validation error"})
    return chosen, records


def check_labeled_subsets(cfg, cells: list[Cell]) -> None:
    """Every (n, label seed) the cells train with can be cut from the shards (before stage 1, not after it)."""
    requests = {(cell.n, cfg.data.label_seed if cell.label_seed is None else cell.label_seed)
                for cell in cells if cell.n is not None}
    for n, label_seed in sorted(requests):
        check_labeled_request(cfg.data.shards, n, label_seed)


def _check_cfg(cfg, select: dict) -> None:
    if cfg.train.pretrain_epochs < 1:
        raise ExperimentError("experiment: every cell starts from one shared stage 1, so train.pretrain_epochs "
                              "must be >= 1")
    if select and cfg.data.val_fraction <= 0:
        raise ExperimentError("experiment: --select chooses on the validation split, but data.val_fraction=0 holds "
                              "none out; set data.val_fraction > 0")


def _plan_text(cells: list[Cell], methods, ns, seeds, label_seeds, cfg, select: dict) -> str:
    paired = ", ".join(map(str, label_seeds)) if label_seeds is not None else f"fixed {cfg.data.label_seed}"
    return (f"[experiment] {len(cells)} stage-2 runs: {', '.join(methods)} x n in {', '.join(map(str, ns))} "
            f"x seeds {', '.join(map(str, seeds))} (label seeds {paired})"
            + (f"; selecting {', '.join(select)} on the validation split" if select else ""))


def _evaluate_chosen(chosen: list[Cell], selection: list[dict], preset: str, overrides: list[str], out: Path,
                     cfg, shown: dict | None) -> list[dict]:
    """results.json's cell records of the reported cells; each choice records the weights used."""
    stage1 = out / STAGE1_DIR / "checkpoints" / "final-pretrain.pt"
    records = []
    with workflow.torch_thread_count(workflow.torch_threads(cfg)):
        for cell in chosen:
            loss = load_config(preset, [*overrides, *cell.overrides(stage1)]).loss
            weights = {key: getattr(loss, key) for key in method_weights(cell.method)}
            records.append(cell_record(cell, _evaluated(out / cell.name, shown), weights))
    for choice in selection:                          # the values the reported runs were trained with
        choice["used"] = next(record["weights"] for record in records
                              if (record["method"], record["n"]) == (choice["method"], choice["n"]))
    return records


def label_efficiency(preset: str, out: Path, overrides: list[str], methods=DEFAULT_METHODS, ns=DEFAULT_NS,
                     seeds=DEFAULT_SEEDS, ablation_ns=DEFAULT_ABLATION_NS, select: dict | None = None,
                     label_seeds: tuple[int, ...] | None = None) -> dict:
    """label_seeds: one per training seed (None: every cell uses the config's data.label_seed)."""
    select = select or {}
    cfg = load_config(preset, overrides)
    start = time.perf_counter()
    _check_cfg(cfg, select)
    cells = plan_cells(methods, ns, seeds, ablation_ns, select, label_seeds)
    stage1_dir = out / STAGE1_DIR
    stage1 = stage1_dir / "checkpoints" / "final-pretrain.pt"
    for cell in cells:                               # every cell's config is valid before anything runs
        load_config(preset, [*overrides, *cell.overrides(stage1)])
    print(_plan_text(cells, methods, ns, seeds, label_seeds, cfg, select))
    keep_freed_memory()                      # this process and the generator / shard workers it forks
    workflow.ensure_dataset(cfg)
    workflow.ensure_shards(cfg, preset, overrides)
    check_labeled_subsets(cfg, cells)                 # before stage 1, not after it
    _train_once(preset, [*overrides, "train.method=synth_only"], stage1_dir)
    for cell in cells:
        _train_once(preset, [*overrides, *cell.overrides(stage1)], out / cell.name)
    chosen, selection = choose(cells, lambda cell: validation_error(out / cell.name))
    shown = shown_poses(cfg.data.root)                # None unless labels are fitted poses (nyu-fit)
    records = _evaluate_chosen(chosen, selection, preset, overrides, out, cfg, shown)
    summary, paired = summarize(records, ns), paired_differences(records)
    report = {"preset": preset, "overrides": list(overrides), "methods": list(methods), "n": list(ns),
              "seeds": list(seeds), "label_seeds": None if label_seeds is None else list(label_seeds),
              "fixed_label_seed": cfg.data.label_seed if label_seeds is None else None,
              "ablation_n": [n for n in ablation_ns if n in ns], "stage1": str(stage1),
              "select": {key: list(values) for key, values in select.items()}, "selection": selection,
              "summary": summary, "paired": paired, "targets": check_targets(summary, ns, paired),
              "cells": records,
              # a property of the data, the same for every cell: the test labels' distance from the shown poses
              "label_noise_mm": (None if shown is None else
                                 float(label_distance(shown, list(dataset_spec(cfg.data.dataset).joints.evaluated))
                                       .mean())),
              "minutes": (time.perf_counter() - start) / 60}
    table = write_report(report, out)
    plot_errors(summary, report["methods"], report["n"], out / "label_efficiency.png")
    plot_sources(summary, report["methods"], report["n"], out / "error_sources.png")
    print("\n" + table + f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'label_efficiency.png'} "
          f"({report['minutes']:.1f} min)")
    return report


def experiment_command(name: str, preset: str = "label-efficiency", out: str = "runs/label-efficiency",
                       overrides=(), methods=DEFAULT_METHODS, ns=DEFAULT_NS, seeds=DEFAULT_SEEDS,
                       ablation_ns=DEFAULT_ABLATION_NS, select="", select_on: str = "val", label_seeds="") -> dict:
    """label_seeds: "1,2,3" (one per training seed, paired by position), "" (each training seed is its
    own label seed) or "fixed" (every cell uses the config's data.label_seed)."""
    if name != "label-efficiency":
        raise UserError(f"unknown experiment {name!r}; available: label-efficiency")
    if str(select_on) != "val":
        raise ExperimentError(f"experiment: --select-on {select_on!r}: loss weights are chosen on the validation "
                              f"split only ('val'); the test split is never used for a choice")
    ns = tuple(sorted(parse_ints(ns, "--ns")))
    ablation_ns = ns if str(ablation_ns) == "all" else parse_ints(ablation_ns, "--ablation-ns")
    seeds = parse_ints(seeds, "--seeds")
    options = dict(methods=parse_methods(methods), ns=ns, seeds=seeds, ablation_ns=ablation_ns,
                   select=parse_select(select), label_seeds=parse_label_seeds(label_seeds, seeds))
    out_dir = output_folder(out, "experiment --out")
    with FolderLock(out_dir, "experiment --out"):      # one experiment per folder; its runs lock their own
        return label_efficiency(preset, out_dir, list(overrides), **options)

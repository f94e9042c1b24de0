"""gpu-check sections that read the dataset section's shards: loaders, dali_parity, rollover.

    loaders      the bf16 step fed by the reference loader and by DALI (GPU pipeline; CPU in CPU
                 mode), at the training's thread count (loader.num_threads; --loader-threads)
    dali_parity  the eval loader's crops and targets from the DALI GPU pipeline against the DALI CPU
                 pipeline on the same test frames (CPU mode: DALI CPU against the reference loader)
    rollover     the training stream over short epochs with the bf16 step between batches: the data
                 wait at each epoch's first step against the median step

Only the public loader API (murauer_dist.batches.loaders: build_train_stream, build_eval_loader,
TrainStream.set_epoch / close). Each section runs in its own process (child.py).
"""
from __future__ import annotations

import importlib
import statistics
import time

from murauer_dist.bench.gpu_check.measure import (engines_for, measure_steps, row, status_of_rows, step_config,
                                                  timed_steps, torch_device)
from murauer_dist.bench.gpu_check.spec import PARITY_TOLERANCE, ROLLOVER, Budget, Options, Skip, error_text, torch

PARITY_FIELDS = ("depth", "target", "center_xyz")      # the crop, its joints, the crop centre (mm)


def _require_dali() -> None:
    try:
        importlib.import_module("nvidia.dali")
    except ImportError as err:
        raise Skip(f"DALI is not installed ({error_text(err)}); launch/setup.sh installs the wheel "
                   f"for this CUDA") from None


def dali_importable() -> bool:
    try:
        _require_dali()
    except Skip:
        return False
    return True


def loader_threads(opts: Options, cfg) -> int:
    """--loader-threads, else the training's own: loader.num_threads of the preset."""
    return opts.loader_threads if opts.loader_threads > 0 else int(cfg.loader.num_threads)


def _where(opts: Options) -> str:
    return "gpu" if opts.device == "cuda" else "cpu"


def loaders_section(opts: Options, budget: Budget, data: dict) -> dict:
    device = torch_device(opts)
    threads = loader_threads(opts, step_config(opts, "bf16", False, data["overrides"]))
    rows = []
    for backend in ("reference", "dali"):
        where = _where(opts) if backend == "dali" else "cpu"

        def run(backend=backend, where=where):
            budget.require_time(f"{backend} loader")
            if backend == "dali":
                _require_dali()
            from murauer_dist.batches.loaders import build_train_stream  # lazy: optional: torch (see spec.py)
            cfg = step_config(opts, "bf16", False, [*data["overrides"], f"loader.backend={backend}",
                                                    f"loader.device={where}", f"loader.num_threads={threads}"])
            started = time.perf_counter()
            stream = build_train_stream(cfg, "main", 0, 1, device)
            stream.set_epoch(1)
            build_s = time.perf_counter() - started
            try:
                out = measure_steps(cfg, device, stream, opts.steps, opts.warmup)
            finally:
                stream.close()
            return {"backend": backend, "loader_device": where, "threads": threads, "loader_build_s": build_s, **out}
        name = "reference (webdataset + DataLoader)" if backend == "reference" else f"DALI ({where})"
        rows.append(row(name, run))
    return {"status": status_of_rows(rows), "rows": rows, "threads": threads, "precision": "bf16"}


# ----------------------------------------------------------------------------------- dali_parity

def _eval_frames(cfg, device) -> tuple[dict, float]:
    """{frame: {field: CPU tensor}} of the test split's eval batches, and the seconds it took."""
    from murauer_dist.batches.eval_loader import build_eval_loader  # lazy: optional: torch (see spec.py)
    started = time.perf_counter()
    frames = {}
    for batch in build_eval_loader(cfg, "test", 0, 1, device):
        for index, frame in enumerate(batch["frame"].tolist()):
            frames[frame] = {field: batch[field][index].detach().double().cpu() for field in PARITY_FIELDS}
    return frames, time.perf_counter() - started


def dali_parity_section(opts: Options, budget: Budget, data: dict) -> dict:
    """Eval crops and targets of two pipelines on the same frames; equal to float tolerance."""
    device = torch_device(opts)
    _require_dali()
    cpu = torch.device("cpu")
    if opts.device == "cuda":
        sides = (("DALI GPU", "dali", "gpu", device), ("DALI CPU", "dali", "cpu", cpu))
    else:
        sides = (("DALI CPU", "dali", "cpu", cpu), ("reference", "reference", "cpu", cpu))
    read, seconds = {}, {}
    for name, backend, where, out_device in sides:
        budget.require_time(f"the {name} eval loader")
        cfg = step_config(opts, "fp32", False, [*data["overrides"], f"loader.backend={backend}",
                                                f"loader.device={where}"])
        read[name], seconds[name] = _eval_frames(cfg, out_device)
    (first, a), (second, b) = read.items()
    if not a or set(a) != set(b):
        raise RuntimeError(f"{first} read {len(a)} test frames, {second} {len(b)} "
                           f"({len(set(a) ^ set(b))} not in both)")
    diffs = {field: max(float((a[frame][field] - b[frame][field]).abs().max()) for frame in a)
             for field in PARITY_FIELDS}
    out = {"compared": f"{first} vs {second}", "split": "test", "frames": len(a), "tolerance": PARITY_TOLERANCE,
           "max_abs_diff": diffs, "seconds": {name: round(value, 3) for name, value in seconds.items()}}
    over = [field for field in ("depth", "target") if not diffs[field] <= PARITY_TOLERANCE]
    if over:
        out["status"] = "failed"
        out["reason"] = (f"{first} and {second} differ beyond {PARITY_TOLERANCE:g}: "
                         + ", ".join(f"{'crops' if f == 'depth' else 'targets'} by {diffs[f]:.3g}" for f in over))
    return out


# -------------------------------------------------------------------------------------- rollover

def rollover_section(opts: Options, budget: Budget, data: dict) -> dict:
    """The training stream across epoch boundaries, the bf16 step between batches (as in training,
    where the next epoch's readers are built while the last steps of an epoch run)."""
    from murauer_dist.batches.loaders import build_train_stream  # lazy: optional: torch (see spec.py)
    device = torch_device(opts)
    iters, epochs = ROLLOVER[opts.device]["iters_per_epoch"], ROLLOVER[opts.device]["epochs"]
    backend = "dali" if dali_importable() else "reference"       # the training's loader where it imports
    where = _where(opts) if backend == "dali" else "cpu"
    threads = loader_threads(opts, step_config(opts, "bf16", False, data["overrides"]))
    cfg = step_config(opts, "bf16", False, [*data["overrides"], f"loader.backend={backend}", f"loader.device={where}",
                                            f"loader.num_threads={threads}", f"train.iters_per_epoch={iters}"])
    engines = engines_for(cfg, device)
    stream = build_train_stream(cfg, "main", 0, 1, device)
    try:
        started = time.perf_counter()
        stream.set_epoch(1)
        build_s = time.perf_counter() - started
        count = epochs * iters + 1
        times, result, skipped = timed_steps(cfg, device, engines, stream, count)
    finally:
        stream.close()
    rollovers = [epoch * iters for epoch in range(1, epochs + 1)]      # the first step of epochs 2, 3, ...
    steady = [step for index, step in enumerate(times) if index not in rollovers and index > 0]
    wait_median = statistics.median(wait for wait, _ in steady)
    step_median = statistics.median(total for _, total in steady)
    worst = max(times[index][0] for index in rollovers)
    return {"backend": backend, "loader_device": where, "threads": threads, "iters_per_epoch": iters,
            "epochs": epochs, "steps": count, "first_build_s": build_s, "loss_finite_steps": count - skipped,
            "rollover_wait_ms": [1e3 * times[index][0] for index in rollovers],
            "rollover_wait_ms_max": 1e3 * worst, "wait_ms_median": 1e3 * wait_median,
            "step_ms_median": 1e3 * step_median, "rollover_in_median_steps": worst / step_median,
            "last_loss": float(result["L_total"])}

"""gpu-check sections that time the MURAUER step: train_step, compile, loaders, ddp, memory.

Each builds the trainer's engines and times warm-up + timed steps (measure_steps); a row that
cannot run (no DALI, no CUDA, budget used up) is reported in its section, the others still run.
"""
from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import os
import statistics
import time
import traceback
from typing import TYPE_CHECKING

from murauer_dist.bench.gpu_check.spec import (COMPILED, CROPS_PER_FRAME, TORCH_ERROR, VARIANTS, Options, Skip,
                                               error_text, torch)

if TYPE_CHECKING:
    from murauer_dist.bench.gpu_check.runner import Check


def _status_of_rows(rows: list[dict]) -> str:
    statuses = {row["status"] for row in rows}
    if "failed" in statuses:
        return "failed"
    return "skipped" if statuses == {"skipped"} else "ok"


def _row(name: str, function) -> dict:
    """One measurement: its numbers, or status skipped / failed with the reason."""
    try:
        return {"name": name, "status": "ok", **function()}
    except Skip as why:
        return {"name": name, "status": "skipped", "reason": str(why)}
    except Exception as err:  # noqa: BLE001 - one failing row is reported, the others still run
        return {"name": name, "status": "failed", "reason": error_text(err),
                "traceback": traceback.format_exc()[-3000:]}


# ------------------------------------------------------------------------------------ train step

def _torch_device(opts: Options):
    if torch is None:
        raise Skip(f"torch is not importable ({TORCH_ERROR})")
    if opts.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "torch is a CPU build" if not torch.version.cuda else "no CUDA device visible"
        raise Skip(f"--device cuda but torch.cuda.is_available() is False ({why}, torch {torch.__version__}); "
                   f"--device cpu runs the CPU sequence")
    return torch.device("cuda", 0)


def _config(opts: Options, precision: str, channels_last: bool, extra=()):
    from murauer_dist.config import load_config
    return load_config(opts.preset, [f"train.precision={precision}",
                                     f"model.channels_last={str(channels_last).lower()}",
                                     f"train.iters_per_epoch={opts.warmup + opts.steps + 1}", "train.method=murauer",
                                     "logging.wandb_mode=disabled", *extra])


def crops_per_step(cfg) -> int:
    from murauer_dist.data.batch import stream_sizes
    return sum(CROPS_PER_FRAME[name] * size for name, size in stream_sizes(cfg, "main").items())


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device, reserved: bool = False) -> float | None:
    if device.type != "cuda":
        return None
    return (torch.cuda.max_memory_reserved(device) if reserved else torch.cuda.max_memory_allocated(device)) / 2 ** 30


def _engines(cfg, device, compile_backend: str = "", ddp: bool = False) -> dict:
    """The plain (one process) or DDP engines of the trainer, with the trainer's optimizer and lr."""
    from murauer_dist.models import build_discriminator, build_model
    from murauer_dist.train.engine import DdpEngine, PlainEngine, make_adam
    from murauer_dist.train.schedule import base_lr

    torch.manual_seed(cfg.train.seed)
    model, disc = build_model(cfg).to(device), build_discriminator(cfg).to(device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    lr = base_lr(cfg, 1)
    engines = {name: (DdpEngine(module, make_adam(cfg, module, lr), lr, device) if ddp
                      else PlainEngine(module, make_adam(cfg, module, lr), lr))
               for name, module in (("model", model), ("disc", disc))}
    model.train()
    disc.train()
    if compile_backend:
        # The engine's forward goes through .module; parameters and buffers stay those of `model`.
        engines["model"].module = torch.compile(model, backend=compile_backend)
    return engines


def _fake_batches(cfg, device, count: int = 4) -> list:
    from murauer_dist.train.fake_stream import FakeTrainStream
    stream = FakeTrainStream(cfg, "main", 0, device)
    return [stream.make_batch(1, position) for position in range(count)]


def measure_steps(cfg, device, batches, steps: int, warmup: int, compile_backend: str = "",
                  ddp: bool = False) -> dict:
    """Run warm-up + timed MURAUER steps; `batches` is an iterator of batches already on `device`.

    Data wait = time spent getting the next batch; step = wait + train_step (which ends with a host
    sync: its loss values are read back). iterations/s = timed steps / their total time.
    """
    from murauer_dist.data.batch import to_device
    from murauer_dist.train.step import train_step

    _reset_peak(device)
    started = time.perf_counter()
    engines = _engines(cfg, device, compile_backend, ddp)
    setup_s = time.perf_counter() - started
    first_steps, waits, totals, skipped = [], [], [], 0
    for index in range(warmup + steps):
        _sync(device)
        begin = time.perf_counter()
        batch = to_device(next(batches), device)
        got = time.perf_counter()
        result = train_step(engines, batch, cfg, "main")
        _sync(device)
        end = time.perf_counter()
        if index < warmup:
            first_steps.append(end - begin)
        else:
            waits.append(got - begin)
            totals.append(end - begin)
            skipped += int(result.get("skipped", 0.0) > 0)
    if not math.isfinite(result["L_total"]):
        raise RuntimeError(f"non-finite loss in the last step: {result['L_total']}")
    total = sum(totals)
    crops = crops_per_step(cfg)
    row = {"iters_per_s": steps / total, "crops_per_s": steps * crops / total, "crops_per_step": crops,
           "step_ms_median": 1e3 * statistics.median(totals), "step_ms_mean": 1e3 * total / steps,
           "data_wait_fraction": sum(waits) / total, "data_wait_ms_median": 1e3 * statistics.median(waits),
           "nonfinite_skipped_steps": skipped,
           "setup_s": setup_s, "first_step_s": first_steps[0] if first_steps else None,
           "warmup_s": sum(first_steps), "steps": steps, "warmup": warmup,
           "peak_gpu_gb": _peak_gb(device), "peak_gpu_reserved_gb": _peak_gb(device, reserved=True),
           "last_loss": result["L_total"]}
    if compile_backend:
        # Compilation happens in the warm-up steps (first call, plus any recompile); a warm-up step
        # that ran compiled code costs about one median step.
        row["compile_backend"] = compile_backend
        row["compile_s"] = max(0.0, row["warmup_s"] - warmup * row["step_ms_median"] / 1e3)
    return row


def train_step_section(opts: Options, check: "Check") -> dict:
    device = _torch_device(opts)
    rows = []
    for name, precision, channels_last in VARIANTS:
        def run(name=name, precision=precision, channels_last=channels_last):
            check.require_time(name)
            cfg = _config(opts, precision, channels_last)
            batches = itertools.cycle(_fake_batches(cfg, device))
            return {"precision": precision, "channels_last": channels_last,
                    **measure_steps(cfg, device, batches, opts.steps, opts.warmup)}
        rows.append(_row(name, run))
    cfg = _config(opts, "bf16", False)
    return {"status": _status_of_rows(rows), "rows": rows, "preset": opts.preset, "crops_per_step": crops_per_step(cfg),
            "stream_sizes": _stream_sizes(cfg), "batches": "in-memory (fake_stream), 4 distinct batches cycled"}


def compile_section(opts: Options) -> dict:
    """The bf16 + channels-last step with the model torch.compile'd; compile time from the warm-up."""
    device = _torch_device(opts)
    if not hasattr(torch, "compile"):
        raise Skip(f"torch {torch.__version__} has no torch.compile")
    if opts.compile_backend == "inductor" and device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise Skip("triton is not installed: the inductor backend needs it on CUDA")
    name, precision, channels_last = COMPILED
    cfg = _config(opts, precision, channels_last)
    batches = itertools.cycle(_fake_batches(cfg, device))
    try:
        row = measure_steps(cfg, device, batches, opts.steps, max(opts.warmup, 3), compile_backend=opts.compile_backend)
    finally:
        _reset_dynamo()
    return {"name": f"{name} ({opts.compile_backend})", "precision": precision, "channels_last": channels_last, **row}


def _stream_sizes(cfg) -> dict:
    from murauer_dist.data.batch import stream_sizes
    return {name: size for name, size in stream_sizes(cfg, "main").items() if size}


def _reset_dynamo() -> None:
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001 - only frees compiled code
        pass


# --------------------------------------------------------------------------------------- loaders

def loader_threads(opts: Options) -> int:
    if opts.loader_threads > 0:
        return opts.loader_threads
    if opts.device == "cpu":
        return 2
    gpus = max(1, torch.cuda.device_count() if torch is not None and torch.cuda.is_available() else 1)
    return max(2, min(8, (os.cpu_count() or 2) // gpus))


def loaders_section(opts: Options, check: "Check", data: dict | None) -> dict:
    device = _torch_device(opts)
    if not data:
        raise Skip("the dataset section did not produce shards")
    threads = loader_threads(opts)
    rows = []
    for backend in ("reference", "dali"):
        where = ("gpu" if opts.device == "cuda" else "cpu") if backend == "dali" else "cpu"

        def run(backend=backend, where=where):
            check.require_time(f"{backend} loader")
            if backend == "dali":
                try:
                    importlib.import_module("nvidia.dali")
                except ImportError as err:
                    raise Skip(f"DALI is not installed ({error_text(err)}); launch/setup.sh installs the wheel "
                               f"for this CUDA") from None
            from murauer_dist.data.loaders import build_train_stream
            cfg = _config(opts, "bf16", False, [*data["overrides"], f"loader.backend={backend}",
                                                f"loader.device={'gpu' if where == 'gpu' else 'cpu'}",
                                                f"loader.num_threads={threads}"])
            started = time.perf_counter()
            stream = build_train_stream(cfg, "main", 0, 1, device)
            stream.set_epoch(1)
            build_s = time.perf_counter() - started
            try:
                row = measure_steps(cfg, device, stream, opts.steps, opts.warmup)
            finally:
                stream.close()
            return {"backend": backend, "loader_device": where, "threads": threads, "loader_build_s": build_s, **row}
        name = "reference (webdataset + DataLoader)" if backend == "reference" else f"DALI ({where})"
        rows.append(_row(name, run))
    return {"status": _status_of_rows(rows), "rows": rows, "threads": threads, "precision": "bf16"}


# ------------------------------------------------------------------------------------------- ddp

def ddp_section(opts: Options, check: "Check") -> dict:
    device = _torch_device(opts)
    import torch.distributed as tdist
    if not tdist.is_available():
        raise Skip("torch.distributed is not available in this torch build")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not tdist.is_nccl_available():
        raise Skip("NCCL is not available in this torch build")
    if tdist.is_initialized():
        raise Skip("a process group is already initialised in this process")
    check.require_time("ddp")
    started = time.perf_counter()
    tdist.init_process_group(backend, store=tdist.HashStore(), rank=0, world_size=1)
    try:
        probe = torch.ones(1024, device=device)
        tdist.all_reduce(probe)
        _sync(device)
        init_s = time.perf_counter() - started
        if float(probe[0]) != 1.0:
            raise RuntimeError(f"all_reduce over one rank changed the value to {float(probe[0])}")
        cfg = _config(opts, "bf16", False)
        row = measure_steps(cfg, device, itertools.cycle(_fake_batches(cfg, device)), opts.steps, opts.warmup,
                            ddp=True)
    finally:
        tdist.destroy_process_group()
    return {"backend": backend, "world_size": 1, "init_s": init_s, "precision": "bf16", **row}

# ---------------------------------------------------------------------------------------- memory

def memory_section(opts: Options, check: "Check") -> dict:
    """Peak GPU memory: each measurement resets the peak counters, so the run's peak is their maximum."""
    rows = {}
    for name in ("train_step", "loaders"):
        for row in check.result["sections"].get(name, {}).get("rows", []):
            if row.get("peak_gpu_gb") is not None:
                rows[row["name"]] = {"allocated": row["peak_gpu_gb"], "reserved": row["peak_gpu_reserved_gb"]}
    for name in ("ddp", "compile"):
        section = check.result["sections"].get(name, {})
        if section.get("peak_gpu_gb") is not None:
            rows[name] = {"allocated": section["peak_gpu_gb"], "reserved": section["peak_gpu_reserved_gb"]}
    if torch is None or opts.device != "cuda" or not torch.cuda.is_available():
        import resource
        raise Skip(f"no GPU in this run (device {opts.device}); process peak RSS "
                   f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB")
    device = torch.device("cuda", 0)
    return {"peak_allocated_gb": max([row["allocated"] for row in rows.values()] + [_peak_gb(device)]),
            "peak_reserved_gb": max([row["reserved"] for row in rows.values()] + [_peak_gb(device, reserved=True)]),
            "total_gb": torch.cuda.get_device_properties(device).total_memory / 2 ** 30,
            "per_measurement_gb": rows}

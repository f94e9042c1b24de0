"""gpu-check sections that time the MURAUER step: train_step, ddp, deepspeed, compile, memory.

Each builds the trainer's engines and times warm-up + timed steps (measure_steps) on in-memory
batches; a row that cannot run (no CUDA, no DeepSpeed, budget used up) is reported in its section,
the others still run. Every section but memory runs in its own process (child.py), so each gets a
fresh process and `budget` is the run's deadline. The loader sections (loaders.py) use the same
timing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import itertools
import math
import resource
import statistics
import time
import traceback

from murauer_dist.bench.gpu_check.spec import (COMPILED, CROPS_PER_FRAME, DEEPSPEED_CONFIG, TORCH_ERROR, VARIANTS,
                                               Budget, Options, Skip, error_text, torch)
from murauer_dist.config import load_config
from murauer_dist.methods import leaves_parameters_unused
from murauer_dist.train.schedule import base_lr


def status_of_rows(rows: list[dict]) -> str:
    statuses = {row["status"] for row in rows}
    if "failed" in statuses:
        return "failed"
    return "skipped" if statuses == {"skipped"} else "ok"


def row(name: str, function) -> dict:
    """One measurement: its numbers, or status skipped / failed with the reason."""
    try:
        return {"name": name, "status": "ok", **function()}
    except Skip as why:
        return {"name": name, "status": "skipped", "reason": str(why)}
    except Exception as err:  # noqa: BLE001 - one failing row is reported, the others still run
        return {"name": name, "status": "failed", "reason": error_text(err),
                "traceback": traceback.format_exc()[-3000:]}


# --------------------------------------------------------------------------------- shared pieces

def torch_device(opts: Options):
    if torch is None:
        raise Skip(f"torch is not importable ({TORCH_ERROR})")
    if opts.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "torch is a CPU build" if not torch.version.cuda else "no CUDA device visible"
        raise Skip(f"--device cuda but torch.cuda.is_available() is False ({why}, torch {torch.__version__}); "
                   f"--device cpu runs the CPU sequence")
    return torch.device("cuda", 0)


def step_config(opts: Options, precision: str, channels_last: bool, extra=()):
    return load_config(opts.preset, [f"train.precision={precision}",
                                     f"model.channels_last={str(channels_last).lower()}",
                                     f"train.iters_per_epoch={opts.warmup + opts.steps + 1}", "train.method=murauer",
                                     f"train.device={'gpu' if opts.device == 'cuda' else 'cpu'}",
                                     "logging.wandb_mode=disabled", *extra])


def crops_per_step(cfg) -> int:
    from murauer_dist.batches.batch import stream_sizes  # lazy: optional: torch (see spec.py)
    return sum(CROPS_PER_FRAME[name] * size for name, size in stream_sizes(cfg, "main").items())


def stream_sizes(cfg) -> dict:
    from murauer_dist.batches.batch import stream_sizes as sizes  # lazy: optional: torch (see spec.py)
    return {name: size for name, size in sizes(cfg, "main").items() if size}


def sync(device) -> None:
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


def networks(cfg, device, compile_backend: str = ""):
    """The pose model and the discriminator as train.loop builds them: seeded, on `device`,
    channels-last when configured, f/m/p/g compiled by models.compile_networks when asked."""
    from murauer_dist.models import build_discriminator, build_model, compile_networks  # lazy: optional: torch
    torch.manual_seed(cfg.train.seed)
    model, disc = build_model(cfg).to(device), build_discriminator(cfg).to(device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    if compile_backend:
        compile_networks(model, compile_backend)
    return model, disc


def engines_for(cfg, device, ddp: bool = False, compile_backend: str = "") -> dict:
    """The trainer's plain (one process) or DDP engines (engine_factory.build_engines' settings for a
    multi-rank run; a process group must exist), with the trainer's optimizer and lr."""
    from murauer_dist.train.engine import DdpEngine, PlainEngine, make_adam  # lazy: optional: torch

    model, disc = networks(cfg, device, compile_backend)
    lr = base_lr(cfg, 1)
    unused = {"model": leaves_parameters_unused(cfg.train.method, "main", cfg.model.released_affine_blocks),
              "disc": False}
    engines = {name: (DdpEngine(module, make_adam(cfg, module, lr), lr, device, find_unused_parameters=unused[name])
                      if ddp else PlainEngine(module, make_adam(cfg, module, lr), lr))
               for name, module in (("model", model), ("disc", disc))}
    model.train()
    disc.train()
    return engines


def fake_batches(cfg, device, count: int = 4) -> list:
    from murauer_dist.train.fake_stream import FakeTrainStream  # lazy: optional: torch
    stream = FakeTrainStream(cfg, "main", 0, device)
    return [stream.make_batch(1, position) for position in range(count)]


@contextlib.contextmanager
def one_rank_group(device):
    """A one-rank process group (nccl on CUDA, gloo on the CPU) for DDP and the step's agreement."""
    import torch.distributed as tdist  # lazy: optional: torch
    if not tdist.is_available():
        raise Skip("torch.distributed is not available in this torch build")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not tdist.is_nccl_available():
        raise Skip("NCCL is not available in this torch build")
    started = time.perf_counter()
    tdist.init_process_group(backend, store=tdist.HashStore(), rank=0, world_size=1)
    try:
        probe = torch.ones(1024, device=device)
        tdist.all_reduce(probe)
        sync(device)
        if float(probe[0]) != 1.0:
            raise RuntimeError(f"all_reduce over one rank changed the value to {float(probe[0])}")
        yield {"backend": backend, "world_size": 1, "init_s": time.perf_counter() - started}
    finally:
        tdist.destroy_process_group()


def timed_steps(cfg, device, engines: dict, batches, count: int) -> tuple[list[tuple[float, float]], dict, int]:
    """`count` MURAUER steps: per step (data wait s, step s), the last step's result and how many
    steps were skipped as non-finite (a Python float in the result: no device read).

    Data wait = time spent getting the next batch; step = wait + train_step + a device sync.
    """
    # lazy: optional: torch (see spec.py: without torch the torch sections skip)
    from murauer_dist.batches.batch import to_device
    from murauer_dist.train.step import train_step

    times, result, skipped = [], {}, 0
    for _ in range(count):
        sync(device)
        begin = time.perf_counter()
        batch = to_device(next(batches), device)
        got = time.perf_counter()
        result = train_step(engines, batch, cfg, "main")
        sync(device)
        times.append((got - begin, time.perf_counter() - begin))
        skipped += float(result.get("skipped", 0.0)) > 0
    return times, result, skipped


def measure_steps(cfg, device, batches, steps: int, warmup: int, make_engines=None, compiled: bool = False) -> dict:
    """Warm-up + timed MURAUER steps; `batches` is an iterator of batches (moved to `device` here).

    `make_engines()` builds the engines (default: the plain ones); its time is setup_s.
    iterations/s = timed steps / their total time. With `compiled`, compile_s = the warm-up's time
    beyond `warmup` median steps (the networks compile in their first call, plus any recompile).
    """
    _reset_peak(device)
    started = time.perf_counter()
    engines = make_engines() if make_engines is not None else engines_for(cfg, device)
    setup_s = time.perf_counter() - started
    first, _, _ = timed_steps(cfg, device, engines, batches, warmup)
    timed, result, skipped = timed_steps(cfg, device, engines, batches, steps)
    last_loss = float(result["L_total"])          # a 0-dim tensor (or a float): one read-back
    if not math.isfinite(last_loss):
        raise RuntimeError(f"non-finite loss in the last step: {last_loss}")
    waits, totals = [wait for wait, _ in timed], [total for _, total in timed]
    total, crops = sum(totals), crops_per_step(cfg)
    out = {"iters_per_s": steps / total, "crops_per_s": steps * crops / total, "crops_per_step": crops,
           "step_ms_median": 1e3 * statistics.median(totals), "step_ms_mean": 1e3 * total / steps,
           "data_wait_fraction": sum(waits) / total, "data_wait_ms_median": 1e3 * statistics.median(waits),
           "nonfinite_skipped_steps": skipped,
           "setup_s": setup_s, "first_step_s": first[0][1] if first else None,
           "warmup_s": sum(step for _, step in first), "steps": steps, "warmup": warmup,
           "peak_gpu_gb": _peak_gb(device), "peak_gpu_reserved_gb": _peak_gb(device, reserved=True),
           "last_loss": last_loss}
    if compiled:
        out["compile_s"] = max(0.0, out["warmup_s"] - warmup * out["step_ms_median"] / 1e3)
    return out


# -------------------------------------------------------------------------------------- sections

def train_step_section(opts: Options, budget: Budget) -> dict:
    device = torch_device(opts)
    rows = []
    for name, precision, channels_last in VARIANTS:
        def run(name=name, precision=precision, channels_last=channels_last):
            budget.require_time(name)
            cfg = step_config(opts, precision, channels_last)
            batches = itertools.cycle(fake_batches(cfg, device))
            return {"precision": precision, "channels_last": channels_last,
                    **measure_steps(cfg, device, batches, opts.steps, opts.warmup)}
        rows.append(row(name, run))
    cfg = step_config(opts, "bf16", False)
    return {"status": status_of_rows(rows), "rows": rows, "preset": opts.preset, "crops_per_step": crops_per_step(cfg),
            "stream_sizes": stream_sizes(cfg), "batches": "in-memory (fake_stream), 4 distinct batches cycled"}


def ddp_section(opts: Options, budget: Budget) -> dict:
    """The bf16 step under DistributedDataParallel in a one-rank process group."""
    device = torch_device(opts)
    with one_rank_group(device) as group:
        cfg = step_config(opts, "bf16", False)
        out = measure_steps(cfg, device, itertools.cycle(fake_batches(cfg, device)), opts.steps, opts.warmup,
                            make_engines=lambda: engines_for(cfg, device, ddp=True))
    return {**group, "precision": "bf16", **out}


def deepspeed_section(opts: Options, budget: Budget, config: str = DEEPSPEED_CONFIG) -> dict:
    """The bf16 step on one-rank DeepSpeed ZeRO-1 engines (train.engine=deepspeed), as the trainer builds them."""
    device = torch_device(opts)
    try:
        import deepspeed  # lazy: optional: deepspeed
    except ImportError as err:
        raise Skip(f"DeepSpeed is not importable ({error_text(err)})") from None
    from murauer_dist.train.engine_factory import build_engines  # lazy: optional: torch
    cfg = step_config(opts, "bf16", False, ["train.engine=deepspeed", f"train.deepspeed_config={config}"])

    built = {}

    def make_engines():
        model, disc = networks(cfg, device)
        engines = build_engines(cfg, model, disc, 0, 1, device, "main")
        model.train()
        disc.train()
        built["zero_stage"] = engines["model"].zero_stage
        return engines
    out = measure_steps(cfg, device, itertools.cycle(fake_batches(cfg, device)), opts.steps, opts.warmup,
                        make_engines=make_engines)
    return {"config": config, "zero_stage": built["zero_stage"], "deepspeed": deepspeed.__version__,
            "world_size": 1, "precision": "bf16", **out}


def compile_section(opts: Options, budget: Budget, c_compiler: bool = True) -> dict:
    """bf16 + channels-last with f, m, p and g compiled by models.compile_networks (what
    model.compile=true does in training) and wrapped in DDP in a one-rank group, as a multi-GPU
    run wraps them; compile time from the warm-up, reported apart."""
    device = torch_device(opts)
    backend = opts.compile_backend
    if not hasattr(torch, "compile"):
        raise Skip(f"torch {torch.__version__} has no torch.compile")
    if backend == "inductor":
        if device.type == "cuda" and importlib.util.find_spec("triton") is None:
            raise RuntimeError("triton is not installed: the inductor backend needs it on CUDA")
        if not c_compiler:
            raise RuntimeError("no working C compiler (see the environment section): inductor needs one "
                               "(install gcc, or set CC)")
    name, precision, channels_last = COMPILED
    with one_rank_group(device) as group:
        cfg = step_config(opts, precision, channels_last)
        out = measure_steps(cfg, device, itertools.cycle(fake_batches(cfg, device)), opts.steps,
                            max(opts.warmup, 3), compiled=True,
                            make_engines=lambda: engines_for(cfg, device, ddp=True, compile_backend=backend))
    return {"name": f"{name} ({backend})", "precision": precision, "channels_last": channels_last,
            "compile_backend": backend, "compiled": "models.compile_networks (f, m, p, g), DDP-wrapped",
            "ddp_backend": group["backend"], **out}


def memory_section(opts: Options, sections: dict) -> dict:
    """Peak GPU memory: each measurement runs in a fresh process with its own peak counters."""
    rows = {}
    for name in ("train_step", "loaders"):
        for entry in sections.get(name, {}).get("rows", []):
            if entry.get("peak_gpu_gb") is not None:
                rows[entry["name"]] = {"allocated": entry["peak_gpu_gb"], "reserved": entry["peak_gpu_reserved_gb"]}
    for name in ("ddp", "deepspeed", "compile"):
        section = sections.get(name, {})
        if section.get("peak_gpu_gb") is not None:
            rows[name] = {"allocated": section["peak_gpu_gb"], "reserved": section["peak_gpu_reserved_gb"]}
    if torch is None or opts.device != "cuda" or not torch.cuda.is_available():
        raise Skip(f"no GPU in this run (device {opts.device}); peak RSS of the largest section process "
                   f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20:.2f} GB")
    if not rows:
        raise Skip("no measurement recorded GPU memory")
    device = torch.device("cuda", 0)
    return {"peak_allocated_gb": max(entry["allocated"] for entry in rows.values()),
            "peak_reserved_gb": max(entry["reserved"] for entry in rows.values()),
            "total_gb": torch.cuda.get_device_properties(device).total_memory / 2 ** 30,
            "per_measurement_gb": rows}

"""`murauer-dist bench gpu-check OUT_DIR [--device cuda|cpu]` (launch/gpu-check.sh): check a new GPU node.

One run, at most ~8 minutes on one H100-class GPU, prints a table and writes OUT_DIR/gpu-check.json
(and the table as OUT_DIR/gpu-check.md; both atomic, rewritten after every section):

    environment   torch / CUDA / cuDNN / NCCL versions, GPUs, driver, CPU; which of DALI, DeepSpeed,
                  wandb (and the light dependencies) import, each probed in its own process
    gpu_tests     `pytest -m gpu` on the repository's tests: passed / failed / skipped / errors
    dataset       a small procedural dataset made here (synth-data) and cut into shards with the
                  preset's crop settings (make-shards; 128x128 crops for nyu)
    train_step    the preset's MURAUER step (stage 2, all five streams) on in-memory batches:
                  fp32, bf16, bf16 + channels-last: iterations/s, crops/s, step ms, peak GPU memory
    loaders       the bf16 step fed by the reference loader and by DALI (GPU pipeline; CPU in
                  CPU mode) from the dataset: iterations/s, crops/s and the data-wait fraction
    ddp           the bf16 step under DistributedDataParallel in a one-rank process group
                  (nccl; gloo in CPU mode)
    compile       bf16 + channels-last with the model torch.compile'd (compile time reported
                  apart; last, as it takes longest; backend inductor, `eager` in CPU mode, where
                  inductor takes minutes on a 2-core machine)
    memory        peak GPU memory of the whole run and of each measurement

Every section is independent: a missing package, no CUDA, or an error is reported in that
section (status "skipped" or "failed", with the reason) and the rest still runs. A time budget
(--budget-s) skips what would start after it is used up. `--device cpu` runs the same sequence
with the `tiny` preset and a few steps (the test suite does, so this check cannot rot).

Targets (one H100-class GPU, nyu preset): >= 100 MURAUER iterations/s in bf16 (>= 13,000
crops/s) with < 5 % data wait.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.machine import describe, machine
from murauer_dist.errors import UserError

try:
    import torch
except ImportError as _torch_error:             # reported by the environment section
    torch = None
    TORCH_ERROR = str(_torch_error)
else:
    TORCH_ERROR = ""

SECTIONS = ("environment", "gpu_tests", "dataset", "train_step", "loaders", "ddp", "compile", "memory")
TARGET_ITERS_PER_S = 100.0
TARGET_CROPS_PER_S = 13_000.0
TARGET_DATA_WAIT = 0.05
# Images per frame of each stream in one step: pairs real + synth, views two inputs + two targets.
CROPS_PER_FRAME = {"pairs": 2, "synth": 1, "views": 4, "unlabeled_real": 1, "unlabeled_synth": 1}
PROBES = {"dali": "nvidia.dali", "deepspeed": "deepspeed", "wandb": "wandb", "webdataset": "webdataset",
          "numpy": "numpy", "fire": "fire", "yaml": "yaml", "PIL": "PIL", "scipy": "scipy",
          "matplotlib": "matplotlib", "pytest": "pytest", "triton": "triton"}
DEFAULTS = {
    "cuda": {"preset": "nyu", "steps": 50, "warmup": 10, "frames": 256, "compile_backend": "inductor",
             "budget_s": 480.0},
    "cpu": {"preset": "tiny", "steps": 3, "warmup": 1, "frames": 24, "compile_backend": "eager",
            "budget_s": 600.0},
}
VARIANTS = (  # name, precision, channels_last (eager; the compiled variant is its own, last section)
    ("fp32", "fp32", False),
    ("bf16", "bf16", False),
    ("bf16 + channels-last", "bf16", True),
)
COMPILED = ("bf16 + channels-last + torch.compile", "bf16", True)


class Skip(Exception):
    """A section or row that cannot run here (missing package, no CUDA, ...): reported, not failed."""


@dataclasses.dataclass
class Options:
    out_dir: Path
    device: str
    preset: str
    steps: int
    warmup: int
    frames: int
    compile_backend: str
    budget_s: float
    loader_threads: int
    skip: tuple[str, ...]
    keep_data: bool


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip().splitlines()[0][:400] if str(err) else type(err).__name__


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
        return {"name": name, "status": "failed", "reason": _error_text(err),
                "traceback": traceback.format_exc()[-3000:]}


# ----------------------------------------------------------------------------------- environment

def _probe_imports(device: str) -> dict:
    """Import each package in its own process (a crashing or slow import cannot take this one down)."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    if device == "cpu":
        env.setdefault("DS_ACCELERATOR", "cpu")
    code = ("import importlib, sys; m = importlib.import_module(sys.argv[1]); "
            "print(getattr(m, '__version__', '') or '')")
    running = {name: subprocess.Popen([sys.executable, "-c", code, module], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env)
               for name, module in PROBES.items()}
    result = {}
    for name, process in running.items():
        try:
            out, err = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            result[name] = {"importable": False, "reason": "import took longer than 180 s"}
            continue
        if process.returncode == 0:
            result[name] = {"importable": True, "version": out.strip().splitlines()[-1] if out.strip() else ""}
        else:
            lines = [line for line in err.strip().splitlines() if line.strip()]
            result[name] = {"importable": False, "reason": (lines[-1] if lines else f"exit {process.returncode}")[:300]}
    return result


def _nvidia_smi() -> dict:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"present": False}
    try:
        done = subprocess.run([smi], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return {"present": True, "error": _error_text(err)}
    driver = re.search(r"Driver Version:\s*([\d.]+)", done.stdout)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", done.stdout)
    return {"present": True, "exit": done.returncode, "driver": driver.group(1) if driver else None,
            "cuda": cuda.group(1) if cuda else None}


def environment(opts: Options) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "machine": machine(),
            "nvidia_smi": _nvidia_smi(), "packages": _probe_imports(opts.device)}
    if torch is None:
        info["torch"] = {"importable": False, "reason": TORCH_ERROR}
        return info
    cuda = torch.cuda.is_available()
    info["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                     "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                     "threads": torch.get_num_threads(),
                     "distributed": torch.distributed.is_available(),
                     "nccl": torch.distributed.is_available() and torch.distributed.is_nccl_available()}
    if cuda:
        gpus = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                         "memory_gb": round(props.total_memory / 2 ** 30, 1),
                         "multiprocessors": props.multi_processor_count})
        info["gpus"] = gpus
        info["gpu_count"] = len(gpus)
        info["torch"]["bf16_supported"] = torch.cuda.is_bf16_supported()
        try:
            info["torch"]["nccl_version"] = ".".join(str(v) for v in torch.cuda.nccl.version())
        except Exception:  # noqa: BLE001 - informational only
            info["torch"]["nccl_version"] = None
    else:
        info["gpus"], info["gpu_count"] = [], 0
    return info


# ------------------------------------------------------------------------------------- gpu tests

def gpu_tests(opts: Options) -> dict:
    """`pytest -m gpu` on the repository's tests (in a child process), counted from its JUnit XML."""
    if importlib.util.find_spec("pytest") is None:
        raise Skip("pytest is not installed (pip install pytest)")
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "tests").is_dir():
        raise Skip(f"no tests/ folder next to the package ({repo.name}); run from a clone of the repository")
    with tempfile.TemporaryDirectory(prefix="gpu-check-tests-") as scratch:
        report = Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", "tests"]
        env = {**os.environ, "WANDB_MODE": "disabled",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise RuntimeError("pytest -m gpu took longer than 300 s") from None
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        if report.is_file():
            root = ElementTree.parse(report).getroot()
            for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
                tests, failures = int(suite.get("tests", 0)), int(suite.get("failures", 0))
                errors, skipped = int(suite.get("errors", 0)), int(suite.get("skipped", 0))
                counts["failed"] += failures
                counts["errors"] += errors
                counts["skipped"] += skipped
                counts["passed"] += tests - failures - errors - skipped
    tail = (done.stdout + done.stderr).strip().splitlines()
    result = {**counts, "exit": done.returncode, "summary": tail[-1] if tail else ""}
    if done.returncode not in (0, 5) or counts["failed"] or counts["errors"]:   # 5: no test selected
        result["status"] = "failed"
        result["reason"] = f"pytest -m gpu: {result['summary']}"
        result["output_tail"] = "\n".join(tail[-40:])
    return result


# --------------------------------------------------------------------------------------- dataset

def _data_overrides(opts: Options, root: Path, shards: Path) -> list[str]:
    from murauer_dist.config import load_config
    n_labeled = min(load_config(opts.preset).data.n_labeled, max(1, opts.frames // 2))
    return [f"data.root={root}", f"data.shards={shards}", f"data.n_labeled={n_labeled}", "data.val_fraction=0"]


def dataset(opts: Options, folder: Path) -> dict:
    """synth-data (few frames) and make-shards with the preset's crop settings, in `folder`."""
    from murauer_dist.config import load_config
    from murauer_dist.data.procedural.generate import synth_data
    from murauer_dist.data.shards.cli import make_shard_set
    from murauer_dist.data.shards.labeled import ensure_labeled_shards

    workers = max(1, min(8, os.cpu_count() or 1))
    root, shards = folder / "procedural", folder / "shards"
    started = time.perf_counter()
    synth_data(root, frames_train=opts.frames, frames_test=1, seed=0, workers=workers, progress=False)
    synth_s = time.perf_counter() - started
    overrides = _data_overrides(opts, root, shards)
    started = time.perf_counter()
    manifests = make_shard_set(str(root), str(shards), split="train", workers=workers, preset=opts.preset,
                               overrides=overrides, log=lambda *_: None)
    cfg = load_config(opts.preset, overrides)
    ensure_labeled_shards(shards, cfg.data.n_labeled, cfg.data.label_seed)   # cut now, not in a timed loader
    shards_s = time.perf_counter() - started
    train = manifests["train"]
    size = sum(shard["bytes"] for shard in train["shards"])
    from murauer_dist import geometry
    return {"frames": opts.frames, "workers": workers, "synth_data_s": synth_s,
            "synth_frames_per_s": opts.frames / synth_s,
            "make_shards_s": shards_s, "shard_frames_per_s": opts.frames / shards_s, "samples": train["num_samples"],
            "skipped_frames": train["num_skipped"], "shard_mb": size / 1e6, "crop_size": cfg.data.crop_size,
            "stored_size": geometry.stored_size(cfg.data.crop_size, cfg.data.crop_margin),
            "n_labeled": cfg.data.n_labeled, "root": str(root), "shards": str(shards), "overrides": overrides}


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
                    raise Skip(f"DALI is not installed ({_error_text(err)}); launch/setup.sh installs the wheel "
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


# ------------------------------------------------------------------------------------------ report

def _fmt(value, pattern: str = "", empty: str = "-") -> str:
    """Rates and times: 1 decimal, 2 below 10 (a CPU-mode step can take seconds)."""
    if value is None:
        return empty
    return (pattern or ("{:,.2f}" if abs(value) < 10 else "{:,.1f}")).format(value)


def _target(row: dict, opts: Options, kind: str) -> str:
    if row.get("status") != "ok":
        return ""
    if kind == "step":
        text = f">= {TARGET_ITERS_PER_S:.0f} it/s, >= {TARGET_CROPS_PER_S:,.0f} crops/s"
        met = row["iters_per_s"] >= TARGET_ITERS_PER_S and row["crops_per_s"] >= TARGET_CROPS_PER_S
    else:
        text = f"< {100 * TARGET_DATA_WAIT:.0f} % wait"
        met = row["data_wait_fraction"] < TARGET_DATA_WAIT
        if opts.device == "cuda" and opts.preset == "nyu":
            met = met and row["iters_per_s"] >= TARGET_ITERS_PER_S
            text += f" at >= {TARGET_ITERS_PER_S:.0f} it/s"
    if opts.device != "cuda" or opts.preset != "nyu":
        return f"{text}: n/a ({opts.device}, {opts.preset})"
    return f"{text}: {'met' if met else 'NOT met'}"


def _status_cell(entry: dict) -> str:
    if entry.get("status") == "ok":
        return "ok"
    reason = entry.get("reason", "")
    return f"{entry.get('status', '?')}: {reason}" if reason else entry.get("status", "?")


def _section_note(name: str, section: dict) -> str:
    if section.get("status") != "ok":
        return ""
    if name == "environment":
        packages = section.get("packages", {})
        found = [f"{key} {value.get('version', '')}".strip() for key, value in packages.items()
                 if key in ("dali", "deepspeed", "wandb") and value.get("importable")]
        missing = [key for key in ("dali", "deepspeed", "wandb") if not packages.get(key, {}).get("importable")]
        t = section.get("torch", {})
        gpus = section.get("gpus") or []
        gpu = (f"{len(gpus)} x {gpus[0]['name']} (sm {gpus[0]['capability']}, {gpus[0]['memory_gb']} GB)"
               if gpus else "no GPU")
        return (f"torch {t.get('version')} (CUDA {t.get('cuda')}, cuDNN {t.get('cudnn')}), {gpu}; "
                f"importable: {', '.join(found) or 'none'}; missing: {', '.join(missing) or 'none'}")
    if name == "gpu_tests":
        return (f"{section['passed']} passed, {section['failed']} failed, {section['skipped']} skipped, "
                f"{section['errors']} errors")
    if name == "dataset":
        return (f"{section['frames']} frames: synth-data {section['synth_data_s']:.1f} s, make-shards "
                f"{section['make_shards_s']:.1f} s ({section['crop_size']}x{section['crop_size']} crops, stored "
                f"{section['stored_size']}x{section['stored_size']}, {section['shard_mb']:.1f} MB)")
    if name == "ddp":
        return (f"{section['backend']}, 1 rank: {_fmt(section['iters_per_s'])} it/s, step "
                f"{_fmt(section['step_ms_median'])} ms, init {section['init_s']:.1f} s")
    if name == "memory":
        if section.get("peak_allocated_gb") is None:
            return ""
        return (f"peak {section['peak_allocated_gb']:.2f} GB allocated, {section['peak_reserved_gb']:.2f} GB reserved "
                f"of {section['total_gb']:.1f} GB")
    if name == "compile":
        return (f"{section.get('compile_backend')}: compile {section['compile_s']:.1f} s, then "
                f"{_fmt(section['iters_per_s'])} it/s")
    if name in ("train_step", "loaders"):
        rows = section.get("rows", [])
        return f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} rows ok"
    return ""


def render(result: dict) -> str:
    opts = result["options"]
    o = Options(**{**opts, "out_dir": Path(opts["out_dir"]), "skip": tuple(opts["skip"])})
    sections = result["sections"]
    lines = [f"gpu-check: device {o.device}, preset {o.preset}, {o.steps} timed steps after {o.warmup} warm-up "
             f"steps, {result.get('seconds', 0):.0f} s in all",
             describe(result["machine"]), "",
             "| section | status | s | notes |", "|---|---|---|---|"]
    for name in SECTIONS:
        section = sections.get(name)
        if section is None:
            lines.append(f"| {name} | not run | | |")
            continue
        lines.append(f"| {name} | {_status_cell(section)} | {section.get('seconds', 0):.1f} | "
                     f"{_section_note(name, section)} |")
    step = sections.get("train_step", {})
    compiled = sections.get("compile")
    step_rows = list(step.get("rows", []))
    if compiled is not None:
        step_rows.append({"name": compiled.get("name", f"{COMPILED[0]} ({o.compile_backend})"), **compiled})
    if step.get("rows") or (compiled or {}).get("status") == "ok":
        lines += ["", f"MURAUER step ({o.preset}, {step.get('crops_per_step', '?')} crops per step, in-memory batches)",
                  "", "| variant | status | it/s | crops/s | step ms (median) | peak GPU GB | compile s | target |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in step_rows:
            lines.append(f"| {row['name']} | {_status_cell(row)} | {_fmt(row.get('iters_per_s'))} | "
                         f"{_fmt(row.get('crops_per_s'), '{:,.0f}')} | {_fmt(row.get('step_ms_median'))} | "
                         f"{_fmt(row.get('peak_gpu_gb'), '{:.2f}')} | {_fmt(row.get('compile_s'))} | "
                         f"{_target(row, o, 'step') if row.get('precision') == 'bf16' else ''} |")
    loaders = sections.get("loaders", {})
    if loaders.get("rows"):
        lines += ["", f"bf16 step fed by the loaders ({loaders.get('threads')} threads/workers per stream)", "",
                  "| loader | status | it/s | crops/s | step ms (median) | data wait | loader build s | target |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in loaders["rows"]:
            wait = row.get("data_wait_fraction")
            lines.append(f"| {row['name']} | {_status_cell(row)} | {_fmt(row.get('iters_per_s'))} | "
                         f"{_fmt(row.get('crops_per_s'), '{:,.0f}')} | {_fmt(row.get('step_ms_median'))} | "
                         f"{_fmt(None if wait is None else 100 * wait, '{:.1f} %')} | "
                         f"{_fmt(row.get('loader_build_s'))} | {_target(row, o, 'loader')} |")
    lines += ["", f"Targets (one H100-class GPU, nyu preset): >= {TARGET_ITERS_PER_S:.0f} MURAUER iterations/s in bf16 "
              f"(>= {TARGET_CROPS_PER_S:,.0f} crops/s) with < {100 * TARGET_DATA_WAIT:.0f} % data wait."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- runner

class Check:
    """Runs the sections in order, each isolated, and rewrites the JSON after each one."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.started = time.perf_counter()
        self.result = {"benchmark": "gpu-check", "machine": machine(),
                       "options": {**dataclasses.asdict(opts), "out_dir": str(opts.out_dir), "skip": list(opts.skip)},
                       "targets": {"iters_per_s": TARGET_ITERS_PER_S, "crops_per_s": TARGET_CROPS_PER_S,
                                   "data_wait_fraction": TARGET_DATA_WAIT},
                       "sections": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def require_time(self, what: str) -> None:
        if self.elapsed() > self.opts.budget_s:
            raise Skip(f"time budget of {self.opts.budget_s:.0f} s used up before {what}")

    def run(self, name: str, function, budgeted: bool = True) -> dict:
        started = time.perf_counter()
        print(f"[gpu-check] {name} ...", flush=True)
        try:
            if name in self.opts.skip:
                raise Skip("--skip")
            if budgeted:
                self.require_time(name)
            data = function() or {}
            section = {"status": data.pop("status", "ok"), **data}
        except Skip as why:
            section = {"status": "skipped", "reason": str(why)}
        except Exception as err:  # noqa: BLE001 - one failing section is reported, the rest still runs
            section = {"status": "failed", "reason": _error_text(err), "traceback": traceback.format_exc()[-4000:]}
        section["seconds"] = time.perf_counter() - started
        self.result["sections"][name] = section
        print(f"[gpu-check] {name}: {_status_cell(section)} ({section['seconds']:.1f} s)", flush=True)
        self.write()
        return section

    def write(self) -> None:
        self.result["seconds"] = self.elapsed()
        out = self.opts.out_dir
        atomic_write_text(out / "gpu-check.json", json.dumps(self.result, indent=2, default=str) + "\n")
        atomic_write_text(out / "gpu-check.md", render(self.result))


def memory_section(opts: Options, check: Check) -> dict:
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


def _options(out_dir: str, device: str, preset: str, steps: int, warmup: int, frames: int, compile_backend: str,
             budget_s: float, loader_threads: int, skip, keep_data: bool) -> Options:
    if not out_dir:
        raise UserError("usage: murauer-dist bench gpu-check OUT_DIR [--device cuda|cpu] "
                        "(OUT_DIR receives gpu-check.json)")
    device = str(device).lower()
    if device == "gpu":
        device = "cuda"
    if device not in DEFAULTS:
        raise UserError(f"--device must be cuda or cpu, got {device!r}")
    defaults = DEFAULTS[device]
    if isinstance(skip, str):
        skip = [item.strip() for item in skip.split(",") if item.strip()]
    skip = tuple(skip or ())
    unknown = sorted(set(skip) - set(SECTIONS))
    if unknown:
        raise UserError(f"--skip: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name, value in (("steps", steps), ("frames", frames)):
        if value and int(value) < 1:
            raise UserError(f"--{name} must be positive, got {value}")
    return Options(out_dir=Path(out_dir), device=device, preset=preset or defaults["preset"],
                   steps=int(steps or defaults["steps"]), warmup=int(warmup if warmup >= 0 else defaults["warmup"]),
                   frames=int(frames or defaults["frames"]),
                   compile_backend=compile_backend or defaults["compile_backend"],
                   budget_s=float(budget_s or defaults["budget_s"]), loader_threads=int(loader_threads),
                   skip=skip, keep_data=bool(keep_data))


def main(out_dir: str = "", device: str = "cuda", preset: str = "", steps: int = 0, warmup: int = -1,
         frames: int = 0, compile_backend: str = "", budget_s: float = 0.0, loader_threads: int = 0,
         skip="", keep_data: bool = False) -> dict:
    """Check this node: environment, gpu tests, data, training step variants, loaders, DDP, memory.

    Writes OUT_DIR/gpu-check.json and OUT_DIR/gpu-check.md. Defaults per device: cuda = nyu preset,
    50 steps after 10 warm-up, 256 frames, compile backend inductor, 480 s budget; cpu = tiny, 3
    steps after 1, 24 frames, backend eager. --skip takes section names (e.g. gpu_tests,compile).
    Raises UserError (exit 1, one line) when a section failed; skipped sections are not failures.
    """
    opts = _options(out_dir, device, preset, steps, warmup, frames, compile_backend, budget_s, loader_threads,
                    skip, keep_data)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    if opts.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    check = Check(opts)
    check.run("environment", lambda: environment(opts), budgeted=False)
    check.run("gpu_tests", lambda: gpu_tests(opts))
    scratch = Path(tempfile.mkdtemp(prefix=".gpu-check-data-", dir=opts.out_dir))
    try:
        data_section = check.run("dataset", lambda: dataset(opts, scratch))
        check.run("train_step", lambda: train_step_section(opts, check))
        data = data_section if data_section["status"] == "ok" else None
        check.run("loaders", lambda: loaders_section(opts, check, data))
        check.run("ddp", lambda: ddp_section(opts, check))
        check.run("compile", lambda: compile_section(opts))
    finally:
        if not opts.keep_data:
            shutil.rmtree(scratch, ignore_errors=True)
    check.run("memory", lambda: memory_section(opts, check), budgeted=False)
    check.write()
    table = render(check.result)
    print("\n" + table, end="", flush=True)
    print(f"written: {opts.out_dir / 'gpu-check.json'}, {opts.out_dir / 'gpu-check.md'}")
    failed = [name for name, section in check.result["sections"].items() if section["status"] == "failed"]
    if failed:
        raise UserError(f"gpu-check: {len(failed)} section(s) failed: {', '.join(failed)} "
                        f"(reasons and tracebacks in {opts.out_dir / 'gpu-check.json'})")
    return check.result


"""gpu-check sections that look at the node and make the data: environment (with the C compiler
inductor needs), gpu_tests, dataset. They run in the command's own process (no torch kernels)."""
from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from murauer_dist import geometry
from murauer_dist.bench.gpu_check.spec import PROBES, TORCH_ERROR, Budget, Options, Skip, error_text, torch
from murauer_dist.bench.machine import machine
from murauer_dist.config import load_config


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
        return {"present": True, "error": error_text(err)}
    driver = re.search(r"Driver Version:\s*([\d.]+)", done.stdout)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", done.stdout)
    return {"present": True, "exit": done.returncode, "driver": driver.group(1) if driver else None,
            "cuda": cuda.group(1) if cuda else None}


C_PROGRAM = "int murauer_probe(int x) { return x + 1; }\n"


def _compiler(names: tuple[str, ...], variable: str, suffix: str) -> dict:
    """The first compiler found ($variable, then `names`) and whether it builds a trivial shared library,
    as inductor and triton do (-O2 -shared -fPIC)."""
    candidates = [os.environ[variable]] if os.environ.get(variable) else []
    found = next((path for path in (shutil.which(name) for name in [*candidates, *names]) if path), None)
    if found is None:
        return {"found": False, "builds": False, "reason": f"none of ${variable}, {', '.join(names)} on PATH"}
    result = {"found": True, "path": found}
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
        result["version"] = (version.stdout.strip().splitlines() or [""])[0][:200]
        with tempfile.TemporaryDirectory(prefix="gpu-check-cc-") as scratch:
            source = Path(scratch) / f"probe{suffix}"
            source.write_text(C_PROGRAM)
            command = [found, "-O2", "-shared", "-fPIC", str(source), "-o", str(Path(scratch) / "probe.so")]
            built = subprocess.run(command, capture_output=True, text=True, timeout=120)
        result["builds"] = built.returncode == 0
        if built.returncode != 0:
            lines = [line for line in built.stderr.strip().splitlines() if line.strip()]
            result["reason"] = (lines[-1] if lines else f"exit {built.returncode}")[:300]
    except (OSError, subprocess.SubprocessError) as err:
        result.update({"builds": False, "reason": error_text(err)})
    return result


def compilers() -> dict:
    """C (triton's launchers on CUDA, inductor) and C++ (inductor's CPU kernels) compilers."""
    return {"c": _compiler(("cc", "gcc", "clang"), "CC", ".c"),
            "c++": _compiler(("c++", "g++", "clang++"), "CXX", ".cpp")}


def environment(opts: Options) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "machine": machine(),
            "nvidia_smi": _nvidia_smi(), "packages": _probe_imports(opts.device), "compilers": compilers(),
            "threads": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
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

def gpu_tests(opts: Options, budget: Budget) -> dict:
    """`pytest -m gpu` on the repository's tests (in a child process, at most 300 s and never past the
    time budget), counted from its JUnit XML."""
    if importlib.util.find_spec("pytest") is None:
        raise Skip("pytest is not installed (pip install pytest)")
    repo = Path(__file__).resolve().parents[3]
    if not (repo / "tests").is_dir():
        raise Skip(f"no tests/ folder next to the package ({repo.name}); run from a clone of the repository")
    with tempfile.TemporaryDirectory(prefix="gpu-check-tests-") as scratch:
        report = Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", "tests"]
        env = {**os.environ, "WANDB_MODE": "disabled",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
        timeout = min(300.0, max(1.0, budget.left()))
        try:
            done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"pytest -m gpu took longer than {timeout:.0f} s") from None
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
    n_labeled = min(load_config(opts.preset).data.n_labeled, max(1, opts.frames // 2))
    return [f"data.root={root}", f"data.shards={shards}", f"data.n_labeled={n_labeled}", "data.val_fraction=0"]


def dataset(opts: Options, folder: Path) -> dict:
    """synth-data (few frames) and make-shards with the preset's crop settings, in `folder`."""
    # lazy: heavy: scipy, webdataset (only the dataset section renders frames and writes shards)
    from murauer_dist.frames.procedural.generate import synth_data
    from murauer_dist.shards.cli import make_shard_set
    from murauer_dist.shards.labeled import ensure_labeled_shards

    workers = max(1, min(8, os.cpu_count() or 1))
    root, shards = folder / "procedural", folder / "shards"
    test_frames = max(8, opts.frames // 8)          # dali_parity reads them through the eval loader
    started = time.perf_counter()
    synth_data(root, frames_train=opts.frames, frames_test=test_frames, seed=0, workers=workers, progress=False)
    synth_s = time.perf_counter() - started
    overrides = _data_overrides(opts, root, shards)
    started = time.perf_counter()
    manifests = make_shard_set(str(root), str(shards), split="all", workers=workers, preset=opts.preset,
                               overrides=overrides, log=lambda *_: None)
    cfg = load_config(opts.preset, overrides)
    ensure_labeled_shards(shards, cfg.data.n_labeled, cfg.data.label_seed)   # cut now, not in a timed loader
    shards_s = time.perf_counter() - started
    train = manifests["train"]
    size = sum(shard["bytes"] for shard in train["shards"])
    return {"frames": opts.frames, "test_frames": test_frames, "workers": workers, "synth_data_s": synth_s,
            "synth_frames_per_s": (opts.frames + test_frames) / synth_s, "make_shards_s": shards_s,
            "shard_frames_per_s": (opts.frames + test_frames) / shards_s, "samples": train["num_samples"],
            "test_samples": manifests["test"]["num_samples"] if "test" in manifests else 0,
            "skipped_frames": train["num_skipped"], "shard_mb": size / 1e6, "crop_size": cfg.data.crop_size,
            "stored_size": geometry.stored_size(cfg.data.crop_size, cfg.data.crop_margin),
            "n_labeled": cfg.data.n_labeled, "root": str(root), "shards": str(shards), "overrides": overrides}

"""What machine a benchmark ran on: CPU model, core count, 1-minute load average, GPU name.

Every benchmark puts `machine()` into its JSON (key "machine") and `describe()` above its table,
so a number never travels without the machine that produced it. Cheap and side-effect free: the
GPU comes from `nvidia-smi` (no CUDA context is created, so worker processes can still be forked
afterwards), or from torch when CUDA is already initialised in this process.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from murauer_dist.cores import usable_cores


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average_1min() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def gpus() -> list[str]:
    """Names of the visible NVIDIA GPUs ([] without one)."""
    names: list[str] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            done = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=20)
            if done.returncode == 0:
                names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            names = []
    torch = sys.modules.get("torch")
    if not names and torch is not None and torch.cuda.is_initialized():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return _visible(names, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _visible(names: list[str], visible: str | None) -> list[str]:
    """nvidia-smi lists every GPU of the node; keep those CUDA_VISIBLE_DEVICES shows (indices)."""
    if visible is None:
        return names
    items = [item.strip() for item in visible.split(",") if item.strip()]
    if not items:
        return []
    if all(item.isdigit() for item in items):
        return [names[int(item)] for item in items if int(item) < len(names)]
    return names[:len(items)]                           # UUIDs or MIG ids: the count is what we know


def machine() -> dict:
    """The machine fields every benchmark records."""
    names = gpus()
    return {"cpu_model": cpu_model(), "cpu_cores": usable_cores(), "cpu_cores_total": os.cpu_count(),
            "load_average_1min": load_average_1min(), "gpu": names[0] if names else None,
            "gpu_count": len(names), "hostname": platform.node()}


def describe(info: dict | None = None) -> str:
    """One line for above a benchmark table."""
    info = info or machine()
    load = info.get("load_average_1min")
    gpu = info.get("gpu")
    gpu_text = f"{info.get('gpu_count', 1)} x {gpu}" if gpu else "no GPU"
    return (f"machine: {info['cpu_model']}, {info['cpu_cores']} cores, load average (1 min) "
            f"{'n/a' if load is None else f'{load:.2f}'}, {gpu_text}")

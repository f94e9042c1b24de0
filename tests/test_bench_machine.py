"""bench/machine.py: every benchmark says what machine it ran on."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

from murauer_dist.bench import BENCHMARKS
from murauer_dist.bench.machine import _visible, describe, machine


def test_machine_has_cpu_cores_load_and_gpu():
    info = machine()
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert isinstance(info["cpu_cores"], int) and info["cpu_cores"] >= 1
    assert info["load_average_1min"] is None or info["load_average_1min"] >= 0
    assert "gpu" in info and (info["gpu"] is None or isinstance(info["gpu"], str))
    assert info["gpu_count"] == (0 if info["gpu"] is None else info["gpu_count"])
    line = describe(info)
    assert line.startswith("machine: ") and info["cpu_model"] in line and f"{info['cpu_cores']} cores" in line


def test_describe_names_the_gpu():
    info = {"cpu_model": "Some CPU", "cpu_cores": 16, "load_average_1min": 0.5, "gpu": "NVIDIA H100 80GB HBM3",
            "gpu_count": 8}
    assert describe(info) == ("machine: Some CPU, 16 cores, load average (1 min) 0.50, "
                              "8 x NVIDIA H100 80GB HBM3")
    assert describe({**info, "gpu": None, "gpu_count": 0, "load_average_1min": None}).endswith("n/a, no GPU")


def test_cuda_visible_devices_filters_the_gpu_list():
    names = ["A", "B", "C"]
    assert _visible(names, None) == names
    assert _visible(names, "2,0") == ["C", "A"]
    assert _visible(names, "") == []
    assert _visible(names, "GPU-1234") == ["A"]


def test_every_benchmark_records_the_machine():
    for name in ("synth-data", "shards", "loader", "train", "dist", "gpu-check", "step-cost"):
        module = importlib.import_module(BENCHMARKS[name])
        parts = [module] + [importlib.import_module(f"{module.__name__}.{info.name}")      # a package: its modules
                            for info in pkgutil.iter_modules(getattr(module, "__path__", []))]
        source = "".join(inspect.getsource(part) for part in parts)
        assert "machine()" in source and "describe(" in source, f"bench {name} does not record the machine"

"""What launch/setup.sh installs, decided from what the machine has (standard library only).

setup.sh runs this file by path, before the package is installed:

    python murauer_dist/install_plan.py --venv-args     # options for `python3 -m venv` (.venv only)
    python murauer_dist/install_plan.py --repo REPO     # print the plan (setup.sh hashes it)
    python murauer_dist/install_plan.py --repo REPO --run

Machine without a GPU (nvidia-smi missing or listing none): exactly the pinned CPU plan,

    pip install -q -r REPO/requirements-cpu.txt         CPU torch, nvidia-dali-cuda120 (DALI's CPU mode), ...
    pip install -q --no-deps -e REPO

GPU machine: the environment's CUDA torch is kept (pinned to its installed version, so pip fails
rather than replace it) and the package is installed with the test and export extras (pytest;
onnx and onnxruntime for `murauer-dist export` and its tests) and the DALI wheel of the CUDA major
version (extras dali-cuda120 / dali-cuda130 in setup.cfg):

    pip install -q -e REPO[test,export,dali-cuda120] torch==<installed version>

The CUDA major comes from the environment's torch (torch.version.cuda, read from torch/version.py
without importing torch) when it is a CUDA build, else from the CUDA version nvidia-smi reports
(the driver's). A DALI wheel of the other major is uninstalled first (both install nvidia/dali).
Without an active venv, setup.sh creates .venv with --system-site-packages on a GPU machine, so
the system's (cluster module, container, conda) CUDA torch is seen and kept.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

DALI_WHEELS = {12: "nvidia-dali-cuda120", 13: "nvidia-dali-cuda130"}      # CUDA major -> wheel
DALI_EXTRAS = {12: "dali-cuda120", 13: "dali-cuda130"}                    # ... -> extra in setup.cfg
BASE_EXTRAS = ("test", "export")           # extras of every GPU install; the CPU pins hold the same packages


@dataclass(frozen=True)
class Detection:
    """The inputs of the plan. gpus: nvidia-smi -L's GPU lines (empty: no GPU). driver_cuda: the
    "CUDA Version" of nvidia-smi. torch_version / torch_cuda: the environment's torch (None: not
    installed / a CPU build). installed_dali: nvidia-dali-* distributions installed. isolated_venv:
    the environment is a venv that does not see the system's site-packages."""
    gpus: tuple = ()
    driver_cuda: str | None = None
    torch_version: str | None = None
    torch_cuda: str | None = None
    installed_dali: tuple = ()
    isolated_venv: bool = False


@dataclass
class Plan:
    gpu: bool
    commands: list = field(default_factory=list)      # each: the arguments after `python -m pip`
    dali: str | None = None                           # the DALI wheel chosen (GPU plan)
    notes: list = field(default_factory=list)

    def text(self) -> str:
        lines = [f"pip {' '.join(command)}" for command in self.commands]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


# ----------------------------------------------------------------------------------- detection

def parse_gpu_list(text: str | None) -> tuple:
    """The GPU lines of `nvidia-smi -L` ("GPU 0: NVIDIA H100 ... (UUID: ...)"); MIG lines are not GPUs."""
    if not text:
        return ()
    return tuple(line.strip() for line in text.splitlines() if re.match(r"\s*GPU \d+:", line))


def parse_cuda_version(text: str | None) -> str | None:
    """The "CUDA Version: 12.4" of nvidia-smi's header (the newest CUDA the driver supports)."""
    match = re.search(r"CUDA Version\s*:\s*(\d+(?:\.\d+)*)", text or "")
    return match.group(1) if match else None


def major(version: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", version or "")
    return int(match.group(1)) if match else None


def _run_smi(*args: str) -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        done = subprocess.run([smi, *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def torch_versions() -> tuple:
    """(version, cuda) of the torch this python would import, read from torch/version.py (no import:
    fast, and no CUDA initialisation); (None, None) without torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None, None
    path = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None, None
    version = re.search(r"^__version__\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return (version.group(1) if version else None), (cuda.group(1) if cuda else None)


def installed_dali() -> tuple:
    names = set()
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name.startswith("nvidia-dali-cuda"):
            names.add(name)
    return tuple(sorted(names))


def isolated_venv() -> bool:
    """A venv (sys.prefix != sys.base_prefix) created without --system-site-packages."""
    if sys.prefix == getattr(sys, "base_prefix", sys.prefix):
        return False
    try:
        text = (Path(sys.prefix) / "pyvenv.cfg").read_text(encoding="utf-8")
    except OSError:
        return False
    match = re.search(r"include-system-site-packages\s*=\s*(\w+)", text)
    return not (match and match.group(1).lower() == "true")


def detect(run_smi=_run_smi, torch_probe=torch_versions, dali_probe=installed_dali,
           venv_probe=isolated_venv) -> Detection:
    """This machine and environment (each probe can be replaced, e.g. by tests)."""
    gpus = parse_gpu_list(run_smi("-L"))
    driver = parse_cuda_version(run_smi()) if gpus else None
    version, cuda = torch_probe()
    return Detection(gpus=gpus, driver_cuda=driver, torch_version=version, torch_cuda=cuda,
                     installed_dali=tuple(dali_probe()), isolated_venv=bool(venv_probe()))


# ---------------------------------------------------------------------------------------- plan

def venv_args(detection: Detection) -> list:
    """`python3 -m venv` options for a new .venv: on a GPU machine it sees the system's CUDA torch."""
    return ["--system-site-packages"] if detection.gpus else []


def cpu_plan(repo: str) -> Plan:
    return Plan(gpu=False, commands=[["install", "-q", "-r", f"{repo}/requirements-cpu.txt"],
                                     ["install", "-q", "--no-deps", "-e", repo]])


def make_plan(detection: Detection, repo: str) -> Plan:
    """The pip commands for this machine (see the module docstring)."""
    if not detection.gpus:
        return cpu_plan(repo)
    plan = Plan(gpu=True)
    torch_major = major(detection.torch_cuda)
    driver_major = major(detection.driver_cuda)
    cuda_major, source = ((torch_major, f"torch {detection.torch_version} is built for CUDA {detection.torch_cuda}")
                          if torch_major else
                          (driver_major, f"nvidia-smi reports CUDA {detection.driver_cuda}") if driver_major else
                          (None, "neither torch nor nvidia-smi names a CUDA version"))
    if detection.torch_version is None:
        plan.notes.append("no torch in this environment: pip installs torch from PyPI; to keep the cluster's "
                          "CUDA torch, install or activate it first (see README, Install on a GPU cluster)")
    elif torch_major is None:
        hint = ("remove .venv and rerun launch/setup.sh (it then creates .venv with --system-site-packages)"
                if detection.isolated_venv else "activate an environment with the cluster's CUDA torch")
        plan.notes.append(f"the environment's torch {detection.torch_version} is a CPU build on a GPU machine: {hint}")
    if torch_major and driver_major and torch_major > driver_major:
        plan.notes.append(f"torch is built for CUDA {detection.torch_cuda} but the driver supports CUDA "
                          f"{detection.driver_cuda}: update the driver or install a torch for CUDA {driver_major}")
    if cuda_major is None:
        cuda_major = 12
        plan.notes.append(f"{source}: assuming CUDA 12")
    if cuda_major in DALI_WHEELS:
        chosen = cuda_major
    elif cuda_major > max(DALI_WHEELS):
        chosen = max(DALI_WHEELS)
        plan.notes.append(f"CUDA {cuda_major} ({source}): no DALI wheel for it yet, using {DALI_WHEELS[chosen]}")
    else:
        chosen = None
        plan.notes.append(f"CUDA {cuda_major} ({source}): DALI 2 has no wheel for it; DALI is not installed, "
                          f"train with loader.backend=reference")
    extras = list(BASE_EXTRAS)
    if chosen is not None:
        plan.dali = DALI_WHEELS[chosen]
        extras.append(DALI_EXTRAS[chosen])
        others = [name for name in detection.installed_dali if name != plan.dali]
        if others:
            plan.commands.append(["uninstall", "-q", "-y", *others])
    command = ["install", "-q", "-e", f"{repo}[{','.join(extras)}]"]
    if detection.torch_version is not None:
        command.append(f"torch=={detection.torch_version}")    # keep the environment's torch
    plan.commands.append(command)
    return plan


def run_plan(plan: Plan, python: str = sys.executable) -> None:
    for note in plan.notes:
        print(f"[setup] note: {note}", flush=True)
    for command in plan.commands:
        print(f"[setup] pip {' '.join(command)}", flush=True)
        subprocess.run([python, "-m", "pip", *command], check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--run", action="store_true", help="run the plan with this python's pip")
    parser.add_argument("--venv-args", action="store_true", help="print the options for python3 -m venv")
    args = parser.parse_args(argv)
    detection = detect()
    if args.venv_args:
        print(" ".join(venv_args(detection)))
        return 0
    plan = make_plan(detection, args.repo)
    if not args.run:
        print(plan.text())
        return 0
    try:
        run_plan(plan)
        after = make_plan(detect(), args.repo)
        if plan.gpu and after.dali != plan.dali:     # torch was just installed and decides the wheel
            run_plan(after)
    except subprocess.CalledProcessError as err:
        print(f"[setup] failed: {' '.join(str(a) for a in err.cmd)} (exit {err.returncode})", file=sys.stderr)
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""launch/setup.sh and its plan (murauer_dist/install_plan.py), with the machine faked.

The plan is tested on its detection inputs (nvidia-smi output, the environment's torch, installed
DALI wheels); setup.sh itself runs against a stand-in python whose `--run` only records the call,
so nothing is installed here.
"""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

from murauer_dist import install_plan
from murauer_dist.install_plan import Detection, detect, make_plan, parse_cuda_version, parse_gpu_list, venv_args

REPO = Path(__file__).resolve().parent.parent
CPU_PLAN = [["install", "-q", "-r", "/repo/requirements-cpu.txt"], ["install", "-q", "--no-deps", "-e", "/repo"]]
H100 = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0f1e2d3c)",)
SMI_HEADER = """Tue Jan  7 10:00:00 2025
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}              Driver Version: {driver}      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
"""


def test_cpu_machine_gets_todays_pinned_plan():
    assert make_plan(Detection(), "/repo").commands == CPU_PLAN
    # a CUDA torch or a DALI wheel in the environment changes nothing without a GPU
    plan = make_plan(Detection(torch_version="2.7.1+cu128", torch_cuda="12.8",
                               installed_dali=("nvidia-dali-cuda130",)), "/repo")
    assert plan.commands == CPU_PLAN and not plan.gpu and plan.notes == []
    assert venv_args(Detection()) == []


def test_gpu_machine_keeps_torch_and_picks_dali_from_torch_cuda():
    detection = Detection(gpus=H100, driver_cuda="13.0", torch_version="2.7.1+cu128", torch_cuda="12.8",
                          installed_dali=("nvidia-dali-cuda120",))
    plan = make_plan(detection, "/repo")
    assert plan.gpu and plan.dali == "nvidia-dali-cuda120"
    assert plan.commands == [["install", "-q", "-e", "/repo[test,export,dali-cuda120]", "torch==2.7.1+cu128"]]
    assert plan.notes == []
    assert venv_args(detection) == ["--system-site-packages"]


def test_gpu_machine_without_torch_uses_the_driver_cuda_version():
    plan = make_plan(Detection(gpus=H100, driver_cuda="13.0"), "/repo")
    assert plan.dali == "nvidia-dali-cuda130"
    assert plan.commands == [["install", "-q", "-e", "/repo[test,export,dali-cuda130]"]]
    assert any("no torch in this environment" in note for note in plan.notes)


def test_switching_cuda_major_uninstalls_the_other_dali_wheel():
    plan = make_plan(Detection(gpus=H100, driver_cuda="13.0", torch_version="2.9.0+cu130", torch_cuda="13.0",
                               installed_dali=("nvidia-dali-cuda120",)), "/repo")
    assert plan.commands == [["uninstall", "-q", "-y", "nvidia-dali-cuda120"],
                             ["install", "-q", "-e", "/repo[test,export,dali-cuda130]", "torch==2.9.0+cu130"]]


def test_gpu_machine_edge_cases():
    old = make_plan(Detection(gpus=H100, driver_cuda="11.8", torch_version="2.3.0+cu118", torch_cuda="11.8"), "/repo")
    assert old.dali is None and old.commands == [["install", "-q", "-e", "/repo[test,export]", "torch==2.3.0+cu118"]]
    assert any("loader.backend=reference" in note for note in old.notes)
    newer = make_plan(Detection(gpus=H100, driver_cuda="14.1"), "/repo")
    assert newer.dali == "nvidia-dali-cuda130" and any("no DALI wheel for it yet" in n for n in newer.notes)
    unknown = make_plan(Detection(gpus=H100), "/repo")
    assert unknown.dali == "nvidia-dali-cuda120" and any("assuming CUDA 12" in n for n in unknown.notes)
    cpu_torch = make_plan(Detection(gpus=H100, driver_cuda="12.4", torch_version="2.13.0+cpu",
                                    isolated_venv=True), "/repo")
    assert cpu_torch.dali == "nvidia-dali-cuda120"
    assert any("CPU build" in n and "--system-site-packages" in n for n in cpu_torch.notes)
    ahead = make_plan(Detection(gpus=H100, driver_cuda="12.2", torch_version="2.9.0+cu130", torch_cuda="13.0"), "/repo")
    assert any("update the driver" in n for n in ahead.notes)


def test_nvidia_smi_parsing():
    listing = ("GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-1)\n  MIG 3g.40gb     Device  0: (UUID: MIG-2)\n"
               "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-3)\n")
    assert len(parse_gpu_list(listing)) == 2
    assert parse_gpu_list("No devices were found") == () and parse_gpu_list(None) == ()
    assert parse_cuda_version(SMI_HEADER.format(driver="570.86.15", cuda="12.8")) == "12.8"
    assert parse_cuda_version("CUDA Version: N/A") is None


def test_detect_uses_its_probes():
    def smi(*args):
        return SMI_HEADER.format(driver="580.65.06", cuda="13.0") if not args else "\n".join(H100)

    detection = detect(run_smi=smi, torch_probe=lambda: (None, None), dali_probe=lambda: ["nvidia-dali-cuda120"],
                       venv_probe=lambda: False)
    assert detection == Detection(gpus=H100, driver_cuda="13.0", installed_dali=("nvidia-dali-cuda120",))
    assert detect(run_smi=lambda *args: None, torch_probe=lambda: ("2.5.1", None), dali_probe=lambda: (),
                  venv_probe=lambda: True).gpus == ()


def test_torch_version_is_read_without_importing_torch():
    import torch
    assert install_plan.torch_versions() == (torch.__version__, torch.version.cuda)


def test_setup_cfg_has_a_dali_extra_per_cuda_major_and_cpu_pins_stay():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert "dali" not in cfg["options"]["install_requires"]
    extras = cfg["options.extras_require"]
    for cuda, extra in install_plan.DALI_EXTRAS.items():
        assert install_plan.DALI_WHEELS[cuda] in extras[extra]
    assert "nvidia-dali-cuda120==2.4.0" in (REPO / "requirements-cpu.txt").read_text().splitlines()


def test_every_extra_of_the_gpu_plan_is_pinned_for_cpu_machines():
    """The GPU plan installs the extras in BASE_EXTRAS; CPU machines get the same packages from the pins."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extras = cfg["options.extras_require"]
    pinned = {line.split("==")[0].strip().lower() for line in (REPO / "requirements-cpu.txt").read_text().splitlines()
              if "==" in line and not line.lstrip().startswith("#")}
    for extra in install_plan.BASE_EXTRAS:
        for requirement in extras[extra].split():
            name = requirement.split(">")[0].split("=")[0].split("<")[0].strip().lower()
            assert name in pinned, f"{name} (extra {extra}) is not pinned in requirements-cpu.txt"
    assert {"onnx", "onnxruntime"} <= pinned


# ------------------------------------------------------------------------------- launch/setup.sh

def _fake_machine(tmp_path: Path, gpu: bool) -> dict:
    """A venv whose python records `--run` instead of installing, and an nvidia-smi (GPU or none)."""
    venv, bin_dir = tmp_path / "venv", tmp_path / "fakebin"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = --run ]; then echo \"run $*\" >> \"$RUN_LOG\"; "
                      f"exit 0; fi\ndone\nexec {sys.executable} \"$@\"\n")
    smi = bin_dir / "nvidia-smi"
    if gpu:
        smi.write_text("#!/bin/sh\nif [ \"$1\" = -L ]; then echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'; "
                       "else echo '| Driver Version: 580.65.06      CUDA Version: 13.0 |'; fi\n")
    else:
        smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    for path in (python, smi):
        path.chmod(0o755)
    return {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "RUN_LOG": str(tmp_path / "runs.log")}


def _setup(env: dict) -> str:
    done = subprocess.run(["bash", "-c", 'source "$0/launch/setup.sh" && echo "PY=$PY"', str(REPO)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_setup_sh_installs_once_and_again_when_the_machine_changes(tmp_path):
    env = _fake_machine(tmp_path, gpu=False)
    log, stamp = tmp_path / "runs.log", tmp_path / "venv" / ".murauer_dist-installed"
    first = _setup(env)
    assert "[setup] installing" in first and f"PY={tmp_path / 'venv' / 'bin' / 'python'}" in first
    assert log.read_text().splitlines() == [f"run {REPO / 'murauer_dist' / 'install_plan.py'} --repo {REPO} --run"]
    assert stamp.is_file()
    assert "[setup] installing" not in _setup(env)                   # idempotent: nothing to do
    assert len(log.read_text().splitlines()) == 1
    printed = subprocess.run([sys.executable, str(REPO / "murauer_dist" / "install_plan.py"), "--repo", str(REPO)],
                             env=env, capture_output=True, text=True, check=True).stdout
    assert printed.splitlines() == [f"pip install -q -r {REPO}/requirements-cpu.txt",
                                    f"pip install -q --no-deps -e {REPO}"]
    gpu_env = _fake_machine(tmp_path, gpu=True)                      # same venv, now a GPU shows up
    assert "[setup] installing" in _setup(gpu_env)
    assert len(log.read_text().splitlines()) == 2
    assert "[setup] installing" not in _setup(gpu_env)
    venv_options = subprocess.run([sys.executable, str(REPO / "murauer_dist" / "install_plan.py"), "--venv-args"],
                                  env=gpu_env, capture_output=True, text=True, check=True).stdout
    assert venv_options.strip() == "--system-site-packages"

#!/usr/bin/env bash
# Check a new GPU node in one run (at most ~10 min on one H100-class GPU): environment (with the C
# compiler inductor needs), `pytest -m gpu`, a small procedural dataset and its shards, the nyu
# preset's MURAUER step (fp32, bf16, bf16 + channels-last), the step fed by the reference and DALI
# loaders, DALI GPU against DALI CPU, the loader across epoch boundaries, a one-rank NCCL DDP step, a
# one-rank DeepSpeed ZeRO-1 step, a real `murauer-dist train` stopped by SIGTERM and resumed,
# torch.compile as training compiles, and peak GPU memory. Prints a table; writes
# OUT_DIR/gpu-check.json and OUT_DIR/gpu-check.md. Missing pieces (DALI, DeepSpeed, wandb, CUDA) are
# reported as skipped, never a crash; exit 0, or 1 when a section failed.
#
#   launch/gpu-check.sh OUT_DIR                   # on the GPU node (--device cuda)
#   launch/gpu-check.sh OUT_DIR --device cpu      # the same sequence, tiny preset, on a CPU (as the tests do)
#   launch/gpu-check.sh OUT_DIR --skip compile    # options: murauer_dist/bench/gpu_check/runner.py, main()
#
# Needs only torch and the light dependencies (numpy, fire, webdataset, pyyaml, pillow, scipy,
# matplotlib); the package is found from the repository, no install needed.
# PY: python of the environment (default: active venv, else the repo's .venv, else python3).
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: launch/gpu-check.sh OUT_DIR [--device cuda|cpu] [--steps N] [--skip SECTION,...]" >&2
  exit 2
fi
# common.sh asks torch for the GPU count; without torch the check itself reports it, so go on.
set +e
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
set -e
# Threads as launch/torchrun.sh gives each training rank (one rank per GPU; 2 ranks on a machine
# without GPUs): the check measures what a rank gets, and torch's default (every core) next to the
# loaders' threads oversubscribes the CPU. A value set by the user is kept.
CORES="$(nproc)"
[[ "${GPUS:-}" =~ ^[0-9]+$ ]] || GPUS=0
RANKS=$(( GPUS > 0 ? GPUS : 2 ))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( CORES / RANKS > 0 ? CORES / RANKS : 1 ))}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE="${WANDB_MODE:-disabled}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$REPO/.cache/torch_extensions}"
exec "$PY" -m murauer_dist.cli bench gpu-check "$@"

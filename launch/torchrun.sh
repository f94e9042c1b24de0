#!/usr/bin/env bash
# Data-parallel training under torchrun, on one node or many: `murauer-dist train PRESET [overrides]`
# in every process. Engine (ddp or deepspeed) and everything else come from the config.
#
#   launch/torchrun.sh tiny                                   # this node, all GPUs (2 processes on CPU)
#   NPROC_PER_NODE=4 launch/torchrun.sh nyu train.engine=deepspeed
#   NNODES=2 RDZV_ENDPOINT=node0:29400 RDZV_ID=job42 MAX_RESTARTS=3 launch/torchrun.sh nyu   # on every node
#
# Environment (all optional):
#   NNODES          nodes, or MIN:MAX for an elastic job (default 1)
#   NPROC_PER_NODE  processes per node (default: the GPU count; 2 on a machine without GPUs)
#   RDZV_ENDPOINT   host:port of the c10d rendezvous (multi-node); unset with NNODES=1: --standalone
#   RDZV_ID         job id shared by all nodes of one run (default murauer-dist)
#   MAX_RESTARTS    elastic restarts of the whole group after a failure (default 0); each restart
#                   resumes from the latest checkpoint in train.out, which the training loop finds itself
#   PY              python of the environment (default: active venv, else the repo's .venv, else python3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ $# -lt 1 ]]; then
  echo "usage: launch/torchrun.sh PRESET [section.key=value ...]" >&2
  exit 2
fi

NNODES="${NNODES:-1}"
NPROC_PER_NODE="${NPROC_PER_NODE:-$(( GPUS > 0 ? GPUS : 2 ))}"
MAX_RESTARTS="${MAX_RESTARTS:-0}"
CORES="$(nproc)"
# One process per core share: more intra-op threads than cores only makes the ranks fight.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( CORES / NPROC_PER_NODE > 0 ? CORES / NPROC_PER_NODE : 1 ))}"
# DeepSpeed JIT-compiles a CPU communication op once; keep it in the project, not the home dir.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$REPO/.cache/torch_extensions}"

if [[ "$NNODES" == "1" && -z "${RDZV_ENDPOINT:-}" ]]; then
  RDZV=(--standalone)
else
  if [[ -z "${RDZV_ENDPOINT:-}" ]]; then
    echo "launch/torchrun.sh: NNODES=$NNODES needs RDZV_ENDPOINT=host:port (a node every node can reach)" >&2
    exit 2
  fi
  RDZV=(--rdzv-backend=c10d --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RDZV_ID:-murauer-dist}")
fi

# Relative paths in overrides stay relative to where you start; the package is found from the repo.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m torch.distributed.run "${RDZV[@]}" --nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE" \
  --max-restarts="$MAX_RESTARTS" -m murauer_dist.cli train "$@"

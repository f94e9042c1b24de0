#!/usr/bin/env bash
# Training under the DeepSpeed launcher (pdsh/ssh to the hosts of a hostfile), DeepSpeed engines:
# `murauer-dist train PRESET train.engine=deepspeed [overrides]` in every process.
#
#   launch/deepspeed.sh tiny                                     # this node (2 processes on CPU)
#   HOSTFILE=hosts.txt launch/deepspeed.sh nyu train.deepspeed_config=configs/deepspeed/zero2-bf16.json
#
# Environment (all optional):
#   HOSTFILE     MPI-style hostfile, one `hostname slots=N` per node (default: this node only)
#   NUM_GPUS     processes per node (default: the GPU count; 2 on a machine without GPUs)
#   MASTER_ADDR  address of the first host (default: the launcher picks it)
#   MASTER_PORT  rendezvous port (default: a free port here); also names this run's shared-memory files
#   PY           python of the environment (default: active venv, else the repo's .venv, else python3)
# Variables the remote nodes need go into ./.deepspeed_env (DeepSpeed launcher convention).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ $# -lt 1 ]]; then
  echo "usage: launch/deepspeed.sh PRESET [section.key=value ...]" >&2
  exit 2
fi
PRESET="$1"; shift

NUM_GPUS="${NUM_GPUS:-$(( GPUS > 0 ? GPUS : 2 ))}"
MASTER_PORT="${MASTER_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}"
CORES="$(nproc)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( CORES / NUM_GPUS > 0 ? CORES / NUM_GPUS : 1 ))}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$REPO/.cache/torch_extensions}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
[[ "$GPUS" -gt 0 ]] || export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"

# On CPU, DeepSpeed's shared-memory all-reduce leaves two ~70 MB files per run in /dev/shm, named
# deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>; remove this run's (same uid and port) at exit.
remove_shm_buffers() {
  rm -f /dev/shm/deepspeed_allreduce_buffer_"$(id -u)"_*_"$MASTER_PORT"_*
}
trap remove_shm_buffers EXIT

ARGS=(--num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT")
[[ -n "${HOSTFILE:-}" ]] && ARGS+=(--hostfile "$HOSTFILE")
[[ -n "${MASTER_ADDR:-}" ]] && ARGS+=(--master_addr "$MASTER_ADDR")
# --no_local_rank: the environment carries LOCAL_RANK; the CLI would otherwise see --local_rank=N.
"$PY" -m deepspeed.launcher.runner "${ARGS[@]}" --module --no_local_rank \
  murauer_dist.cli train "$PRESET" train.engine=deepspeed "$@"

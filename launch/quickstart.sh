#!/usr/bin/env bash
# The main job on a fresh machine: install (idempotent), then `murauer-dist demo`:
# procedural dataset -> shards -> synthetic pre-training -> MURAUER -> evaluation table and plots.
# Extra arguments go to `murauer-dist demo` (e.g. --out runs/my-demo).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/launch/setup.sh"
cd "$REPO"
export WANDB_MODE="${WANDB_MODE:-offline}"
exec "$PY" -m murauer_dist.cli demo "$@"

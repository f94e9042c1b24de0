#!/usr/bin/env bash
# Install what the tests need (idempotent) and run the whole default test suite.
# Extra arguments go to pytest, e.g. `./launch/test.sh -m "not slow" -x`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/launch/setup.sh"
cd "$REPO"
export WANDB_MODE=disabled
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$REPO/.cache/torch_extensions}"
exec "$PY" -m pytest "$@"

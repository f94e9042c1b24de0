#!/usr/bin/env bash
# Install murauer_dist and its dependencies; idempotent and fast when nothing changed.
# Uses the active virtual environment, else .venv in the repository (created on first use; on a
# machine with an NVIDIA GPU with --system-site-packages, so that it sees the system's CUDA torch).
# What pip installs comes from murauer_dist/install_plan.py: without a GPU the pins of
# requirements-cpu.txt (CPU torch); with one, the environment's torch is kept and the DALI wheel
# matching its CUDA major version is added.
# Usage: source launch/setup.sh   (exports PY=<python of the environment>)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLANNER="$REPO/murauer_dist/install_plan.py"
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  VENV="$VIRTUAL_ENV"
else
  VENV="$REPO/.venv"
  if [[ ! -x "$VENV/bin/python" ]]; then
    VENV_ARGS="$(python3 "$PLANNER" --venv-args)"     # "--system-site-packages" on a GPU machine
    # shellcheck disable=SC2086
    python3 -m venv $VENV_ARGS "$VENV"
  fi
fi
PY="$VENV/bin/python"
STAMP="$VENV/.murauer_dist-installed"
# The stamp covers the dependency files and the plan for this machine (GPU or not, torch, CUDA major).
want() { { cat "$REPO/setup.cfg" "$REPO/requirements-cpu.txt"; "$PY" "$PLANNER" --repo "$REPO"; } | sha256sum | cut -d' ' -f1; }
WANT="$(want)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "[setup] installing murauer_dist into $VENV"
  DS_BUILD_OPS=0 "$PY" "$PLANNER" --repo "$REPO" --run
  want > "$STAMP"        # the plan after installing: a torch pip just installed decides the DALI wheel
fi
export PY
export PATH="$VENV/bin:$PATH"

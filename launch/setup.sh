#!/usr/bin/env bash
# Install murauer_dist and its dependencies; idempotent and fast when nothing changed.
# Uses the active virtual environment, else creates .venv in the repository.
# On a machine without an NVIDIA GPU, requirements-cpu.txt pins the CPU build of torch.
# Usage: source launch/setup.sh   (exports PY=<python of the environment>)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  VENV="$VIRTUAL_ENV"
else
  VENV="$REPO/.venv"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.murauer_dist-installed"
WANT="$(cat "$REPO/setup.cfg" "$REPO/requirements-cpu.txt" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "[setup] installing murauer_dist into $VENV"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    # GPU machine: keep the environment's CUDA torch; install the rest unpinned-but-compatible.
    DS_BUILD_OPS=0 "$PY" -m pip install -q -e "$REPO[test]"
  else
    DS_BUILD_OPS=0 "$PY" -m pip install -q -r "$REPO/requirements-cpu.txt"
    "$PY" -m pip install -q --no-deps -e "$REPO"
  fi
  echo "$WANT" > "$STAMP"
fi
export PY
export PATH="$VENV/bin:$PATH"

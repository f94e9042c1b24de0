"""Fault injection for the elastic-restart test: a rank dies mid-run, once.

MURAUER_FAULT_AT_STEP=k makes rank MURAUER_FAULT_RANK (default 1) leave with exit code 1 right
after global step k, but only in the first attempt of a torchrun job (TORCHELASTIC_RESTART_COUNT
is 0), so the restarted group runs through. Unset (the normal case), it does nothing.
"""
from __future__ import annotations

import os
import sys


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def maybe_inject_fault(global_step: int) -> None:
    """Call once per training step, after the step (and any checkpoint of that step) is done."""
    fault_step = _env_int("MURAUER_FAULT_AT_STEP", -1)
    if fault_step < 0 or global_step != fault_step:
        return
    if _env_int("TORCHELASTIC_RESTART_COUNT", 0) != 0 or _env_int("RANK", 0) != _env_int("MURAUER_FAULT_RANK", 1):
        return
    print(f"[fault] rank {_env_int('RANK', 0)} exits at step {global_step} (MURAUER_FAULT_AT_STEP)", file=sys.stderr,
          flush=True)
    os._exit(1)  # like a killed process: no cleanup, no collective goodbye

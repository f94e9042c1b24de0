"""How many CPU cores this process may run on: what thread counts are sized from (training, benchmarks)."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask of a container or job), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

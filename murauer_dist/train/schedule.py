"""Learning-rate multiplier of docs/method.md §5.3 and the world-size scaling of the base rate."""
from __future__ import annotations

import math


def lr_multiplier(epoch: int) -> float:
    """lambda(e) for the 1-based epoch e: 0.1089, 0.33, 0.33, then exp(-0.04 e) from e = 4."""
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got {epoch}")
    if epoch < 4:
        return 0.33 ** max(0, 2 - epoch // 2)
    return math.exp(-0.04 * epoch)


def base_lr(cfg, world_size: int) -> float:
    """cfg.optim.lr, scaled by the number of ranks if cfg.optim.lr_scaling asks for it."""
    scaling = cfg.optim.lr_scaling
    if scaling == "linear":
        return cfg.optim.lr * world_size
    if scaling == "sqrt":
        return cfg.optim.lr * math.sqrt(world_size)
    if scaling != "none":
        raise ValueError(f"optim.lr_scaling must be none, linear or sqrt, got {scaling!r}")
    return cfg.optim.lr

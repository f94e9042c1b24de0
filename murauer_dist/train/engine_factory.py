"""build_engines: the engines of one stage (engine.py's protocol), plain/DDP or DeepSpeed."""
from __future__ import annotations

import torch
from torch import nn

from murauer_dist.methods import leaves_parameters_unused
from murauer_dist.train.deepspeed_engine import build_deepspeed_engines
from murauer_dist.train.engine import DdpEngine, PlainEngine, make_adam
from murauer_dist.train.schedule import base_lr


def build_engines(cfg, model: nn.Module, disc: nn.Module, rank: int, world_size: int,
                  device: torch.device | str, stage: str = "main") -> dict:
    """{"model": engine, "disc": engine} with fresh optimizers for `stage` (call once per stage).

    The modules must already be on `device`. The deepspeed package is imported only when asked for
    (by DeepSpeedEngine).
    """
    device = torch.device(device)
    lr = base_lr(cfg, world_size)
    if cfg.train.engine == "deepspeed":
        return build_deepspeed_engines(cfg, model, disc, rank, world_size, device, lr=lr)
    if cfg.train.engine != "ddp":
        raise ValueError(f"train.engine must be 'ddp' or 'deepspeed', got {cfg.train.engine!r}")
    # D's parameters all get a gradient whenever it trains; the model's depend on the stage's method.
    unused = {"model": leaves_parameters_unused(cfg.train.method, stage, cfg.model.released_affine_blocks),
              "disc": False}
    engines = {}
    for name, module in (("model", model), ("disc", disc)):
        optimizer = make_adam(cfg, module, lr)
        engines[name] = (DdpEngine(module, optimizer, lr, device, find_unused_parameters=unused[name])
                         if world_size > 1 else PlainEngine(module, optimizer, lr))
    return engines

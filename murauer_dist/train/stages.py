"""The stages a config trains and how long each is, shared by the loop and the run-config check.

Stage 1 ("pretrain") runs only when train.pretrain_epochs > 0; stage 2 ("main") always runs.
"""
from __future__ import annotations


def stage_plan(cfg) -> list[str]:
    return (["pretrain"] if cfg.train.pretrain_epochs > 0 else []) + ["main"]


def stage_length(cfg, stage: str) -> tuple[int, int, int]:
    """(epochs, iterations per epoch, step limit) of a stage; max_steps caps smoke runs."""
    epochs = cfg.train.pretrain_epochs if stage == "pretrain" else cfg.train.epochs
    iters = cfg.train.iters_per_epoch
    limit = epochs * iters
    if cfg.train.max_steps > 0:
        limit = min(limit, cfg.train.max_steps)
    return epochs, iters, limit


def planned_steps(cfg, stage: str) -> int:
    """Steps `stage` trains under `cfg` (0 when the plan skips it)."""
    return stage_length(cfg, stage)[2] if stage in stage_plan(cfg) else 0


def stage_can_continue(cfg, stage: str, state: dict) -> bool:
    """A checkpoint of `stage` leaves steps to train under `cfg` (a finished stage made longer does)."""
    epochs, _, limit = stage_length(cfg, stage)
    return stage in stage_plan(cfg) and state["epoch"] <= epochs and state["stage_step"] < limit

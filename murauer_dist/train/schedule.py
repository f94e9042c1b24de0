"""Learning-rate multiplier of docs/method.md §5.3 and the world-size scaling of the base rate.

Three schedules (config optim.schedule):
  "epoch"     the paper's lambda(e) for the 1-based epoch e of the stage, as the released code applies
              it; a stage shorter than the paper's ends far from annealed (10 epochs end at 0.67x);
  "progress"  the paper's curve over the stage's progress: the step s of a stage of T steps (0-based,
              T = epochs x iterations per epoch) gets lambda(e') with the paper epoch
              e' = floor(s P / T) + 1, P = the paper's length of that stage (150 epochs for stage 1,
              120 for stage 2). So any stage length warms up over its first 3/P and anneals to the
              paper's last value (stage 2: exp(-4.8) = 0.0082x, about 1 % of the peak exp(-0.16));
              a stage of the paper's length gets exactly the "epoch" values.
  "wsd"       warm-up, stable, decay: the paper's warm-up over the same first 3/P of the stage, then the
              paper's peak lambda(4) = exp(-0.16) held, and the paper's whole decay (exp(-0.16) down to
              its last value exp(-0.04 P)) squeezed, still exponential, into the last
              optim.anneal_fraction of the stage. Same start and end as "progress", but a short stage
              spends most of its steps at the peak instead of about a fifth of the peak on average.
"""
from __future__ import annotations

import math

SCHEDULES = ("epoch", "progress", "wsd")
PAPER_EPOCHS = {"pretrain": 150, "main": 120}       # the paper's stage lengths (docs/method.md §5.1, §5.2)


def lr_multiplier(epoch: int) -> float:
    """lambda(e) for the 1-based epoch e: 0.1089, 0.33, 0.33, then exp(-0.04 e) from e = 4."""
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got {epoch}")
    if epoch < 4:
        return 0.33 ** max(0, 2 - epoch // 2)
    return math.exp(-0.04 * epoch)


def progress_epoch(stage_step: int, stage_steps: int, paper_epochs: int = 120) -> int:
    """The paper epoch (1-based) that the 0-based step `stage_step` of a `stage_steps`-step stage maps to:
    floor(stage_step x paper_epochs / stage_steps) + 1, in integers (no rounding at epoch borders),
    capped at paper_epochs (a run made longer than planned keeps the last value)."""
    if stage_steps < 1 or stage_step < 0:
        raise ValueError(f"need stage_steps >= 1 and stage_step >= 0, got {stage_step} of {stage_steps}")
    return min(paper_epochs, stage_step * paper_epochs // stage_steps + 1)


def progress_multiplier(fraction: float, paper_epochs: int = 120) -> float:
    """lambda at `fraction` (in [0, 1]) of a stage under the "progress" schedule."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress fraction must be in [0, 1], got {fraction}")
    return lr_multiplier(min(paper_epochs, math.floor(fraction * paper_epochs) + 1))


def wsd_multiplier(stage_step: int, stage_steps: int, paper_epochs: int = 120,
                   anneal_fraction: float = 0.25) -> float:
    """lambda of the 0-based step `stage_step` of a `stage_steps`-step stage under the "wsd" schedule."""
    if not 0.0 < anneal_fraction <= 1.0:
        raise ValueError(f"optim.anneal_fraction must be in (0, 1], got {anneal_fraction}")
    warmup_epoch = progress_epoch(stage_step, stage_steps, paper_epochs)
    if warmup_epoch < 4:                                  # the paper's warm-up: 0.1089, 0.33, 0.33
        return lr_multiplier(warmup_epoch)
    peak, last = math.log(lr_multiplier(4)), math.log(lr_multiplier(paper_epochs))
    decay_start = (1.0 - anneal_fraction) * stage_steps
    if stage_step < decay_start:
        return lr_multiplier(4)
    # the decay's last step reaches lambda(P) exactly, as "progress" does
    fraction = min(1.0, (stage_step - decay_start + 1) / max(1.0, stage_steps - decay_start))
    return math.exp(peak + (last - peak) * fraction)


def stage_multiplier(schedule: str, stage: str, epoch: int, stage_step: int, stage_steps: int,
                     anneal_fraction: float = 0.25) -> float:
    """The multiplier of the next step of `stage`: its 1-based epoch, its 0-based step within the stage
    and the stage's planned number of steps (epochs x iterations; a train.max_steps cap does not
    change it, so a capped smoke run trains the first steps of the full run's sequence).
    `anneal_fraction` (optim.anneal_fraction) is read by "wsd" only."""
    if schedule == "epoch":
        return lr_multiplier(epoch)
    if schedule == "progress":
        return lr_multiplier(progress_epoch(stage_step, stage_steps, PAPER_EPOCHS[stage]))
    if schedule == "wsd":
        return wsd_multiplier(stage_step, stage_steps, PAPER_EPOCHS[stage], anneal_fraction)
    raise ValueError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


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

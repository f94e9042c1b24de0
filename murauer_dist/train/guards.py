"""The non-finite guards: a run stops with an error that says what to change, instead of training
on NaN/inf losses or handing on a model whose validation error is NaN/inf."""
from __future__ import annotations

import math

from murauer_dist.errors import UserError
from murauer_dist.train.run import Run


class NonFiniteLossError(UserError, RuntimeError):
    """Too many consecutive steps with a NaN/inf loss."""


class NonFiniteValidationError(UserError, RuntimeError):
    """A validation pass over real frames gave a NaN/inf joint error."""


# What the non-finite guards suggest (loss and validation alike).
NONFINITE_HINT = ("lower optim.lr, use train.precision=fp32, or check the data for NaN/inf values "
                  "(a changed optim.lr on this train.out needs train.allow_config_change=true)")


def check_nonfinite(run: Run, result: dict, stage: str) -> None:
    counters = run.counters
    if result["skipped"]:
        counters.skipped_total += 1
        counters.skipped_in_a_row += 1
    else:
        counters.skipped_in_a_row = 0
    limit = run.cfg.train.max_nonfinite_in_a_row
    if counters.skipped_in_a_row > limit:
        terms = {k: float(v) for k, v in result.items() if k.startswith("L_")}
        raise NonFiniteLossError(
            f"{counters.skipped_in_a_row} steps in a row had a non-finite loss (stage {stage}, step "
            f"{counters.global_step}; last terms {terms}); more than train.max_nonfinite_in_a_row={limit}. "
            f"The model has not changed since the last finite step: {NONFINITE_HINT}.")


def check_validation(run: Run, result: dict, stage: str, epoch: int) -> None:
    """Raise NonFiniteValidationError when validation over real frames gave a NaN/inf mean error."""
    error = result["val_mean_error_mm"]
    if result["val_frames"] > 0 and not math.isfinite(error):
        # Same for both stages, and before the stage's final checkpoint: a broken model is never handed on.
        raise NonFiniteValidationError(
            f"validation after epoch {epoch} of stage {stage} (step {run.counters.global_step}) gave a non-finite "
            f"mean joint error ({error}) on {result['val_frames']:.0f} val frames: the weights or BatchNorm "
            f"statistics hold NaN/inf. No final checkpoint was written for stage {stage}: {NONFINITE_HINT}.")

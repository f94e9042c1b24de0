"""The label-efficiency experiment's command-line options, parsed into checked values: comma lists of
methods, n values and seeds, the label seeds paired with the training seeds, and --select's loss weights.
Each bad value stops with a one-line ExperimentError naming the option."""
from __future__ import annotations

import math

from murauer_dist.config import LossConfig
from murauer_dist.errors import UserError
from murauer_dist.methods import METHODS as REGISTRY

WEIGHT_KEYS = tuple(LossConfig.__dataclass_fields__)            # beta, lambda_c, lambda_g, lambda_m


class ExperimentError(UserError):
    """Experiment options that cannot be run, or a run directory that disagrees with its cell."""


def _items(value, what: str) -> list[str]:
    """'1,2,3', 1, (1, 2, 3) or ['a', 'b'] (the command line gives any of these) as a list of strings."""
    if isinstance(value, (list, tuple)):
        items = [str(item).strip() for item in value]
    else:
        items = [item.strip() for item in str(value).split(",")]
    items = [item for item in items if item]
    if not items:
        raise ExperimentError(f"experiment: {what} is empty; give a comma-separated list")
    return items


def parse_ints(value, what: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(item) for item in _items(value, what))
    except ValueError:
        raise ExperimentError(f"experiment: {what} must be comma-separated whole numbers, got {value!r}") from None
    if any(number < 0 for number in numbers) or len(set(numbers)) != len(numbers):
        raise ExperimentError(f"experiment: {what} must be distinct numbers >= 0, got {value!r}")
    return numbers


def parse_label_seeds(value, seeds: tuple[int, ...]) -> tuple[int, ...] | None:
    """--label-seeds: one label seed per training seed (paired by position); "" or None: each training
    seed is its own label seed; "fixed": None, every cell uses the config's data.label_seed."""
    if value is None or str(value).strip() in ("", "()"):
        return tuple(seeds)
    if str(value).strip() == "fixed":
        return None
    label_seeds = parse_ints(value, "--label-seeds")
    if len(label_seeds) != len(seeds):
        raise ExperimentError(f"experiment: --label-seeds has {len(label_seeds)} value(s) and --seeds "
                              f"{len(seeds)}; give one label seed per training seed (paired by position), "
                              f"or leave --label-seeds out to use each training seed as its label seed")
    return label_seeds


def parse_methods(value) -> tuple[str, ...]:
    methods = tuple(_items(value, "--methods"))
    unknown = [name for name in methods if name not in REGISTRY]
    if unknown:
        raise ExperimentError(f"experiment: unknown method(s) {', '.join(unknown)} in --methods; known: "
                              f"{', '.join(REGISTRY)}")
    if len(set(methods)) != len(methods):
        raise ExperimentError(f"experiment: --methods names a method twice: {value!r}")
    return methods


def parse_select(value) -> dict[str, tuple[float, ...]]:
    """'lambda_g=1e-4,1e-3;lambda_m=1e-5,1e-4' -> {"lambda_g": (1e-4, 1e-3), ...} (loss weights only)."""
    if value is None or value == "" or value == ():
        return {}
    text = ";".join(str(part) for part in value) if isinstance(value, (list, tuple)) else str(value)
    select: dict[str, tuple[float, ...]] = {}
    for part in filter(None, (piece.strip() for piece in text.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip().removeprefix("loss.")
        if not sep or key not in WEIGHT_KEYS:
            raise ExperimentError(f"experiment: --select {part!r} must look like KEY=V1,V2 with KEY one of the loss "
                                  f"weights {', '.join(WEIGHT_KEYS)} (several keys: separate them with ';')")
        try:
            numbers = tuple(dict.fromkeys(float(item) for item in _items(values, f"--select {key}")))
        except ValueError:
            raise ExperimentError(f"experiment: --select {key}: {values!r} are not numbers") from None
        if any(not math.isfinite(number) or number < 0 for number in numbers):
            raise ExperimentError(f"experiment: --select {key}: weights must be finite and >= 0, got {values!r}")
        if key in select:
            raise ExperimentError(f"experiment: --select names {key} twice")
        select[key] = numbers
    return select

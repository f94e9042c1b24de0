"""A wandb sweep file, read and checked completely before any run starts.

The file is wandb's own format (https://docs.wandb.ai/guides/sweeps/define-sweep-configuration):
`method`, `metric` {name, goal}, `parameters` keyed by dotted config keys (`loss.lambda_c`), and
optionally `name`, `run_cap`, `program`/`command` (used by `wandb agent`, ignored locally).
Every parameter name and every value it can take is checked against the config tree with
`load_config(preset, ["key=value"])`, so a typo fails here and not in run 7 of 20.
A sweep chooses on the validation split: `metric.name` must name a validation metric (a name with a
`val` part, e.g. main/val_mean_error_mm, and no `test` in it); the test split is never used for a choice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from murauer_dist.config import ConfigError, load_config
from murauer_dist.paths import what_is

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
TOP_LEVEL_KEYS = ("name", "description", "method", "metric", "parameters", "run_cap", "program",
                  "command", "early_terminate", "project", "entity")
# wandb's distribution names and the keys each one needs.
DISTRIBUTIONS = {
    "constant": ("value",), "categorical": ("values",),
    "int_uniform": ("min", "max"), "uniform": ("min", "max"), "q_uniform": ("min", "max"),
    "log_uniform": ("min", "max"), "log_uniform_values": ("min", "max"),
    "q_log_uniform": ("min", "max"), "q_log_uniform_values": ("min", "max"),
    "inv_log_uniform": ("min", "max"), "inv_log_uniform_values": ("min", "max"),
    "normal": (), "q_normal": (), "log_normal": (), "q_log_normal": (),
    "beta": (), "q_beta": (),
}
VALIDATION_PARTS = ("val", "validation")       # a part of a metric name (split on / _ - .) that names the split
PARAMETER_KEYS = ("value", "values", "distribution", "min", "max", "mu", "sigma", "q", "a", "b", "probabilities")


@dataclass
class SweepSpec:
    path: Path
    name: str
    method: str
    metric: str
    goal: str
    parameters: dict[str, dict]   # dotted config key -> wandb parameter spec (distribution filled in)
    run_cap: int
    raw: dict                      # the file as read (what the bayes engine gets)


def infer_distribution(spec: dict) -> str:
    """wandb's rule when `distribution` is absent."""
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int) \
            and not isinstance(spec.get("min"), bool):
        return "int_uniform"
    return "uniform"


def _parameter_problems(name: str, spec) -> list[str]:
    if not isinstance(spec, dict):
        return [f"parameter '{name}': expected a mapping like {{values: [...]}}, got {spec!r}"]
    if "parameters" in spec:
        return [f"parameter '{name}': nested parameters are not supported; use dotted names (section.key)"]
    unknown = sorted(set(spec) - set(PARAMETER_KEYS))
    if unknown:
        return [f"parameter '{name}': unknown field(s) {', '.join(unknown)}; expected {', '.join(PARAMETER_KEYS)}"]
    distribution = spec.get("distribution") or infer_distribution(spec)
    if distribution not in DISTRIBUTIONS:
        return [f"parameter '{name}': unknown distribution '{distribution}'; "
                f"expected one of {', '.join(DISTRIBUTIONS)}"]
    missing = [key for key in DISTRIBUTIONS[distribution] if key not in spec]
    if missing:
        return [f"parameter '{name}': distribution '{distribution}' needs {', '.join(missing)}"]
    for key in ("min", "max", "mu", "sigma", "q", "a", "b"):
        if key in spec and (isinstance(spec[key], bool) or not isinstance(spec[key], (int, float))):
            return [f"parameter '{name}': '{key}' is {spec[key]!r}, not a number "
                    "(YAML reads 1e-5 as text; write 1.0e-5)"]
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        return [f"parameter '{name}': min {spec['min']} is larger than max {spec['max']}"]
    if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
        return [f"parameter '{name}': 'values' must be a non-empty list"]
    return []


def candidate_values(spec: dict) -> list:
    """Values that stand for the parameter's range when checking it against the config."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec[key] for key in ("min", "max") if key in spec and spec["distribution"] in
            ("int_uniform", "uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values")]


def _config_problems(name: str, spec: dict, preset: str, overrides: tuple[str, ...]) -> list[str]:
    values = candidate_values(spec) or [spec.get("mu", 1.0)]
    for value in values:
        try:
            load_config(preset or None, [*overrides, f"{name}={format_value(value)}"])
        except ConfigError as err:
            return [f"parameter '{name}': {err}"]
    return []


def format_value(value) -> str:
    """A value as a `key=value` override string (lists in YAML flow style)."""
    if isinstance(value, (list, tuple)):
        return yaml.safe_dump(list(value), default_flow_style=True).strip()
    return str(value)


def is_validation_metric(name: str) -> bool:
    """Whether a logged metric name is measured on the validation split: one of its parts (training
    logs STAGE/val_mean_error_mm) is "val", and it says nothing of the test split."""
    lowered = str(name).lower()
    parts = re.split(r"[^a-z0-9]+", lowered)
    return "test" not in lowered and any(part in VALIDATION_PARTS for part in parts)


def _metric_problems(metric: dict) -> list[str]:
    problems, name = [], metric.get("name")
    if not is_validation_metric(name):
        problems.append(f"'metric.name' is {name!r}, not a validation metric: a sweep chooses on the validation "
                        f"split, never on the test split; name one, e.g. main/val_mean_error_mm")
    if metric.get("goal", "minimize") not in GOALS:
        problems.append(f"'metric.goal' is {metric.get('goal')!r}; expected one of {', '.join(GOALS)}")
    return problems


def _header_problems(raw: dict) -> list[str]:
    problems = []
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        problems.append(f"unknown top-level key(s) {', '.join(unknown)}; expected {', '.join(TOP_LEVEL_KEYS)}")
    if raw.get("method") not in METHODS:
        problems.append(f"'method' is {raw.get('method')!r}; expected one of {', '.join(METHODS)}")
    metric = raw.get("metric")
    if not isinstance(metric, dict) or not metric.get("name"):
        problems.append("'metric' must be a mapping with 'name' (e.g. main/val_mean_error_mm) and 'goal'")
    else:
        problems += _metric_problems(metric)
    if not isinstance(raw.get("parameters"), dict) or not raw["parameters"]:
        problems.append("'parameters' must be a non-empty mapping of dotted config keys")
    run_cap = raw.get("run_cap", 0)
    if not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 0:
        problems.append(f"'run_cap' is {run_cap!r}; expected a whole number >= 0")
    return problems


def load_sweep(path: str | Path, preset: str = "", overrides: tuple[str, ...] = ()) -> SweepSpec:
    """Read and check a sweep file; all problems are reported together as one ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} {what_is(path)}; give a sweep YAML file (e.g. "
                          f"configs/sweeps/loss_weights.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep file {path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping (method, metric, parameters)")
    problems = _header_problems(raw)
    parameters = {}
    for name, spec in (raw.get("parameters") or {}).items():
        found = _parameter_problems(str(name), spec)
        if not found:
            spec = {**spec, "distribution": spec.get("distribution") or infer_distribution(spec)}
            found = _config_problems(str(name), spec, preset, tuple(overrides))
        problems += found
        parameters[str(name)] = spec
    if problems:
        raise ConfigError(f"sweep file {path}:\n  " + "\n  ".join(problems))
    return SweepSpec(path=path, name=str(raw.get("name") or path.stem), method=raw["method"],
                     metric=raw["metric"]["name"], goal=raw["metric"].get("goal", "minimize"),
                     parameters=parameters, run_cap=int(raw.get("run_cap", 0)), raw=raw)

"""Which runs a sweep makes: grid (every combination), random (seeded draws), bayes (wandb's engine).

Grid and random are computed here from the sweep file, in the same way as wandb's engine (values in
file order; random draws are quantiles u ~ U(0, 1) of the same scipy distributions), so the local
runner needs no extra package. Bayes needs the results of earlier runs to pick the next one; it uses
the `sweeps` package (pip install 'murauer_dist[sweeps]') when it is installed.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats

from murauer_dist.config import ConfigError
from murauer_dist.sweep.spec import SweepSpec


def _q(value, q):
    rounded = np.round(value / q) * q
    return int(rounded) if isinstance(q, int) else float(rounded)


def _categorical(spec: dict, u: float):
    values = spec["values"]
    weights = spec.get("probabilities")
    if weights is None:
        return values[int(stats.randint.ppf(u, 0, len(values)))]
    return values[min(int(np.searchsorted(np.cumsum(weights) / np.sum(weights), u, side="right")), len(values) - 1)]


def _log_uniform(low: float, high: float, u: float) -> float:
    return float(np.exp(low + u * (high - low)))


def sample_value(spec: dict, u: float):
    """The value at quantile u of one parameter's distribution (wandb's definitions)."""
    kind, q = spec["distribution"], spec.get("q", 1)
    mu, sigma = spec.get("mu", 0.0), spec.get("sigma", 1.0)
    low, high = spec.get("min"), spec.get("max")
    draw = {
        "constant": lambda: spec["value"],
        "categorical": lambda: _categorical(spec, u),
        "int_uniform": lambda: int(stats.randint.ppf(u, low, high + 1)),
        "uniform": lambda: float(low + u * (high - low)),
        "q_uniform": lambda: _q(low + u * (high - low), q),
        "log_uniform": lambda: _log_uniform(low, high, u),
        "log_uniform_values": lambda: _log_uniform(math.log(low), math.log(high), u),
        "q_log_uniform": lambda: _q(_log_uniform(low, high, u), q),
        "q_log_uniform_values": lambda: _q(_log_uniform(math.log(low), math.log(high), u), q),
        "inv_log_uniform": lambda: 1.0 / _log_uniform(low, high, 1.0 - u),
        "inv_log_uniform_values": lambda: 1.0 / _log_uniform(-math.log(high), -math.log(low), 1.0 - u),
        "normal": lambda: float(stats.norm.ppf(u, loc=mu, scale=sigma)),
        "q_normal": lambda: _q(stats.norm.ppf(u, loc=mu, scale=sigma), q),
        "log_normal": lambda: float(stats.lognorm.ppf(u, s=sigma, scale=np.exp(mu))),
        "q_log_normal": lambda: _q(stats.lognorm.ppf(u, s=sigma, scale=np.exp(mu)), q),
        "beta": lambda: float(stats.beta.ppf(u, a=spec.get("a", 1.0), b=spec.get("b", 1.0))),
        "q_beta": lambda: _q(stats.beta.ppf(u, a=spec.get("a", 1.0), b=spec.get("b", 1.0)), q),
    }
    return draw[kind]()


def grid_values(name: str, spec: dict) -> list:
    kind = spec["distribution"]
    if kind == "constant":
        return [spec["value"]]
    if kind == "categorical":
        return list(spec["values"])
    if kind == "int_uniform":
        return list(range(spec["min"], spec["max"] + 1))
    if kind == "q_uniform":       # wandb's grid: numpy.arange(min, max, q), max excluded
        return np.arange(spec["min"], spec["max"], spec.get("q", 1)).tolist()
    raise ConfigError(f"parameter '{name}': grid search needs 'values' (or an int_uniform/q_uniform range), "
                      f"not the continuous distribution '{kind}'")


def grid_runs(spec: SweepSpec) -> list[dict]:
    """Every combination in wandb's order: parameter names sorted, the first one varying slowest."""
    names = sorted(spec.parameters)
    axes = [grid_values(name, spec.parameters[name]) for name in names]
    combinations = [dict(zip(names, combination)) for combination in itertools.product(*axes)]
    return [{name: combination[name] for name in spec.parameters} for combination in combinations]


def random_runs(spec: SweepSpec, count: int, seed: int) -> list[dict]:
    """`count` independent draws; the same seed gives the same runs (so a sweep can resume)."""
    rng = np.random.default_rng(seed)
    return [{name: sample_value(param, float(rng.uniform())) for name, param in spec.parameters.items()}
            for _ in range(count)]


def run_limit(spec: SweepSpec, max_runs: int) -> int:
    """--max-runs wins, else the file's run_cap; 0 means no limit (grid only)."""
    return max_runs if max_runs > 0 else spec.run_cap


def planned_runs(spec: SweepSpec, max_runs: int = 0, seed: int = 0) -> list[dict] | None:
    """The full list of runs for grid/random; None for bayes (it is chosen run by run)."""
    limit = run_limit(spec, max_runs)
    if spec.method == "grid":
        runs = grid_runs(spec)
        return runs[:limit] if limit else runs
    if spec.method == "random":
        if not limit:
            raise ConfigError(f"sweep file {spec.path}: random search never ends by itself; "
                              "give --max-runs K or 'run_cap: K' in the file")
        return random_runs(spec, limit, seed)
    if not limit:
        raise ConfigError(f"sweep file {spec.path}: bayes search never ends by itself; "
                          "give --max-runs K or 'run_cap: K' in the file")
    bayes_engine()
    return None


def bayes_engine():
    """wandb's sweep engine, or a ConfigError saying how to install it."""
    try:
        import sweeps  # lazy: optional: sweeps (wandb's sweep engine, an extra)
    except ImportError:
        raise ConfigError("method 'bayes' needs wandb's sweep engine: pip install 'murauer_dist[sweeps]' "
                          "(or use method grid/random)") from None
    return sweeps


def bayes_next(spec: SweepSpec, history: list[dict]) -> dict:
    """The next parameters from wandb's Bayesian engine, given finished runs
    (each {"run", "params", "status", "best"})."""
    sweeps = bayes_engine()
    runs = [sweeps.SweepRun(name=item["run"], config={k: {"value": v} for k, v in item["params"].items()},
                            state=sweeps.RunState.finished if item["status"] == "finished" else sweeps.RunState.failed,
                            summary_metrics={} if item.get("best") is None else {spec.metric: item["best"]})
            for item in history]
    proposal = sweeps.next_run(spec.raw, runs, validate=True)
    values = {name: proposal.config[name]["value"] for name in spec.parameters}
    return {name: value.item() if hasattr(value, "item") else value for name, value in values.items()}

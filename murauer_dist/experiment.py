"""`murauer-dist experiment label-efficiency`: MURAUER's gain over the paper's baselines vs labeled frames.

The protocol (README "Label efficiency on the embedded dataset"; docs/method.md §6.2):
- cells = methods x n x training seeds: synthetic only (no labeled real data: one cell per seed,
  shown at every n), the paper's "Real & Synth" baseline, its two ablations (distribution matching
  only, view prediction only; by default at n = 100 only) and MURAUER, each for every training seed
  (train.seed: stream order and augmentation draws);
- the same data for every cell (one dataset, one set of shards, the labeled subset of data.label_seed)
  and the same stage 1: OUT/stage1 trains it once, every cell starts stage 2 from its
  final-pretrain.pt;
- every run is an ordinary `murauer-dist train` in a child process, then `evaluate` on the real test
  frames and on their synthetic twins (real minus twin error: the domain gap a model has left);
  finished runs and evaluations are skipped when the experiment is started again;
- loss weights may be chosen per method and n from a small list (--select) by the mean validation
  error over the seeds; the test split is never used for a choice, and the values tried are recorded;
- OUT/results.json (every cell, mean and sample standard deviation over seeds, the choices, the
  targets), OUT/results.md (the tables) and OUT/label_efficiency.png (error vs n with error bars).
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from murauer_dist import workflow
from murauer_dist.atomic import atomic_write_text, save_figure
from murauer_dist.config import LossConfig, config_changes, load_config, may_change_on_resume, public_dict
from murauer_dist.errors import UserError
from murauer_dist.eval.evaluate import eval_dir
from murauer_dist.memory import keep_freed_memory
from murauer_dist.methods import METHODS as REGISTRY

DEFAULT_METHODS = ("synth_only", "real_synth", "dm_only", "view_only", "murauer")   # table and legend order
ABLATIONS = ("dm_only", "view_only")
DEFAULT_NS = (10, 100, 1000)
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_ABLATION_NS = (100,)
STAGE1_DIR = "stage1"
# The targets (README "Label efficiency on the embedded dataset"): the paper's size of effect at n = 100
# (12.17 vs 15.74 mm, 0.77x) and its order of methods (docs/method.md §6.2).
TARGET_N = 100
TARGET_RATIO = 0.8
TARGET_STD_FACTOR = 2.0
LABELS = {name: method.label for name, method in REGISTRY.items()}
WEIGHT_KEYS = tuple(LossConfig.__dataclass_fields__)            # beta, lambda_c, lambda_g, lambda_m


class ExperimentError(UserError):
    """Experiment options that cannot be run, or a run directory that disagrees with its cell."""


# ---- options -------------------------------------------------------------------------------------

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


# ---- the cells -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One stage-2 training run: a method at n labeled frames (None: it uses none) with one seed and,
    where --select varies them, one candidate's loss weights."""
    method: str
    n: int | None
    seed: int
    weights: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        parts = [self.method, *([f"n{self.n}"] if self.n is not None else []), f"s{self.seed}"]
        return "-".join(parts + [f"{key}={value:g}" for key, value in self.weights])

    @property
    def group(self) -> tuple[str, int | None]:
        return self.method, self.n

    def overrides(self, stage1: Path) -> list[str]:
        """Config overrides of this cell on top of the preset's and the experiment's."""
        items = [f"train.method={self.method}", f"train.seed={self.seed}", "train.pretrain_epochs=0",
                 f"train.init_checkpoint={stage1}"]
        if self.n is not None:
            items.append(f"data.n_labeled={self.n}")
        return items + [f"loss.{key}={value!r}" for key, value in self.weights]


def uses_labels(method: str) -> bool:
    """Whether a method trains on labeled real frames (else its model is the same at every n)."""
    return any(stream in ("pairs", "views") for stream in REGISTRY[method].streams)


def method_weights(method: str) -> tuple[str, ...]:
    """The cfg.loss fields that weigh a method's terms."""
    return tuple(weight for weight in REGISTRY[method].terms.values() if isinstance(weight, str))


def weight_candidates(method: str, select: dict) -> list[tuple[tuple[str, float], ...]]:
    """Every combination of the --select values of the weights `method` uses ([()] when none)."""
    keys = [key for key in select if key in method_weights(method)]
    return [tuple(zip(keys, values)) for values in itertools.product(*(select[key] for key in keys))]


def plan_cells(methods, ns, seeds, ablation_ns=DEFAULT_ABLATION_NS, select=None) -> list[Cell]:
    """Every stage-2 run of the experiment, in training order (method, n, weights, seed)."""
    select = select or {}
    missing = [n for n in ablation_ns if n not in ns]
    if missing and any(method in ABLATIONS for method in methods):
        raise ExperimentError(f"experiment: --ablation-ns {', '.join(map(str, missing))} not in --ns "
                              f"{', '.join(map(str, ns))}; the ablations run at a subset of the n values")
    unused = [key for key in select if not any(key in method_weights(method) for method in methods)]
    if unused:
        raise ExperimentError(f"experiment: --select {', '.join(unused)}: no method of --methods uses that weight")
    cells = []
    for method in methods:
        method_ns = ([None] if not uses_labels(method) else
                     [n for n in ns if n in ablation_ns] if method in ABLATIONS else list(ns))
        for n in method_ns:
            for weights in weight_candidates(method, select):
                cells.extend(Cell(method, n, seed, weights) for seed in seeds)
    return cells


# ---- running ---------------------------------------------------------------------------------------

def _check_finished_run(run_dir: Path, preset: str, overrides: list[str]) -> None:
    """A finished run is reused only if it was trained with this cell's config (else a one-line error)."""
    from murauer_dist.train.checkpoint import read_run_config
    stored = read_run_config(run_dir)
    if stored is None:
        return
    wanted = public_dict(load_config(preset, [*overrides, f"train.out={run_dir}"]))
    changed = {key: values for key, values in config_changes(stored, wanted).items() if not may_change_on_resume(key)}
    if changed:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ExperimentError(f"{run_dir} holds a finished run with another config ({listed}); use another --out "
                              f"for other settings, or delete {run_dir} to train it again")


def _train_once(preset: str, overrides: list[str], run_dir: Path) -> None:
    if (run_dir / "checkpoints" / "final-main.pt").is_file():
        _check_finished_run(run_dir, preset, overrides)
        print(f"[experiment] {run_dir} already trained")
        return
    workflow.run_training(preset, [*overrides, f"train.out={run_dir}"], log_file=run_dir / "train.log")


def _metrics_of(run_dir: Path, domain: str = "real") -> dict:
    done = eval_dir(run_dir, domain) / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    return workflow.evaluate_run(run_dir, domain=domain)


def _evaluated(run_dir: Path) -> dict:
    return {domain: _metrics_of(run_dir, domain) for domain in ("real", "synth")}


def validation_error(run_dir: Path) -> float:
    """The final model's mean joint error on the validation split (the last one the run logged)."""
    from murauer_dist.tracking.run_logger import read_metrics
    values = [record["main/val_mean_error_mm"] for record in read_metrics(run_dir)
              if "main/val_mean_error_mm" in record]
    value = float(values[-1]) if values else float("nan")
    if not math.isfinite(value):
        raise ExperimentError(f"{run_dir}: no finite validation error in metrics.jsonl (needed by --select); "
                              f"validation needs data.val_fraction > 0")
    return value


def cell_record(cell: Cell, metrics: dict, weights: dict) -> dict:
    """One evaluated cell as results.json lists it."""
    real, synth = metrics["real"], metrics["synth"]
    return {"method": cell.method, "n": cell.n, "seed": cell.seed, "run": cell.name, "weights": weights,
            "real": real["mean_error_mm"], "synth": synth["mean_error_mm"],
            "gap": real["mean_error_mm"] - synth["mean_error_mm"],
            "subject1": real.get("subject1_mean_error_mm"), "subject2": real.get("subject2_mean_error_mm")}


def choose(cells: list[Cell], val_error) -> tuple[list[Cell], list[dict]]:
    """The cells whose results are reported, and one record per (method, n) of the weights tried.

    Where a (method, n) has several weight candidates, the one with the lowest mean validation error
    over its seeds is chosen (the first listed on a tie); val_error(cell) -> mm. The test split plays
    no part. With one candidate nothing is chosen and no validation error is needed.
    """
    groups: dict = {}
    for cell in cells:
        groups.setdefault(cell.group, {}).setdefault(cell.weights, []).append(cell)
    chosen, records = [], []
    for (method, n), candidates in groups.items():
        if len(candidates) == 1:
            (weights, members), = candidates.items()
            chosen += members
            records.append({"method": method, "n": n, "tried": [{"weights": dict(weights)}], "chosen": dict(weights),
                            "by": "only candidate"})
            continue
        tried = []
        for weights, members in candidates.items():
            errors = [val_error(cell) for cell in members]
            tried.append({"weights": dict(weights), "val_mean_error_mm": statistics.fmean(errors),
                          "val_per_seed": errors})
        best = min(range(len(tried)), key=lambda index: tried[index]["val_mean_error_mm"])
        chosen += list(candidates.values())[best]
        records.append({"method": method, "n": n, "tried": tried, "chosen": tried[best]["weights"],
                        "by": "lowest mean validation error"})
    return chosen, records


# ---- aggregation and targets -------------------------------------------------------------------------

QUANTITIES = ("real", "synth", "gap", "subject1", "subject2")


def _stats(values: list[float]) -> dict:
    """Mean and sample standard deviation (None with one value) over the seeds."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "seeds": len(values), "values": values}


def summarize(records: list[dict], ns) -> dict:
    """{method: {"n": {quantity: stats or None}}}; a method without labeled frames fills every n."""
    summary: dict = {}
    for record in records:
        for n in ([record["n"]] if record["n"] is not None else ns):
            cell = summary.setdefault(record["method"], {}).setdefault(str(n), {q: [] for q in QUANTITIES})
            for quantity in QUANTITIES:
                if record[quantity] is not None:
                    cell[quantity].append(float(record[quantity]))
    return {method: {n: {q: (_stats(values) if values else None) for q, values in cell.items()}
                     for n, cell in by_n.items()}
            for method, by_n in summary.items()}


def _mean(summary: dict, method: str, n: int, quantity: str = "real") -> float | None:
    stats = summary.get(method, {}).get(str(n), {}).get(quantity)
    return stats["mean"] if stats else None


def _std(summary: dict, method: str, n: int) -> float | None:
    stats = summary.get(method, {}).get(str(n), {}).get("real")
    return stats["std"] if stats else None


def _order_holds(summary: dict, n: int, chain: list[tuple[str, ...]]) -> tuple[bool | None, str]:
    """Whether every method of each link has a larger mean real error than every method of the next."""
    means = {m: _mean(summary, m, n) for link in chain for m in link}
    missing = [m for m, value in means.items() if value is None]
    if missing:
        return None, f"not measured at n={n}: {', '.join(missing)}"
    holds = all(means[a] > means[b] for first, second in zip(chain, chain[1:]) for a in first for b in second)
    text = " > ".join("{" + ", ".join(f"{LABELS[m]} {means[m]:.2f}" for m in link) + "}" if len(link) > 1
                      else f"{LABELS[link[0]]} {means[link[0]]:.2f}" for link in chain)
    return holds, f"n={n}: {text}"


def check_targets(summary: dict, ns) -> list[dict]:
    """The issue's targets on the mean real test error: [{"target", "holds" (True/False/None), "detail"}]."""
    targets = []
    m, r = _mean(summary, "murauer", TARGET_N), _mean(summary, "real_synth", TARGET_N)
    name = (f"MURAUER <= {TARGET_RATIO:g}x Real & Synth at n={TARGET_N}, the difference > {TARGET_STD_FACTOR:g}x "
            f"the larger standard deviation")
    if m is None or r is None:
        targets.append({"target": name, "holds": None, "detail": f"not measured (needs murauer and real_synth at "
                                                                 f"n={TARGET_N})"})
    else:
        stds = [_std(summary, "murauer", TARGET_N), _std(summary, "real_synth", TARGET_N)]
        ratio, difference = m / r, r - m
        detail = f"{m:.2f} vs {r:.2f} mm ({ratio:.2f}x), difference {difference:+.2f} mm"
        if None in stds:
            holds = None
            detail += "; no standard deviation with one seed"
        else:
            bound = TARGET_STD_FACTOR * max(stds)
            holds = ratio <= TARGET_RATIO and difference > bound
            detail += f", {TARGET_STD_FACTOR:g}x the larger std {bound:.2f} mm"
        targets.append({"target": name, "holds": holds, "detail": detail})
    holds, detail = _order_holds(summary, TARGET_N, [("synth_only",), ("real_synth",), ABLATIONS, ("murauer",)])
    targets.append({"target": f"the paper's order at n={TARGET_N}: Synth only > Real & Synth > {{distribution "
                              f"matching only, view prediction only}} > MURAUER", "holds": holds, "detail": detail})
    results = [_order_holds(summary, n, [("synth_only",), ("real_synth",), ("murauer",)]) for n in ns]
    verdicts = [holds for holds, _ in results]
    holds = None if None in verdicts else all(verdicts)
    targets.append({"target": "Synth only > Real & Synth > MURAUER at every n", "holds": holds,
                    "detail": "; ".join(detail for _, detail in results)})
    return targets


# ---- report --------------------------------------------------------------------------------------------

def _cell_text(stats: dict | None, signed: bool = False) -> str:
    if stats is None:
        return "-"
    mean = f"{stats['mean']:+.2f}" if signed else f"{stats['mean']:.2f}"
    return f"{mean} ± {stats['std']:.2f}" if stats["std"] is not None else f"{mean} (1 seed)"


def _table(summary: dict, methods, ns, quantity: str, title: str, signed: bool = False) -> list[str]:
    lines = [f"{title}:", "", "| method | " + " | ".join(f"n={n}" for n in ns) + " |", "|---" * (len(ns) + 1) + "|"]
    for method in methods:
        cells = [_cell_text(summary.get(method, {}).get(str(n), {}).get(quantity), signed) for n in ns]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return lines


def _weights_text(weights: dict) -> str:
    return ", ".join(f"{key}={value:g}" for key, value in weights.items()) or "the preset's values"


def report_markdown(report: dict) -> str:
    summary, methods, ns = report["summary"], report["methods"], report["n"]
    seeds = ", ".join(map(str, report["seeds"]))
    lines = [f"# Label efficiency ({report['preset']})", "",
             f"Training seeds {seeds} per cell, one shared stage 1 ({STAGE1_DIR}/), the same data for every cell; "
             f"mean ± sample standard deviation over the seeds. n = labeled real frames (Synth only uses none: "
             f"the same models at every n). - = not run.", ""]
    lines += _table(summary, methods, ns, "real", "Mean joint error (mm), real test frames")
    if "murauer" in methods and "real_synth" in methods:
        ratios = []
        for n in ns:
            m, r = _mean(summary, "murauer", n), _mean(summary, "real_synth", n)
            ratios.append(f"{m / r:.2f}x" if m is not None and r is not None else "-")
        lines.append("| MURAUER / Real & Synth | " + " | ".join(ratios) + " |")
    for subject in ("subject1", "subject2"):
        if any(cell.get(subject) for by_n in summary.values() for cell in by_n.values()):
            lines += ["", *_table(summary, methods, ns, subject, f"Mean joint error (mm), test {subject}")]
    lines += ["", *_table(summary, methods, ns, "gap", "Domain gap left: real test error minus the error on the "
                                                         "same frames' synthetic twins (mm)", signed=True)]
    lines += ["", "Loss weights (chosen by the mean validation error over the seeds; the test split is never "
                  "used for a choice):", "", "| method | n | tried (validation error, mm) | chosen |",
              "|---|---|---|---|"]
    for choice in report["selection"]:
        tried = "; ".join(_weights_text(entry["weights"])
                          + (f" ({entry['val_mean_error_mm']:.2f})" if "val_mean_error_mm" in entry else "")
                          for entry in choice["tried"])
        used = choice.get("used", choice["chosen"])
        chosen = _weights_text(used) if used or choice["chosen"] else "(no weighted term)"
        n = "all" if choice["n"] is None else choice["n"]
        lines.append(f"| {LABELS[choice['method']]} | {n} | {tried} | {chosen} |")
    lines += ["", "Targets (on the mean real test error):", ""]
    for target in report["targets"]:
        verdict = {True: "holds", False: "does not hold", None: "not measured"}[target["holds"]]
        lines.append(f"- **{verdict}**: {target['target']}. {target['detail']}")
    return "\n".join(lines) + "\n"


def _plot(summary: dict, methods, ns, path: Path) -> None:
    """Error vs n with error bars (one std over seeds); solid: real test frames, like the paper's Fig. 4;
    dotted: the same models on the synthetic twins."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for index, (method, marker) in enumerate(zip(methods, "sodv^<>p*h")):
        line_color = None
        shift = 1.03 ** (index - (len(methods) - 1) / 2)     # side by side, so error bars do not overlap
        for quantity, style, alpha in (("real", "-", 1.0), ("synth", ":", 0.5)):
            points = [(n, summary[method][str(n)][quantity]) for n in ns
                      if str(n) in summary.get(method, {}) and summary[method][str(n)][quantity]]
            if not points:
                continue
            xs = [n * shift for n, _ in points]
            means = [stats["mean"] for _, stats in points]
            errors = [stats["std"] or 0.0 for _, stats in points]
            label = LABELS[method] if quantity == "real" else f"{LABELS[method]}, synthetic twins"
            color = None if quantity == "real" else line_color
            bars = ax.errorbar(xs, means, yerr=errors, marker=marker, linestyle=style, capsize=3, alpha=alpha,
                               color=color, label=label)
            if quantity == "real":
                line_color = bars.lines[0].get_color()
    ax.set_xscale("log")
    ax.set_xticks(list(ns), [str(n) for n in ns])
    ax.set_xlabel("labeled real frames n")
    ax.set_ylabel("mean joint error (mm), test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out: Path) -> str:
    atomic_write_text(out / "results.json", json.dumps(report, indent=2))
    table = report_markdown(report)
    atomic_write_text(out / "results.md", table)
    _plot(report["summary"], report["methods"], report["n"], out / "label_efficiency.png")
    return table


def label_efficiency(preset: str, out: Path, overrides: list[str], methods=DEFAULT_METHODS, ns=DEFAULT_NS,
                     seeds=DEFAULT_SEEDS, ablation_ns=DEFAULT_ABLATION_NS, select: dict | None = None) -> dict:
    select = select or {}
    cfg = load_config(preset, overrides)
    start = time.perf_counter()
    if cfg.train.pretrain_epochs < 1:
        raise ExperimentError("experiment: every cell starts from one shared stage 1, so train.pretrain_epochs "
                              "must be >= 1")
    if select and cfg.data.val_fraction <= 0:
        raise ExperimentError("experiment: --select chooses on the validation split, but data.val_fraction=0 holds "
                              "none out; set data.val_fraction > 0")
    cells = plan_cells(methods, ns, seeds, ablation_ns, select)
    stage1_dir = out / STAGE1_DIR
    stage1 = stage1_dir / "checkpoints" / "final-pretrain.pt"
    for cell in cells:                               # every cell's config is valid before anything runs
        load_config(preset, [*overrides, *cell.overrides(stage1)])
    print(f"[experiment] {len(cells)} stage-2 runs: {', '.join(methods)} x n in {', '.join(map(str, ns))} "
          f"x seeds {', '.join(map(str, seeds))}" + (f"; selecting {', '.join(select)} on the validation split"
                                                     if select else ""))
    keep_freed_memory()                      # this process and the generator / shard workers it forks
    workflow.ensure_dataset(cfg)
    workflow.ensure_shards(cfg, preset, overrides)
    _train_once(preset, [*overrides, "train.method=synth_only"], stage1_dir)
    for cell in cells:
        _train_once(preset, [*overrides, *cell.overrides(stage1)], out / cell.name)
    chosen, selection = choose(cells, lambda cell: validation_error(out / cell.name))
    records = []
    with workflow.torch_thread_count(workflow.torch_threads(cfg)):
        for cell in chosen:
            loss = load_config(preset, [*overrides, *cell.overrides(stage1)]).loss
            weights = {key: getattr(loss, key) for key in method_weights(cell.method)}
            records.append(cell_record(cell, _evaluated(out / cell.name), weights))
    for choice in selection:                          # the values the reported runs were trained with
        choice["used"] = next(record["weights"] for record in records
                              if (record["method"], record["n"]) == (choice["method"], choice["n"]))
    summary = summarize(records, ns)
    report = {"preset": preset, "overrides": list(overrides), "methods": list(methods), "n": list(ns),
              "seeds": list(seeds), "ablation_n": [n for n in ablation_ns if n in ns], "stage1": str(stage1),
              "select": {key: list(values) for key, values in select.items()}, "selection": selection,
              "summary": summary, "targets": check_targets(summary, ns), "cells": records,
              "minutes": (time.perf_counter() - start) / 60}
    table = write_report(report, out)
    print("\n" + table + f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'label_efficiency.png'} "
          f"({report['minutes']:.1f} min)")
    return report


def experiment_command(name: str, preset: str = "label-efficiency", out: str = "runs/label-efficiency",
                       overrides=(), methods=DEFAULT_METHODS, ns=DEFAULT_NS, seeds=DEFAULT_SEEDS,
                       ablation_ns=DEFAULT_ABLATION_NS, select="", select_on: str = "val") -> dict:
    if name != "label-efficiency":
        raise UserError(f"unknown experiment {name!r}; available: label-efficiency")
    if str(select_on) != "val":
        raise ExperimentError(f"experiment: --select-on {select_on!r}: loss weights are chosen on the validation "
                              f"split only ('val'); the test split is never used for a choice")
    ns = tuple(sorted(parse_ints(ns, "--ns")))
    ablation_ns = ns if str(ablation_ns) == "all" else parse_ints(ablation_ns, "--ablation-ns")
    return label_efficiency(preset, Path(out), list(overrides), methods=parse_methods(methods), ns=ns,
                            seeds=parse_ints(seeds, "--seeds"), ablation_ns=ablation_ns, select=parse_select(select))

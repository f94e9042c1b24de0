"""`murauer-dist experiment label-efficiency`: MURAUER's gain over the baselines vs labeled frames.

On the same data and budget: synthetic only (stage 1, then stage 2 on synthetic data only), the
real & synthetic baseline (labeled real + synthetic, no unlabeled data, no view prediction, no
adversarial term) and MURAUER, for n labeled real frames. All stage-2 runs start from the one
stage-1 checkpoint. Writes OUT/results.json, OUT/results.md and OUT/label_efficiency.png (error vs n,
one line per method, like the paper's Fig. 4). Every model is also scored on the test frames'
synthetic twins: real minus synthetic error is the domain gap a method has left. Every run is an
ordinary `murauer-dist train` and `evaluate`, so finished runs are skipped when started again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from murauer_dist import workflow
from murauer_dist.atomic import atomic_write_text, save_figure
from murauer_dist.config import load_config
from murauer_dist.errors import UserError
from murauer_dist.eval.evaluate import eval_dir
from murauer_dist.methods import METHODS as REGISTRY

METHODS = ("synth_only", "real_synth", "murauer")          # compared, in table and legend order
LABELS = {method: REGISTRY[method].label for method in METHODS}


def _metrics_of(run_dir: Path, domain: str = "real") -> dict:
    done = eval_dir(run_dir, domain) / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    return workflow.evaluate_run(run_dir, domain=domain)


def _train_once(preset: str, overrides: list[str], run_dir: Path) -> None:
    if (run_dir / "checkpoints" / "final-main.pt").is_file():
        print(f"[experiment] {run_dir} already trained")
        return
    workflow.run_training(preset, [*overrides, f"train.out={run_dir}"], log_file=run_dir / "train.log")


def _error(results: dict, method: str, n: int, domain: str = "real") -> float:
    return results[method][str(n)][domain]["mean_error_mm"]


def _table(results: dict, ns: list[int]) -> str:
    """Real test error per method and n, the ratio to the baseline, and the domain gap still left."""
    head = ["| method | " + " | ".join(f"n={n}" for n in ns) + " |", "|---" * (len(ns) + 1) + "|"]
    lines = ["Mean joint error (mm) on the real test split:", "", *head]
    for method in METHODS:
        lines.append(f"| {LABELS[method]} | " + " | ".join(f"{_error(results, method, n):.2f}" for n in ns) + " |")
    ratio = [_error(results, "murauer", n) / _error(results, "real_synth", n) for n in ns]
    lines.append("| MURAUER / baseline | " + " | ".join(f"{r:.2f}x" for r in ratio) + " |")
    lines += ["", "Domain gap left: real test error minus the error on the same frames' synthetic twins (mm):", "",
              *head]
    for method in METHODS:
        gap = [_error(results, method, n) - _error(results, method, n, "synth") for n in ns]
        lines.append(f"| {LABELS[method]} | " + " | ".join(f"{g:+.2f}" for g in gap) + " |")
    return "\n".join(lines) + "\n"


def _plot(results: dict, ns: list[int], path: Path) -> None:
    """Error vs n (solid: real test frames, like the paper's Fig. 4; dotted: their synthetic twins)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, marker in zip(METHODS, "sod"):
        line, = ax.plot(ns, [_error(results, method, n) for n in ns], marker=marker, label=LABELS[method])
        ax.plot(ns, [_error(results, method, n, "synth") for n in ns], marker=marker, linestyle=":",
                color=line.get_color(), alpha=0.6, label=f"{LABELS[method]}, synthetic twins")
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("labeled real frames n")
    ax.set_ylabel("mean joint error (mm), test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def _evaluated(run_dir: Path) -> dict:
    return {domain: _metrics_of(run_dir, domain) for domain in ("real", "synth")}


def label_efficiency(preset: str, out: Path, overrides: list[str], ns=(10, 100, 1000)) -> dict:
    cfg = load_config(preset, overrides)
    start = time.perf_counter()
    workflow.ensure_dataset(cfg)
    workflow.ensure_shards(cfg, preset, overrides)
    synth_dir = out / "synth_only"
    _train_once(preset, [*overrides, "train.method=synth_only"], synth_dir)
    stage1 = synth_dir / "checkpoints" / "final-pretrain.pt"
    synth_metrics = _evaluated(synth_dir)
    # No labeled real data: the same model at every n.
    results: dict = {"synth_only": {str(n): synth_metrics for n in ns}}
    for method in ("real_synth", "murauer"):
        results[method] = {}
        for n in ns:
            run_dir = out / f"{method}-n{n}"
            _train_once(preset, [*overrides, f"train.method={method}", f"data.n_labeled={n}",
                                 "train.pretrain_epochs=0", f"train.init_checkpoint={stage1}"], run_dir)
            results[method][str(n)] = _evaluated(run_dir)
    summary = {"preset": preset, "overrides": overrides, "n": list(ns), "minutes": (time.perf_counter() - start) / 60,
               "mean_error_mm": {m: {str(n): _error(results, m, n) for n in ns} for m in METHODS},
               "synthetic_twins_mean_error_mm": {m: {str(n): _error(results, m, n, "synth") for n in ns}
                                                 for m in METHODS}}
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
    table = _table(results, list(ns))
    atomic_write_text(out / "results.md", table)
    _plot(results, list(ns), out / "label_efficiency.png")
    print("\n" + table + f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'label_efficiency.png'} "
          f"({summary['minutes']:.1f} min)")
    return summary


def experiment_command(name: str, preset: str = "label-efficiency", out: str = "runs/label-efficiency",
                       overrides=()) -> dict:
    if name != "label-efficiency":
        raise UserError(f"unknown experiment {name!r}; available: label-efficiency")
    return label_efficiency(preset, Path(out), list(overrides))

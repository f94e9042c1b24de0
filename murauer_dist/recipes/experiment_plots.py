"""The label-efficiency experiment's figures: error vs n with error bars (label_efficiency.png) and the
decomposition of the error per n (error_sources.png), drawn from the summary experiment_report makes."""
from __future__ import annotations

from pathlib import Path

from murauer_dist.atomic import save_figure
from murauer_dist.recipes.experiment_report import DECOMPOSITION, LABELS, TICKS


def plot_errors(summary: dict, methods, ns, path: Path) -> None:
    """Error vs n with error bars (one std over seeds); solid: real test frames, like the paper's Fig. 4;
    dotted: the same models on the synthetic twins."""
    import matplotlib  # lazy: heavy: matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: heavy: matplotlib
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


def plot_sources(summary: dict, methods, ns, path: Path) -> None:
    """One panel per n, the decomposition table as bars: each method's real test error, the same against
    the poses the frames show (where known), its twins' error and its labeled training frames' errors."""
    import matplotlib  # lazy: heavy: matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: heavy: matplotlib
    present = [n for n in ns if any(str(n) in summary.get(method, {}) for method in methods)]
    columns = [column for column in DECOMPOSITION if column[0] not in ("gap", "gap_shown", "gap_per_frame")
               and any((summary.get(m, {}).get(str(n)) or {}).get(column[0]) for m in methods for n in present)]
    if not present or not columns:
        return
    counts = [sum(str(n) in summary.get(method, {}) for method in methods) for n in present]
    fig, axes = plt.subplots(1, len(present), figsize=(1.1 * sum(counts) + 2.4, 4.2), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": counts})
    width = 0.8 / len(columns)
    for ax, n in zip(axes[0], present):
        shown = [method for method in methods if str(n) in summary.get(method, {})]
        for index, (key, title, _) in enumerate(columns):
            stats = [summary[method][str(n)].get(key) for method in shown]
            xs = [position + (index - (len(columns) - 1) / 2) * width for position in range(len(shown))]
            ax.bar(xs, [s["mean"] if s else 0.0 for s in stats], width, yerr=[(s["std"] or 0.0) if s else 0.0
                                                                              for s in stats],
                   capsize=2, label=title, color=f"C{index}")
        ax.set_xticks(range(len(shown)), [TICKS.get(method, method) for method in shown], fontsize=7,
                      rotation=20, ha="right")
        ax.set_title(f"n = {n}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mean joint error (mm)")
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, path, dpi=120)
    plt.close(fig)

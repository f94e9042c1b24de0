"""The label-efficiency experiment's results: aggregation over seeds, paired differences against the
"Real & Synth" baseline (same training and label seeds), the issue's targets, and the
report (OUT/results.json, the markdown tables of OUT/results.md; the figures: experiment_plots.py).
Pure functions of the per-cell records that experiment.py collects.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from murauer_dist.atomic import atomic_write_text
from murauer_dist.methods import METHODS as REGISTRY

ABLATIONS = ("dm_only", "view_only")
STAGE1_DIR = "stage1"
# The targets (README "Label efficiency on the embedded dataset"): the paper's size of effect at n = 100
# (12.17 vs 15.74 mm, 0.77x) and its order of methods (docs/method.md §6.2).
TARGET_N = 100
TARGET_RATIO = 0.8
ORDER_NS = (10, TARGET_N)          # where the paper's order of all five methods is checked
BASELINE = "real_synth"
CONFIDENCE = 0.95                 # two-sided t interval of a mean paired difference
# The paper's NYU numbers that involve no MURAUER term (docs/method.md §6.2): Real & Synth over Synth only
# (21.27 mm) per n, an anchor for how the embedded data treat the baseline; and MURAUER over Real & Synth.
PAPER_BASELINE_RATIO = {10: 0.97, 100: 0.74, 1000: 0.70, 10000: 0.62}
PAPER_MURAUER_RATIO = {10: 0.79, 100: 0.77, 1000: 0.73}
LABELS = {name: method.label for name, method in REGISTRY.items()}
TICKS = {name: method.short or method.label for name, method in REGISTRY.items()}


# ---- aggregation and targets -------------------------------------------------------------------------

QUANTITIES = ("real", "synth", "gap", "subject1", "subject2",
              # the per-frame gap: mean distance between the predictions on a real frame and on its twin
              "gap_per_frame",
              # where the error comes from: the labeled training frames (real, twins), and where the data
              # know them, the poses the real test frames show (their labels are fitted poses)
              "train_real", "train_synth", "shown", "gap_shown",
              # the view decoder's own loss (main/L_view), first and last tenth of stage 2
              "view_loss_start", "view_loss_end")


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
                if record.get(quantity) is not None:
                    cell[quantity].append(float(record[quantity]))
    return {method: {n: {q: (_stats(values) if values else None) for q, values in cell.items()}
                     for n, cell in by_n.items()}
            for method, by_n in summary.items()}


def _mean(summary: dict, method: str, n: int, quantity: str = "real") -> float | None:
    stats = summary.get(method, {}).get(str(n), {}).get(quantity)
    return stats["mean"] if stats else None


def paired_interval(differences: list[float]) -> dict:
    """The mean of paired differences, their sample std and the two-sided CONFIDENCE t interval of the
    mean (k - 1 degrees of freedom); with one pair there is no interval (ci95 None)."""
    count, mean = len(differences), statistics.fmean(differences)
    if count < 2:
        return {"count": count, "mean": mean, "std": None, "half_width": None, "ci95": None,
                "note": "one pair: no interval"}
    from scipy.stats import t  # lazy: heavy: scipy.stats
    std = statistics.stdev(differences)
    half_width = float(t.ppf(0.5 + CONFIDENCE / 2, count - 1)) * std / math.sqrt(count)
    return {"count": count, "mean": mean, "std": std, "half_width": half_width,
            "ci95": [mean - half_width, mean + half_width], "note": ""}


def _real_by_pair(records: list[dict]) -> dict:
    """{(method, n): {(training seed, label seed): real test error}} of the methods that use labels."""
    real: dict = {}
    for record in records:
        if record["n"] is not None:
            pair = (record.get("seed"), record.get("label_seed"))
            real.setdefault((record["method"], record["n"]), {})[pair] = float(record["real"])
    return real


def paired_differences(records: list[dict]) -> list[dict]:
    """Per n and labeled method other than the baseline: method - Real & Synth in real test error for
    every (training seed, label seed) both ran, the mean, its 95 % t interval and the ratio of the
    two methods' means over those pairs. Pairs share the labeled frames and stream order, so the
    seeds' common effect cancels."""
    real = _real_by_pair(records)
    entries = []
    for (method, n), values in real.items():
        base = real.get((BASELINE, n))
        pairs = [pair for pair in values if method != BASELINE and base and pair in base]
        if not pairs:
            continue
        differences = [values[pair] - base[pair] for pair in pairs]
        method_mean = statistics.fmean(values[pair] for pair in pairs)
        base_mean = statistics.fmean(base[pair] for pair in pairs)
        entries.append({"method": method, "n": n, "baseline": BASELINE, "pairs": [list(pair) for pair in pairs],
                        "differences": differences, **paired_interval(differences),
                        "ratio_of_means": method_mean / base_mean})
    return sorted(entries, key=lambda entry: entry["n"])


def ratio_rows(summary: dict, ns) -> list[dict]:
    """Per n: Real & Synth / Synth only and MURAUER / Real & Synth here and in the paper (None: not run)."""
    rows = []
    for n in ns:
        synth, base, murauer = (_mean(summary, method, n) for method in ("synth_only", BASELINE, "murauer"))
        rows.append({"n": n, "baseline_over_synth": base / synth if base and synth else None,
                     "paper_baseline_over_synth": PAPER_BASELINE_RATIO.get(n),
                     "murauer_over_baseline": murauer / base if murauer and base else None,
                     "paper_murauer_over_baseline": PAPER_MURAUER_RATIO.get(n)})
    return rows


def _ratio_table(rows: list[dict]) -> list[str]:
    text = lambda value: "-" if value is None else f"{value:.2f}x"          # noqa: E731
    lines = ["", "Ratios of mean real test errors, here and in the paper (NYU). The baseline's ratio involves no "
                 "MURAUER term: it says how the data treat labeled real frames.", "",
             "| ratio | " + " | ".join(f"n={row['n']}" for row in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for key, name in (("baseline_over_synth", "Real & Synth / Synth only"),
                      ("paper_baseline_over_synth", "paper: Real & Synth / Synth only"),
                      ("murauer_over_baseline", "MURAUER / Real & Synth"),
                      ("paper_murauer_over_baseline", "paper: MURAUER / Real & Synth")):
        lines.append(f"| {name} | " + " | ".join(text(row[key]) for row in rows) + " |")
    return lines


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


def _ratio_target(summary: dict, paired: list[dict]) -> dict:
    """MURAUER's mean real test error at most TARGET_RATIO x the baseline's, and the paired interval of
    their difference entirely below 0 (None: not measured, or one pair: no interval)."""
    name = (f"MURAUER <= {TARGET_RATIO:g}x Real & Synth at n={TARGET_N} (mean real test error), and the "
            f"{CONFIDENCE:.0%} t interval of the paired difference MURAUER - Real & Synth (same training and "
            f"label seeds) entirely below 0")
    m, r = _mean(summary, "murauer", TARGET_N), _mean(summary, BASELINE, TARGET_N)
    if m is None or r is None:
        return {"target": name, "holds": None,
                "detail": f"not measured (needs murauer and real_synth at n={TARGET_N})"}
    detail = f"{m:.2f} vs {r:.2f} mm ({m / r:.2f}x)"
    entry = next((e for e in paired if (e["method"], e["n"]) == ("murauer", TARGET_N)), None)
    if entry is None:
        return {"target": name, "holds": None, "detail": detail + "; no (training seed, label seed) pair ran both"}
    detail += f", paired difference {entry['mean']:+.2f} mm over {entry['count']} pair(s)"
    if entry["ci95"] is None:
        return {"target": name, "holds": None, "detail": detail + "; one pair: no interval"}
    low, high = entry["ci95"]
    detail += f", {CONFIDENCE:.0%} interval [{low:+.2f}, {high:+.2f}] mm"
    return {"target": name, "holds": m / r <= TARGET_RATIO and high < 0, "detail": detail}


def check_targets(summary: dict, ns, paired: list[dict] = ()) -> list[dict]:
    """The issue's targets on the mean real test error: [{"target", "holds" (True/False/None), "detail"}];
    paired: paired_differences of the cells (the first target needs MURAUER's at n = TARGET_N)."""
    targets = [_ratio_target(summary, list(paired))]
    for n in ORDER_NS:
        holds, detail = _order_holds(summary, n, [("synth_only",), ("real_synth",), ABLATIONS, ("murauer",)])
        targets.append({"target": f"the paper's order at n={n}: Synth only > Real & Synth > {{distribution "
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


DECOMPOSITION = (("real", "real test", False), ("synth", "twins", False),
                 ("gap", "gap (difference of means)", True), ("gap_per_frame", "gap per frame", False),
                 ("shown", "real vs shown pose", False), ("gap_shown", "gap vs shown pose", True),
                 ("train_real", "labeled train real", False), ("train_synth", "labeled train twins", False))


def _decomposition(summary: dict, methods, ns, label_noise_mm: float | None) -> list[str]:
    """Per n, each method's error on the test frames, their twins, against the poses the real frames show,
    and on its labeled training frames: what a method could still gain, and where."""
    has_shown = any(cell.get("shown") for by_n in summary.values() for cell in by_n.values())
    columns = [column for column in DECOMPOSITION if has_shown or column[0] not in ("shown", "gap_shown")]
    lines = ["", "Where the error comes from (mm): real test frames; their synthetic twins; the gap between the "
                 "two, as a difference of means and per frame; "
             + ("the real frames against the poses they show (the labels are fitted poses) and that minus the "
                "twins' error (the domain gap proper); " if has_shown else "")
             + "the labeled real training frames and their twins (Synth only: the twins of data.n_labeled "
               "frames, synthetic frames it trained on). Training-frame error close to the test error: the "
               "model underfits, and no regulariser lowers it.",
             "", "The gap columns other than \"gap per frame\" are differences of means (errors in different "
                 "directions cancel); gap per frame is the mean over test frames of the mean joint distance "
                 "between the predictions on a real frame and on its synthetic twin (the same crop window)."]
    for n in ns:
        lines += ["", f"| n={n} | " + " | ".join(title for _, title, _ in columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for method in methods:
            cell = summary.get(method, {}).get(str(n))
            if cell:
                lines.append(f"| {LABELS[method]} | "
                             + " | ".join(_cell_text(cell.get(key), signed) for key, _, signed in columns) + " |")
    if label_noise_mm is not None:
        lines += ["", f"The test labels lie {label_noise_mm:.2f} mm (mean joint distance) from the poses the real "
                      f"frames show: the error of a perfect reader of the real frames, which no method can remove."]
    return lines


def _view_loss_table(summary: dict, methods, ns) -> list[str]:
    """The view decoder's loss at the start and the end of stage 2, per method with view prediction and n."""
    rows = []
    for method in methods:
        for n in ns:
            start, end = (summary.get(method, {}).get(str(n), {}).get(key) for key in ("view_loss_start", "view_loss_end"))
            if start and end:
                rows.append(f"| {LABELS[method]} | {n} | {_cell_text(start)} | {_cell_text(end)} | "
                            f"{end['mean'] / start['mean']:.2f}x |")
    if not rows:
        return []
    return ["", "View prediction's own loss (main/L_view: L1 over the predicted view's pixels), mean of the first "
                "and of the last tenth of stage 2's logged values:", "",
            "| method | n | start | end | end / start |", "|---|---|---|---|---|", *rows]


def _paired_table(paired: list[dict]) -> list[str]:
    """Each labeled method against Real & Synth on the same (training seed, label seed) pairs."""
    if not paired:
        return []
    lines = ["", f"Paired differences, method - Real & Synth, real test error (mm): one difference per (training "
                 f"seed, label seed) pair both ran, their mean and its {CONFIDENCE:.0%} t interval (an interval "
                 f"that excludes 0: the difference is larger than the pairs' scatter), and the ratio of the two "
                 f"methods' means over the same pairs:", "",
             f"| method | n | pairs | differences | mean | {CONFIDENCE:.0%} interval | ratio of means |",
             "|---" * 7 + "|"]
    for entry in paired:
        pairs = ", ".join(f"{seed}/{label}" for seed, label in entry["pairs"])
        differences = ", ".join(f"{value:+.2f}" for value in entry["differences"])
        interval = ("one pair: no interval" if entry["ci95"] is None else
                    f"[{entry['ci95'][0]:+.2f}, {entry['ci95'][1]:+.2f}]")
        lines.append(f"| {LABELS[entry['method']]} | {entry['n']} | {pairs} | {differences} | {entry['mean']:+.2f} "
                     f"| {interval} | {entry['ratio_of_means']:.2f}x |")
    return lines


def _weights_text(weights: dict) -> str:
    return ", ".join(f"{key}={value:g}" for key, value in weights.items()) or "the preset's values"


def _seeds_text(report: dict) -> str:
    """Which seeds each cell ran with: training seed i paired with label seed i, or one fixed subset."""
    seeds = ", ".join(map(str, report["seeds"]))
    if report.get("label_seeds") is None:
        fixed = report.get("fixed_label_seed")
        return (f"Training seeds {seeds} per cell, every cell with the same labeled subset"
                + (f" (data.label_seed={fixed})" if fixed is not None else ""))
    pairs = ", ".join(f"{seed}/{label}" for seed, label in zip(report["seeds"], report["label_seeds"]))
    return (f"Seed pairs (training seed / label seed: which labeled real frames) {pairs} per cell (Synth only: "
            f"the training seeds)")


def report_markdown(report: dict) -> str:
    summary, methods, ns = report["summary"], report["methods"], report["n"]
    lines = [f"# Label efficiency ({report['preset']})", "",
             f"{_seeds_text(report)}, one shared stage 1 ({STAGE1_DIR}/), the same dataset and shards for every cell; "
             f"mean ± sample standard deviation over the seeds. n = labeled real frames (Synth only uses none: "
             f"the same models at every n). - = not run.", ""]
    lines += _table(summary, methods, ns, "real", "Mean joint error (mm), real test frames")
    if "murauer" in methods and "real_synth" in methods:
        ratios = []
        for n in ns:
            m, r = _mean(summary, "murauer", n), _mean(summary, "real_synth", n)
            ratios.append(f"{m / r:.2f}x" if m is not None and r is not None else "-")
        lines.append("| MURAUER / Real & Synth | " + " | ".join(ratios) + " |")
    lines += _ratio_table(ratio_rows(summary, ns))
    lines += _paired_table(report.get("paired", []))
    for subject in ("subject1", "subject2"):
        if any(cell.get(subject) for by_n in summary.values() for cell in by_n.values()):
            lines += ["", *_table(summary, methods, ns, subject, f"Mean joint error (mm), test {subject}")]
    lines += ["", *_table(summary, methods, ns, "gap", "Domain gap left: real test error minus the error on the "
                                                         "same frames' synthetic twins (mm)", signed=True)]
    lines += _decomposition(summary, methods, ns, report.get("label_noise_mm"))
    lines += _view_loss_table(summary, methods, ns)
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


def write_report(report: dict, out: Path) -> str:
    report.setdefault("ratios", ratio_rows(report["summary"], report["n"]))
    atomic_write_text(out / "results.json", json.dumps(report, indent=2))
    table = report_markdown(report)
    atomic_write_text(out / "results.md", table)
    return table

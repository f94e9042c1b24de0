"""OUT/summary.json and OUT/summary.md: the runs of a sweep sorted by its metric."""
from __future__ import annotations

import json
from pathlib import Path

from murauer_dist.atomic import atomic_write_text
from murauer_dist.sweep.spec import SweepSpec, format_value


def ranked(spec: SweepSpec, results: list[dict]) -> list[dict]:
    """Finished runs with a metric, best first; then finished runs without one; then failed runs."""
    sign = 1.0 if spec.goal == "minimize" else -1.0

    def order(result: dict):
        if result["status"] != "finished":
            return (2, 0.0, result["run"])
        if result.get("best") is None:
            return (1, 0.0, result["run"])
        return (0, sign * result["best"], result["run"])

    return sorted(results, key=order)


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def markdown_table(spec: SweepSpec, rows: list[dict]) -> str:
    names = list(spec.parameters)
    header = ["#", "run", *names, f"best {spec.metric}", "final", "status", "seconds"]
    lines = [f"# Sweep `{spec.name}` ({spec.method}, {spec.goal} `{spec.metric}`)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(rows, 1):
        status = row["status"] if row["status"] == "finished" else f"failed (exit {row['exit_code']})"
        if row["status"] == "finished" and row.get("best") is None:
            status = "finished, metric never logged"
        cells = [str(rank), row["run"], *(format_value(row["params"].get(n, "")) for n in names),
                 _number(row.get("best")), _number(row.get("final")), status, f"{row.get('seconds', 0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row["status"] != "finished"]
    if failed:
        lines += ["", f"{len(failed)} run(s) failed; see OUT/<run>/train.log:"]
        lines += [f"- {row['run']}: exit code {row['exit_code']}" for row in failed]
    return "\n".join(lines) + "\n"


def write_summary(spec: SweepSpec, results: list[dict], out: Path) -> list[dict]:
    rows = ranked(spec, [{k: v for k, v in r.items() if k != "skipped"} for r in results])
    document = {"sweep": spec.name, "file": str(spec.path), "method": spec.method,
                "metric": {"name": spec.metric, "goal": spec.goal}, "runs": rows,
                "best": rows[0] if rows and rows[0].get("best") is not None else None}
    atomic_write_text(out / "summary.json", json.dumps(document, indent=2) + "\n")
    atomic_write_text(out / "summary.md", markdown_table(spec, rows))
    return rows

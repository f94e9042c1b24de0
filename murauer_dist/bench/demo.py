"""`murauer-dist bench demo`: the main job (`murauer-dist demo`) from nothing, timed phase by phase.

Runs `python -m murauer_dist.cli demo` as a child process in a fresh work folder (data, shards and
run all inside it) and splits the run into data, shards, stage 1, stage 2 and evaluation (with the
start-up of each phase's process counted in the phase): wall seconds, and CPU seconds of the whole
process tree (the demo, its generator and shard workers, the training process and its threads),
read from /proc when a phase ends and from the child's rusage at its exit. Phase ends are the demo's
own console lines (`[data] done`, `[shards] done`, `[train] done`) and the appearance of the stage-1
checkpoint `final-pretrain.pt`.

    murauer-dist bench demo --out bench-results/demo [--source CHECKOUT] [--baseline CHECKOUT] [--keep] [key=value ...]

`--source` runs another checkout's code (its folder goes first on PYTHONPATH) with this Python.
`--baseline CHECKOUT` measures that checkout first and then the source, one after the other on the
same machine, and adds the per-phase ratio (baseline / source: above 1 = the source is faster).
Writes OUT/bench-demo.json, OUT/bench-demo.md (the table) and OUT/demo.log (the demo's console
output; OUT/demo-baseline.log for the baseline).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from murauer_dist.atomic import atomic_write_bytes
from murauer_dist.bench.machine import machine
from murauer_dist.errors import UserError
from murauer_dist.eval.metrics import subjects_text

PHASES = ("data", "shards", "stage 1", "stage 2", "evaluation")
SUBJECT_ERRORS = ("subject1_mean_error_mm", "subject2_mean_error_mm")   # eval metrics.json keys (mm)
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime + cutime + cstime in seconds) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()          # after the command name, which may hold spaces
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / _TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and all its live descendants, each with its reaped children.

    A process's own time plus cutime/cstime counts every descendant exactly once: live ones are
    visited here, finished ones are in the cutime of the process that waited for them.
    """
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _proc_cpu(int(entry))
            if info is not None:
                parents[int(entry)], cpu[int(entry)] = info
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(cpu.get(pid, 0.0) for pid in tree)


def _source_commit(source: Path) -> str:
    """The checkout's commit, with "+changes" when its tracked files differ from it."""
    try:
        git = ["git", "-C", str(source)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        return commit + ("+changes" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class _Watcher:
    """Reads the child's console lines and marks phase ends (wall time, tree CPU) as they happen."""

    def __init__(self, process: subprocess.Popen, log, run_dir: Path):
        self.process, self.log, self.run_dir = process, log, run_dir
        self.marks: dict[str, tuple[float, float]] = {}
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)

    def mark(self, phase: str) -> None:
        if phase not in self.marks:
            self.marks[phase] = (time.perf_counter(), tree_cpu(self.process.pid))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.log.write(line)
            self.log.flush()
            self.lines.append(line.rstrip("\n"))
            if line.startswith(("[data] done", "[data] using")):
                self.mark("data")
            elif line.startswith(("[shards] done", "[shards] using")):
                self.mark("shards")
            elif line.startswith("[train] done"):
                self.mark("stage 1")             # in case the checkpoint poll missed it (stage 1 skipped)
                self.mark("stage 2")

    def run(self) -> None:
        self.reader.start()
        pretrain = self.run_dir / "checkpoints" / "final-pretrain.pt"
        while self.process.poll() is None:
            if "stage 1" not in self.marks and "shards" in self.marks and pretrain.exists():
                self.mark("stage 1")
            time.sleep(0.1)
        self.reader.join()


def run_demo(work: Path, source: Path, overrides=(), log_path: Path | None = None) -> dict:
    """Run the demo from nothing in `work` with the code of `source`; phases, accuracy, machine."""
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "run"
    command = [sys.executable, "-m", "murauer_dist.cli", "demo", "--out", str(run_dir),
               f"data.root={work / 'data'}", f"data.shards={work / 'shards'}", *overrides]
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(source), *filter(None, [os.environ.get("PYTHONPATH")])]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_start = machine()
    start = time.perf_counter()
    log_path = log_path or work / "demo.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        watcher = _Watcher(process, log, run_dir)
        watcher.run()
    end = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if process.returncode != 0:
        raise UserError(f"bench demo: the demo failed with exit code {process.returncode}; its output: {log_path}")
    rows, last_wall, last_cpu = [], start, 0.0
    for phase in PHASES:
        wall, cpu = watcher.marks.get(phase, (end, total_cpu)) if phase != "evaluation" else (end, total_cpu)
        rows.append({"phase": phase, "wall_s": round(wall - last_wall, 1), "cpu_s": round(cpu - last_cpu, 1)})
        last_wall, last_cpu = wall, cpu
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    return {"benchmark": "demo", "source_commit": _source_commit(source), "command": " ".join(command[2:]),
            "phases": rows, "total": {"wall_s": round(end - start, 1), "cpu_s": round(total_cpu, 1)},
            "mean_error_mm": round(float(metrics["mean_error_mm"]), 3), "test_frames": metrics.get("frames"),
            "subject_split": metrics.get("subject_split"),
            **{key: (None if metrics.get(key) is None else round(float(metrics[key]), 3)) for key in SUBJECT_ERRORS},
            "machine_at_start": machine_start, "machine_at_end": machine()}


def _accuracy_text(run: dict) -> str:
    """'mean joint error E mm on N real test frames', with both subjects' errors where there are two."""
    subjects = subjects_text(run)
    return (f"mean joint error {run['mean_error_mm']:.2f} mm on {run['test_frames']} real test frames"
            + (f" ({subjects})" if subjects else ""))


def table(result: dict) -> str:
    lines = ["| phase | wall s | CPU s |", "|---|---|---|"]
    for row in result["phases"] + [{"phase": "total", **result["total"]}]:
        lines.append(f"| {row['phase']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} |")
    at_start = result["machine_at_start"]
    lines.append("")
    lines.append(f"commit {result['source_commit']}; {_accuracy_text(result)}; {at_start.get('cpu_model')}, {at_start.get('cpu_cores')} "
                 f"cores, load average (1 min) {at_start.get('load_average_1min')} at the start, "
                 f"{result['machine_at_end'].get('load_average_1min')} at the end")
    return "\n".join(lines) + "\n"


def comparison_table(baseline: dict, result: dict) -> str:
    """Both commits' phases side by side with the ratio baseline / source (above 1: the source is faster)."""
    def ratio(old: float, new: float) -> str:
        return f"{old / new:.2f}x" if new > 0 else "-"
    lines = [f"| phase | wall s {baseline['source_commit']} | wall s {result['source_commit']} | ratio | "
             f"CPU s {baseline['source_commit']} | CPU s {result['source_commit']} | ratio |",
             "|---|---|---|---|---|---|---|"]
    rows = zip(baseline["phases"] + [{"phase": "total", **baseline["total"]}],
               result["phases"] + [{"phase": "total", **result["total"]}])
    for old, new in rows:
        lines.append(f"| {new['phase']} | {old['wall_s']:.1f} | {new['wall_s']:.1f} | {ratio(old['wall_s'], new['wall_s'])} "
                     f"| {old['cpu_s']:.1f} | {new['cpu_s']:.1f} | {ratio(old['cpu_s'], new['cpu_s'])} |")
    lines.append("")
    for name, run in (("baseline", baseline), ("source", result)):
        lines.append(f"- {name} {run['source_commit']}: {_accuracy_text(run)}; load average (1 min) "
                     f"{run['machine_at_start'].get('load_average_1min')} at the start, {run['machine_at_end'].get('load_average_1min')} "
                     f"at the end")
    lines.append(f"- {result['machine_at_start'].get('cpu_model')}, {result['machine_at_start'].get('cpu_cores')} cores")
    return "\n".join(lines) + "\n"


def _checkout(path: str, flag: str) -> Path:
    folder = Path(path).resolve()
    if not (folder / "murauer_dist" / "cli.py").is_file():
        raise UserError(f"bench demo: {flag} {folder}: no murauer_dist package there (give a checkout of this "
                        f"repository, e.g. `git worktree add --detach /tmp/old COMMIT`)")
    return folder


def main(*overrides: str, out: str = "bench-results/demo", source: str = "", baseline: str = "", keep: bool = False,
         work: str = "") -> dict:
    source_dir = _checkout(source, "--source") if source else Path(__file__).resolve().parents[2]
    baseline_dir = _checkout(baseline, "--baseline") if baseline else None
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(work) if work else Path(tempfile.mkdtemp(prefix="bench-demo-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        before = None
        if baseline_dir is not None:
            before = run_demo((work_dir / "baseline").resolve(), baseline_dir, overrides,
                              log_path=out_dir / "demo-baseline.log")
        result = run_demo((work_dir / "source").resolve() if before else work_dir.resolve(), source_dir, overrides,
                          log_path=out_dir / "demo.log")
    finally:
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    text = table(result) if before is None else comparison_table(before, result)
    if before is not None:
        result = {**result, "baseline": before}
    print(text, end="")
    atomic_write_bytes(out_dir / "bench-demo.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "bench-demo.md", text.encode())
    return result

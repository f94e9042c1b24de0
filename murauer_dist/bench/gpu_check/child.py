"""One gpu-check section in a child process: its own interpreter, a deadline, a clean end.

The sections that run torch kernels (train_step, loaders, dali_parity, rollover, ddp, deepspeed,
compile) run here, one process each, because:

- A native crash ends the child, not the check. On a CPU, torch 2.13.0's oneDNN bf16 1x1
  convolution backward-weights kernel (`jit_bf16_1x1`, AVX-512), run with more than one OpenMP
  thread, corrupts the heap: with the default primitive cache the process then dies with SIGSEGV in
  the cache's destructor at exit (after the report was written; exit 139), with the cache off it
  dies inside a later step (docs/gpu-check.md). A child ends through os._exit after writing its
  result, as training processes end through murauer_dist.dist.clean_exit, so no exit-time
  destructor runs; a crash or hang before that is reported in the section.
- A section that would overrun the time budget (a multi-minute inductor compile) is killed when
  the budget ends (its process group, so loader workers go too) and reported as timed out.
- Every measurement starts from a fresh process: no compiled code, allocator cache, process group
  or DALI pipeline left over from the section before it.

    run_section("murauer_dist.bench.gpu_check.measure:train_step_section", opts, budget, **kwargs)

calls `function(opts, budget, **kwargs)` in a child python (child_main(REQUEST)) and returns what
it returned (a dict; status "ok" unless it says otherwise), or the section's "skipped" / "failed"
entry.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from murauer_dist.atomic import atomic_write_text
from murauer_dist.bench.gpu_check.spec import Budget, Options, Skip, error_text

REPO = Path(__file__).resolve().parents[3]
OUTPUT_TAIL = 40
CHILD_CODE = "import sys; from murauer_dist.bench.gpu_check.child import child_main; child_main(sys.argv[1])"


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name} (exit {128 - code} in a shell)"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def output_tail(path: Path, lines: int = OUTPUT_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def child_environment() -> dict:
    """The command's environment, with the package importable from the repository (no install)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path}


def run_section(function: str, opts: Options, budget: Budget, **kwargs) -> dict:
    """`function(opts, budget, **kwargs)` ("module:name") in a child process, killed at the deadline."""
    timeout = budget.left()
    if timeout <= 0:
        raise Skip(f"time budget of {budget.budget_s:.0f} s used up")
    with tempfile.TemporaryDirectory(prefix="gpu-check-child-") as scratch:
        folder = Path(scratch)
        request, result, output = folder / "request.json", folder / "result.json", folder / "output.log"
        request.write_text(json.dumps({
            "function": function, "kwargs": kwargs, "result": str(result),
            "options": {**dataclasses.asdict(opts), "out_dir": str(opts.out_dir), "skip": list(opts.skip)},
            "deadline": budget.deadline, "budget_s": budget.budget_s}, default=str))
        with open(output, "wb") as log:
            process = subprocess.Popen([sys.executable, "-c", CHILD_CODE, str(request)],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=child_environment(), start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(process)
                return {"status": "failed", "timed_out": True,
                        "reason": f"did not finish within the {timeout:.0f} s left of the time budget "
                                  f"(--budget-s {budget.budget_s:.0f}); killed",
                        "output_tail": output_tail(output)}
            finally:
                if process.poll() is None:           # interrupted (Ctrl-C): no orphan keeps the GPU
                    kill_group(process)
        if not result.is_file():
            return {"status": "failed", "exit": code, "output_tail": output_tail(output),
                    "reason": f"the section's process ended with {exit_text(code)} before writing its result"}
        data = json.loads(result.read_text())
        if code != 0:
            data = {**data, "status": "failed", "exit": code,
                    "reason": f"the section's process ended with {exit_text(code)} after writing its result"}
        if data.get("status") == "failed":
            data.setdefault("output_tail", output_tail(output))
        return data


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _run_request(request_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    options = request["options"]
    opts = Options(**{**options, "out_dir": Path(options["out_dir"]), "skip": tuple(options["skip"])})
    budget = Budget(request["deadline"], request["budget_s"])
    try:
        module, name = request["function"].split(":")
        data = getattr(importlib.import_module(module), name)(opts, budget, **request["kwargs"]) or {}
        data = {"status": data.pop("status", "ok"), **data}
    except Skip as why:
        data = {"status": "skipped", "reason": str(why)}
    except BaseException as err:  # noqa: BLE001 - reported in the section
        data = {"status": "failed", "reason": error_text(err), "traceback": traceback.format_exc()[-4000:]}
    atomic_write_text(request["result"], json.dumps(data, default=str) + "\n")


def child_main(request_path: str) -> None:
    """The child process: run the request, write its result, end through os._exit (see the module doc)."""
    try:
        _run_request(request_path)
        code = 0
    except BaseException:  # noqa: BLE001 - the parent reports the missing result with this output
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

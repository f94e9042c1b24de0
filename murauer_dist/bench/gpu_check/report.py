"""gpu-check's table (OUT_DIR/gpu-check.md and stdout): sections, step and loader rows, verdicts.

Built from the JSON result alone, so a saved gpu-check.json renders the same table again.
"""
from __future__ import annotations

from pathlib import Path

from murauer_dist.bench.gpu_check.spec import (COMPILED, SECTIONS, TARGET_CROPS_PER_S, TARGET_DATA_WAIT,
                                               TARGET_ITERS_PER_S, Options)
from murauer_dist.bench.machine import describe


def _fmt(value, pattern: str = "", empty: str = "-") -> str:
    """Rates and times: 1 decimal, 2 below 10 (a CPU-mode step can take seconds)."""
    if value is None:
        return empty
    return (pattern or ("{:,.2f}" if abs(value) < 10 else "{:,.1f}")).format(value)


def _target(row: dict, opts: Options, kind: str) -> str:
    if row.get("status") != "ok":
        return ""
    if kind == "step":
        text = f">= {TARGET_ITERS_PER_S:.0f} it/s, >= {TARGET_CROPS_PER_S:,.0f} crops/s"
        met = row["iters_per_s"] >= TARGET_ITERS_PER_S and row["crops_per_s"] >= TARGET_CROPS_PER_S
    else:
        text = f"< {100 * TARGET_DATA_WAIT:.0f} % wait"
        met = row["data_wait_fraction"] < TARGET_DATA_WAIT
        if opts.device == "cuda" and opts.preset == "nyu":
            met = met and row["iters_per_s"] >= TARGET_ITERS_PER_S
            text += f" at >= {TARGET_ITERS_PER_S:.0f} it/s"
    if opts.device != "cuda" or opts.preset != "nyu":
        return f"{text}: n/a ({opts.device}, {opts.preset})"
    return f"{text}: {'met' if met else 'NOT met'}"


def status_cell(entry: dict) -> str:
    if entry.get("status") == "ok":
        return "ok"
    reason = entry.get("reason", "")
    return f"{entry.get('status', '?')}: {reason}" if reason else entry.get("status", "?")


def _section_note(name: str, section: dict) -> str:
    if section.get("status") != "ok":
        return ""
    if name == "environment":
        packages = section.get("packages", {})
        found = [f"{key} {value.get('version', '')}".strip() for key, value in packages.items()
                 if key in ("dali", "deepspeed", "wandb") and value.get("importable")]
        missing = [key for key in ("dali", "deepspeed", "wandb") if not packages.get(key, {}).get("importable")]
        t = section.get("torch", {})
        gpus = section.get("gpus") or []
        gpu = (f"{len(gpus)} x {gpus[0]['name']} (sm {gpus[0]['capability']}, {gpus[0]['memory_gb']} GB)"
               if gpus else "no GPU")
        return (f"torch {t.get('version')} (CUDA {t.get('cuda')}, cuDNN {t.get('cudnn')}), {gpu}, "
                f"torch threads {t.get('threads')}; importable: {', '.join(found) or 'none'}; "
                f"missing: {', '.join(missing) or 'none'}; {_compiler_note(section.get('compilers', {}))}")
    if name == "gpu_tests":
        return (f"{section['passed']} passed, {section['failed']} failed, {section['skipped']} skipped, "
                f"{section['errors']} errors")
    if name == "dataset":
        return (f"{section['frames']} + {section.get('test_frames', 0)} test frames: synth-data "
                f"{section['synth_data_s']:.1f} s, make-shards "
                f"{section['make_shards_s']:.1f} s ({section['crop_size']}x{section['crop_size']} crops, stored "
                f"{section['stored_size']}x{section['stored_size']}, {section['shard_mb']:.1f} MB)")
    if name == "ddp":
        return (f"{section['backend']}, 1 rank: {_fmt(section['iters_per_s'])} it/s, step "
                f"{_fmt(section['step_ms_median'])} ms, init {section['init_s']:.1f} s")
    if name == "deepspeed":
        return (f"ZeRO-{section['zero_stage']} bf16 ({section['config']}), 1 rank: {_fmt(section['iters_per_s'])} "
                f"it/s, step {_fmt(section['step_ms_median'])} ms, engines {section['setup_s']:.1f} s")
    if name == "dali_parity":
        diff = section["max_abs_diff"]
        return (f"{section['compared']}, {section['frames']} test frames: max |diff| crops {diff['depth']:.1e}, "
                f"targets {diff['target']:.1e} (tolerance {section['tolerance']:.0e}), centres "
                f"{diff['center_xyz']:.1e} mm")
    if name == "rollover":
        return (f"{section['backend']} ({section['loader_device']}), {section['epochs']} x {section['iters_per_epoch']}"
                f"-step epochs: wait at rollover {_fmt(section['rollover_wait_ms_max'])} ms (worst) vs "
                f"{_fmt(section['wait_ms_median'])} ms median, step {_fmt(section['step_ms_median'])} ms median")
    if name == "train_resume":
        runs = {run["run"]: run for run in section.get("runs", [])}
        stopped, resumed = runs.get("stopped", {}), runs.get("resumed", {})
        return (f"{section['preset']}, {section['loader']} loader: SIGTERM in stage 2, stopped at step "
                f"{stopped.get('global_step')} (exit {stopped.get('exit')}), resumed to {resumed.get('global_step')} "
                f"of {section['planned_steps']} (exit {resumed.get('exit')})")
    if name == "memory":
        if section.get("peak_allocated_gb") is None:
            return ""
        return (f"peak {section['peak_allocated_gb']:.2f} GB allocated, {section['peak_reserved_gb']:.2f} GB reserved "
                f"of {section['total_gb']:.1f} GB")
    if name == "compile":
        return (f"{section.get('compile_backend')}, compile_networks + DDP: compile {section['compile_s']:.1f} s, "
                f"then {_fmt(section['iters_per_s'])} it/s")
    if name in ("train_step", "loaders"):
        rows = section.get("rows", [])
        return f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} rows ok"
    return ""


def _compiler_note(compilers: dict) -> str:
    c = compilers.get("c")
    if c is None:
        return "C compiler not probed"
    if not c.get("found"):
        return "no C compiler (inductor needs one)"
    name = Path(c["path"]).name
    return f"C compiler {name} builds" if c.get("builds") else f"C compiler {name} FAILS to build ({c.get('reason')})"


def _rollover_target(section: dict, opts: Options) -> str:
    text = "rollover wait < 1 median step"
    if opts.device != "cuda" or opts.preset != "nyu":
        return f"{text}: n/a ({opts.device}, {opts.preset})"
    return f"{text}: {'met' if section['rollover_in_median_steps'] < 1 else 'NOT met'}"


def _train_runs(section: dict) -> list[str]:
    lines = ["", f"murauer-dist train {section['preset']} ({section['planned_steps']} steps planned: "
                 f"{section['stage1_steps']} + {section['stage2_steps']}), stopped by SIGTERM in stage 2, then resumed",
             "", "| run | exit | status | global step | steps | wall s | steps/s | training steps/s |",
             "|---|---|---|---|---|---|---|---|"]
    for run in section.get("runs", []):
        lines.append(f"| {run['run']} | {run['exit']} | {run.get('status') or '-'} | {run.get('global_step')} | "
                     f"{run.get('steps', '-')} | {_fmt(run.get('wall_s'))} | {_fmt(run.get('steps_per_s'))} | "
                     f"{_fmt(run.get('training_steps_per_s'))} |")
    return lines


def render(result: dict) -> str:
    opts = result["options"]
    o = Options(**{**opts, "out_dir": Path(opts["out_dir"]), "skip": tuple(opts["skip"])})
    sections = result["sections"]
    lines = [f"gpu-check: device {o.device}, preset {o.preset}, {o.steps} timed steps after {o.warmup} warm-up "
             f"steps, {result.get('seconds', 0):.0f} s in all",
             describe(result["machine"]), "",
             "| section | status | s | notes |", "|---|---|---|---|"]
    for name in SECTIONS:
        section = sections.get(name)
        if section is None:
            lines.append(f"| {name} | not run | | |")
            continue
        lines.append(f"| {name} | {status_cell(section)} | {section.get('seconds', 0):.1f} | "
                     f"{_section_note(name, section)} |")
    step = sections.get("train_step", {})
    compiled = sections.get("compile")
    step_rows = list(step.get("rows", []))
    if compiled is not None:
        step_rows.append({"name": compiled.get("name", f"{COMPILED[0]} ({o.compile_backend})"), **compiled})
    if step.get("rows") or (compiled or {}).get("status") == "ok":
        lines += ["", f"MURAUER step ({o.preset}, {step.get('crops_per_step', '?')} crops per step, in-memory batches)",
                  "", "| variant | status | it/s | crops/s | step ms (median) | peak GPU GB | compile s | target |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in step_rows:
            lines.append(f"| {row['name']} | {status_cell(row)} | {_fmt(row.get('iters_per_s'))} | "
                         f"{_fmt(row.get('crops_per_s'), '{:,.0f}')} | {_fmt(row.get('step_ms_median'))} | "
                         f"{_fmt(row.get('peak_gpu_gb'), '{:.2f}')} | {_fmt(row.get('compile_s'))} | "
                         f"{_target(row, o, 'step') if row.get('precision') == 'bf16' else ''} |")
    loaders = sections.get("loaders", {})
    if loaders.get("rows"):
        lines += ["", f"bf16 step fed by the loaders ({loaders.get('threads')} threads/workers per stream)", "",
                  "| loader | status | it/s | crops/s | step ms (median) | data wait | loader build s | target |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in loaders["rows"]:
            wait = row.get("data_wait_fraction")
            lines.append(f"| {row['name']} | {status_cell(row)} | {_fmt(row.get('iters_per_s'))} | "
                         f"{_fmt(row.get('crops_per_s'), '{:,.0f}')} | {_fmt(row.get('step_ms_median'))} | "
                         f"{_fmt(None if wait is None else 100 * wait, '{:.1f} %')} | "
                         f"{_fmt(row.get('loader_build_s'))} | {_target(row, o, 'loader')} |")
    rollover = sections.get("rollover", {})
    if rollover.get("status") == "ok":
        lines += ["", f"Epoch rollover: data wait at each epoch's first step "
                      f"{', '.join(_fmt(ms) for ms in rollover['rollover_wait_ms'])} ms, median "
                      f"{_fmt(rollover['wait_ms_median'])} ms; {_rollover_target(rollover, o)}"]
    if sections.get("train_resume", {}).get("runs"):
        lines += _train_runs(sections["train_resume"])
    lines += ["", f"Targets (one H100-class GPU, nyu preset): >= {TARGET_ITERS_PER_S:.0f} MURAUER iterations/s in bf16 "
              f"(>= {TARGET_CROPS_PER_S:,.0f} crops/s) with < {100 * TARGET_DATA_WAIT:.0f} % data wait."]
    return "\n".join(lines) + "\n"

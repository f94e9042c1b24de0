"""A run directory and the config it was trained with: check_run_config refuses a resume under another
config (config_changes.RESUMABLE_KEYS and stage lengths that only let the run train on may change) and records
every accepted change."""
from __future__ import annotations

from pathlib import Path

from murauer_dist.config import config_from_dict, public_dict
from murauer_dist.config_changes import LENGTH_KEYS, config_changes, may_change_on_resume
from murauer_dist.errors import UserError
from murauer_dist.methods import STAGES
from murauer_dist.tracking.secrets import redact_text
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train.stages import planned_steps


class RunConfigError(UserError):
    """The run directory was trained with another config."""


def _length_problems(old_cfg, cfg, state: dict | None) -> list[str]:
    """Why new stage lengths cannot continue the trained run (empty when they can)."""
    if state is None:
        return []
    here = STAGES.index(state["stage"])
    problems = []
    for stage in STAGES[:here]:          # finished before the checkpoint's stage began
        before, after = planned_steps(old_cfg, stage), planned_steps(cfg, stage)
        if before != after:
            problems.append(f"stage {stage} is finished after {before} steps; the new lengths would give it {after}")
    if planned_steps(cfg, state["stage"]) < state["stage_step"]:
        problems.append(f"stage {state['stage']} has trained {state['stage_step']} steps; the new lengths stop it "
                        f"at {planned_steps(cfg, state['stage'])}")
    return problems


def _show(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def never_trained(run_dir: Path) -> bool:
    """True when `run_dir` holds no checkpoint file and no metrics record: no step of it was ever trained."""
    folder = ckpt.checkpoint_dir(run_dir)
    if folder.is_dir() and any(folder.glob("*.pt*")):
        return False
    metrics = Path(run_dir) / "metrics.jsonl"
    return not metrics.is_file() or not metrics.read_text(errors="replace").strip()


def check_run_config(cfg, run_dir: Path, state: dict | None, is_main: bool) -> None:
    """A run directory and its config never disagree.

    The resolved config is compared with the one in the newest checkpoint and in RUN/config.yaml. Keys
    of config_changes.RESUMABLE_KEYS may differ, and so may stage lengths (config_changes.LENGTH_KEYS) that only let the
    run train on. Any other difference stops with RunConfigError naming the keys, unless
    train.allow_config_change=true. A run directory that never trained a step (no checkpoint, no metrics)
    takes the new config. Every accepted difference is appended to RUN/config-changes.yaml and config.yaml
    is rewritten; without differences config.yaml is written once, when the run starts.
    """
    new = public_dict(cfg)
    stored_yaml = ckpt.read_run_config(run_dir)
    stored = ([state["config"]] if state else []) + ([stored_yaml] if stored_yaml is not None else [])
    if not stored:
        if is_main:
            ckpt.write_run_config(cfg, run_dir)
        return
    if state is None and never_trained(run_dir):
        # A run that stopped before its first step (bad data path, a crash while starting) holds nothing its
        # config could disagree with: the corrected command replaces config.yaml and says so.
        changes = config_changes(stored_yaml, new)
        if is_main and changes:
            record = ckpt.record_config_changes(run_dir, changes, 0, forced=False)
            listed = ", ".join(f"{key} {_show(old)} -> {_show(value)}" for key, (old, value) in changes.items())
            print(redact_text(f"train.out={run_dir} never trained a step: its config.yaml takes this run's settings "
                              f"(recorded in {record}): {listed}"), flush=True)
            ckpt.write_run_config(cfg, run_dir)
        return
    changes = {}
    for tree in stored:                       # the checkpoint's values first: they were trained with
        for key, values in config_changes(tree, new).items():
            changes.setdefault(key, values)
    refused = {key: values for key, values in changes.items()
               if not may_change_on_resume(key) and key not in LENGTH_KEYS}
    length_changed = [key for key in changes if key in LENGTH_KEYS]
    notes = []
    if length_changed and state is not None:
        old_cfg = config_from_dict(state["config"])
        notes = _length_problems(old_cfg, cfg, state)
        if notes:
            refused.update({key: changes[key] for key in length_changed})
    if refused and not cfg.train.allow_config_change:
        listed = ", ".join(f"{key} {_show(old)} -> {_show(new_value)}" for key, (old, new_value) in refused.items())
        why = f" ({'; '.join(notes)})" if notes else ""
        raise RunConfigError(redact_text(
            f"train.out={run_dir} holds a run trained with another config: {listed}{why}. Choose a new train.out "
            f"for a new run, or add train.allow_config_change=true to continue this run with the new values (the "
            f"change is recorded in {run_dir / ckpt.CHANGES_FILE})"))
    if is_main and (changes or stored_yaml is None):
        if changes:
            step = state["global_step"] if state else 0
            record = ckpt.record_config_changes(run_dir, changes, step, forced=bool(refused))
            listed = ", ".join(f"{key} {_show(old)} -> {_show(new_value)}" for key, (old, new_value) in changes.items())
            print(redact_text(f"config changed on resume ({'forced by train.allow_config_change' if refused else 'allowed'}"
                              f"; recorded in {record}): {listed}"), flush=True)
        ckpt.write_run_config(cfg, run_dir)

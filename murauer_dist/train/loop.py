"""The training loop: owns the cadence (stages, epochs, schedule, validation, logging, checkpoints).

Stage 1 ("pretrain") trains f and p on synthetic data; stage 2 ("main") trains the chosen method
starting from stage 1's weights (or cfg.train.init_checkpoint when stage 1 is off). A run
directory with checkpoints resumes where it stopped, from its newest readable checkpoint, and only
with the config it was trained with (check_run_config; config.RESUMABLE_KEYS lists what may change).
SIGTERM/SIGINT finish the current step, write a checkpoint and return with status "stopped".
"""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from murauer_dist import dist
from murauer_dist.config import (LENGTH_KEYS, ConfigError, check_for_training, config_changes, config_from_dict,
                                 may_change_on_resume, public_dict)
from murauer_dist.data.batch import to_device
from murauer_dist.errors import UserError
from murauer_dist.methods import uses_mapping
from murauer_dist.models import build_discriminator, build_model, compile_networks
from murauer_dist.seeds import derive_seed
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train.engine import current_lr
from murauer_dist.train.engine_factory import build_engines
from murauer_dist.train.schedule import stage_multiplier
from murauer_dist.train.step import train_step
from murauer_dist.train.validate import validate


class NonFiniteLossError(UserError, RuntimeError):
    """Too many consecutive steps with a NaN/inf loss."""


class NonFiniteValidationError(UserError, RuntimeError):
    """A validation pass over real frames gave a NaN/inf joint error."""


class RunConfigError(UserError):
    """The run directory was trained with another config."""


# What the non-finite guards suggest (loss and validation alike).
NONFINITE_HINT = ("lower optim.lr, use train.precision=fp32, or check the data for NaN/inf values "
                  "(a changed optim.lr on this train.out needs train.allow_config_change=true)")


@dataclass
class Position:
    """Where a stage stands: 1-based epoch, steps done in that epoch and in the stage."""
    epoch: int = 1
    iteration: int = 0
    stage_step: int = 0


@dataclass
class Counters:
    global_step: int = 0
    skipped_total: int = 0
    skipped_in_a_row: int = 0

    def as_dict(self) -> dict:
        return {"global_step": self.global_step, "skipped_total": self.skipped_total,
                "skipped_in_a_row": self.skipped_in_a_row}


class StopFlag:
    """SIGTERM/SIGINT set a flag instead of killing the process; a second SIGINT interrupts."""

    def __init__(self):
        self.signal = 0
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclass
class Run:
    cfg: object
    info: dist.DistInfo
    run_dir: Path
    stream_factory: object
    eval_factory: object
    logger: object
    stop: StopFlag
    model: torch.nn.Module = None
    disc: torch.nn.Module = None
    counters: Counters = field(default_factory=Counters)
    last_val: dict = field(default_factory=dict)


def stage_plan(cfg) -> list[str]:
    return (["pretrain"] if cfg.train.pretrain_epochs > 0 else []) + ["main"]


def stage_length(cfg, stage: str) -> tuple[int, int, int]:
    """(epochs, iterations per epoch, step limit) of a stage; max_steps caps smoke runs."""
    epochs = cfg.train.pretrain_epochs if stage == "pretrain" else cfg.train.epochs
    iters = cfg.train.iters_per_epoch
    limit = epochs * iters
    if cfg.train.max_steps > 0:
        limit = min(limit, cfg.train.max_steps)
    return epochs, iters, limit


def default_stream_factory(cfg, stage, rank, world_size, device):
    from murauer_dist.data.loaders import build_train_stream
    return build_train_stream(cfg, stage, rank, world_size, device)


def default_eval_factory(cfg, split, rank, world_size, device):
    from murauer_dist.data.loaders import build_eval_loader
    return build_eval_loader(cfg, split, rank, world_size, device)


def _gather(value) -> list:
    """Every rank's `value` (rank order); a one-element list in a single process."""
    if not dist.is_dist():
        return [value]
    gathered = [None] * dist.world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def write_checkpoint(run: Run, stage: str, engines: dict, stream, position: Position, done: bool) -> None:
    """Collective (every rank contributes RNG and data state); rank 0 writes the file."""
    rng_states = _gather(ckpt.rng_state())
    data_states = _gather(ckpt.plain(stream.state_dict()))
    # collective too: with ZeRO >= 1 the optimizer state is split across ranks
    engine_states = {name: engine.state_dict() for name, engine in engines.items()}
    if not run.info.is_main:
        return
    state = {"format": 1, "stage": stage, "stage_done": done, "epoch": position.epoch,
             "iteration": position.iteration, "stage_step": position.stage_step,
             **run.counters.as_dict(), "world_size": run.info.world_size,
             "model": run.model.state_dict(), "disc": run.disc.state_dict(),
             "model_engine": engine_states["model"], "disc_engine": engine_states["disc"],
             "rng": rng_states, "data": data_states, "config": public_dict(run.cfg)}
    ckpt.save_checkpoint(run.run_dir, state, run.cfg.train.keep_checkpoints, final=done)


def restore_position(run: Run, state: dict, engines: dict) -> tuple[Position, object]:
    """Resume inside a stage: engines, counters, this rank's RNG; returns the position and data state."""
    engines["model"].load_state_dict(state["model_engine"])
    engines["disc"].load_state_dict(state["disc_engine"])
    run.counters = Counters(state["global_step"], state["skipped_total"], state["skipped_in_a_row"])
    same_world = state["world_size"] == run.info.world_size
    rank = run.info.rank
    if same_world:
        ckpt.set_rng_state(state["rng"][rank])
    else:
        torch.manual_seed(derive_seed(run.cfg.train.seed, "rank", rank, "step", state["global_step"]))
        if run.info.is_main:
            print(f"resuming with {run.info.world_size} ranks from a {state['world_size']}-rank checkpoint: "
                  "the data stream restarts the epoch", flush=True)
    position = Position(state["epoch"], state["iteration"], state["stage_step"])
    return position, (state["data"][rank] if same_world else None)


def check_nonfinite(run: Run, result: dict, stage: str) -> None:
    counters = run.counters
    if result["skipped"]:
        counters.skipped_total += 1
        counters.skipped_in_a_row += 1
    else:
        counters.skipped_in_a_row = 0
    limit = run.cfg.train.max_nonfinite_in_a_row
    if counters.skipped_in_a_row > limit:
        terms = {k: v for k, v in result.items() if k.startswith("L_")}
        raise NonFiniteLossError(
            f"{counters.skipped_in_a_row} steps in a row had a non-finite loss (stage {stage}, step "
            f"{counters.global_step}; last terms {terms}); more than train.max_nonfinite_in_a_row={limit}. "
            f"The model has not changed since the last finite step: {NONFINITE_HINT}.")


class IntervalStats:
    """Means of the loss terms and the data-wait share over one logging interval."""

    def __init__(self):
        self.sums, self.steps, self.data_wait, self.started = {}, 0, 0.0, time.perf_counter()

    def add(self, result: dict, data_wait: float) -> None:
        for name, value in result.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1
        self.data_wait += data_wait

    def summary(self, samples_per_step: int, world_size: int) -> dict:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out = {name: value / self.steps for name, value in self.sums.items()}
        out["samples_per_s"] = samples_per_step * self.steps * world_size / elapsed
        out["data_wait_fraction"] = self.data_wait / elapsed
        return out


def _validate_epoch(run: Run, stage: str, epoch: int) -> None:
    if run.cfg.data.val_fraction <= 0:
        return
    loader = run.eval_factory(run.cfg, "val", run.info.rank, run.info.world_size, run.info.device)
    result = validate(run.model, loader, run.info.device, uses_mapping(run.cfg.train.method, stage),
                      run.cfg.model.channels_last)
    run.logger.log(run.counters.global_step, {f"{stage}/{k}": v for k, v in result.items()} | {"epoch": epoch})
    run.last_val = result
    error = result["val_mean_error_mm"]
    if result["val_frames"] > 0 and not math.isfinite(error):
        # Same for both stages, and before the stage's final checkpoint: a broken model is never handed on.
        raise NonFiniteValidationError(
            f"validation after epoch {epoch} of stage {stage} (step {run.counters.global_step}) gave a non-finite "
            f"mean joint error ({error}) on {result['val_frames']:.0f} val frames: the weights or BatchNorm "
            f"statistics hold NaN/inf. No final checkpoint was written for stage {stage}: {NONFINITE_HINT}.")


def run_stage(run: Run, stage: str, resume: dict | None) -> str:
    """Train one stage from its start or from `resume`; returns "done" or "stopped"."""
    from murauer_dist.data.batch import stream_sizes

    cfg, info = run.cfg, run.info
    engines = build_engines(cfg, run.model, run.disc, info.rank, info.world_size, info.device)
    stream = run.stream_factory(cfg, stage, info.rank, info.world_size, info.device)
    position, data_state = (restore_position(run, resume, engines) if resume else (Position(), None))
    epochs, iters, limit = stage_length(cfg, stage)
    samples_per_step = sum(stream_sizes(cfg, stage).values())
    run.model.train()
    run.disc.train()
    if position.iteration == 0:          # resumed at an epoch boundary (a finished stage made longer)
        data_state = None
    while position.epoch <= epochs and position.stage_step < limit:
        if data_state is not None:       # resume: the stream seeks to the saved epoch and batch
            stream.load_state_dict(data_state)
            data_state = None
        else:
            stream.set_epoch(position.epoch)
        batches, stats = iter(stream), IntervalStats()
        while position.iteration < iters and position.stage_step < limit:
            waited = time.perf_counter()
            batch = to_device(next(batches), info.device)
            waited = time.perf_counter() - waited
            # From the position alone, so a resumed run gets the same rates (optim.schedule, train/schedule.py).
            multiplier = stage_multiplier(cfg.optim.schedule, stage, position.epoch, position.stage_step,
                                          epochs * iters, cfg.optim.anneal_fraction)
            for engine in engines.values():
                engine.lr_scale(multiplier)
            result = train_step(engines, batch, cfg, stage)
            run.counters.global_step += 1
            position.iteration += 1
            position.stage_step += 1
            check_nonfinite(run, result, stage)
            stats.add(result, waited)
            if stats.steps >= cfg.train.log_every or position.stage_step == limit:
                metrics = {f"{stage}/{k}": v for k, v in stats.summary(samples_per_step, info.world_size).items()}
                metrics.update({f"{stage}/lr": current_lr(engines["model"]), "epoch": position.epoch,
                                f"{stage}/skipped_total": run.counters.skipped_total})
                run.logger.log(run.counters.global_step, metrics, advance=stats.steps)
                stats = IntervalStats()
            stop = dist.any_true(bool(run.stop.signal), info.device)
            if stop or run.counters.global_step % cfg.train.checkpoint_every == 0:
                write_checkpoint(run, stage, engines, stream, position, done=False)
            if stop:
                return "stopped"
        if position.iteration >= iters:
            _validate_epoch(run, stage, position.epoch)
            position = Position(position.epoch + 1, 0, position.stage_step)
    if position.iteration > 0:          # the step cap ended the stage mid-epoch
        _validate_epoch(run, stage, position.epoch)
    write_checkpoint(run, stage, engines, stream, position, done=True)
    return "done"


def _load_weights(run: Run, state: dict, source: str) -> None:
    try:
        run.model.load_state_dict(state["model"])
        if "disc" in state:
            run.disc.load_state_dict(state["disc"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ckpt.CheckpointError(f"{source}: its weights do not fit this config's model ({first}); use a "
                                   "checkpoint made with the same model.* and data.crop_size") from err


def _read_init_checkpoint(cfg) -> dict:
    """The state named by train.init_checkpoint (a file or a run directory); errors name the key and file."""
    source = cfg.train.init_checkpoint
    try:
        return ckpt.load_checkpoint(ckpt.resolve_checkpoint(source))
    except ckpt.CheckpointError as err:
        raise ckpt.CheckpointError(f"train.init_checkpoint={source}: {err.reason} (give a checkpoint file written "
                                   "by `murauer-dist train`, e.g. RUN/checkpoints/final-pretrain.pt, or its run "
                                   "directory)", err.reason) from None


# ---- the run directory and its config --------------------------------------------------------

def planned_steps(cfg, stage: str) -> int:
    """Steps `stage` trains under `cfg` (0 when the plan skips it)."""
    return stage_length(cfg, stage)[2] if stage in stage_plan(cfg) else 0


def _stage_can_continue(cfg, stage: str, state: dict) -> bool:
    """A checkpoint of `stage` leaves steps to train under `cfg` (a finished stage made longer does)."""
    epochs, _, limit = stage_length(cfg, stage)
    return stage in stage_plan(cfg) and state["epoch"] <= epochs and state["stage_step"] < limit


def _length_problems(old_cfg, cfg, state: dict | None) -> list[str]:
    """Why new stage lengths cannot continue the trained run (empty when they can)."""
    if state is None:
        return []
    here = ckpt.STAGES.index(state["stage"])
    problems = []
    for stage in ckpt.STAGES[:here]:          # finished before the checkpoint's stage began
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


def check_run_config(cfg, run_dir: Path, state: dict | None, is_main: bool) -> None:
    """A run directory and its config never disagree.

    The resolved config is compared with the one in the newest checkpoint and in RUN/config.yaml. Keys
    of config.RESUMABLE_KEYS may differ, and so may stage lengths (config.LENGTH_KEYS) that only let the
    run train on. Any other difference stops with RunConfigError naming the keys, unless
    train.allow_config_change=true. Every accepted difference is appended to RUN/config-changes.yaml
    and config.yaml is rewritten; without differences config.yaml is written once, when the run starts.
    """
    from murauer_dist.tracking.secrets import redact_text
    new = public_dict(cfg)
    stored_yaml = ckpt.read_run_config(run_dir)
    stored = ([state["config"]] if state else []) + ([stored_yaml] if stored_yaml is not None else [])
    if not stored:
        if is_main:
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


def train(cfg, info: dist.DistInfo | None = None, stream_factory=None, eval_factory=None, logger=None) -> dict:
    """Run the stages of `cfg` in cfg.train.out (resuming if it has checkpoints).

    Returns {"status": "done" | "stopped", "global_step", "skipped_total", "val_mean_error_mm",
    "model_checksum"} (the checksum, a sum of all weights, must agree across ranks).
    """
    from murauer_dist.tracking.run_logger import RunLogger

    info = info or dist.DistInfo(0, 1, 0, torch.device("cpu"))
    check_for_training(cfg)
    run_dir = Path(cfg.train.out)
    plan = stage_plan(cfg)
    total = sum(stage_length(cfg, stage)[2] for stage in plan)
    # Everything that can refuse the run comes before anything is written (metrics, wandb, checkpoints).
    latest, state = ckpt.find_resumable(run_dir, map_location=info.device, set_aside=info.is_main)
    init_state = _read_init_checkpoint(cfg) if state is None and cfg.train.init_checkpoint else None
    check_run_config(cfg, run_dir, state, info.is_main)
    own_logger = logger is None
    logger = logger or RunLogger(cfg, run_dir, info.rank, total_steps=total, desc="train")
    run = Run(cfg, info, run_dir, stream_factory or default_stream_factory, eval_factory or default_eval_factory,
              logger, StopFlag())
    torch.manual_seed(cfg.train.seed)                  # the same initial weights on every rank
    run.model = build_model(cfg).to(info.device)
    run.disc = build_discriminator(cfg).to(info.device)
    if cfg.model.sync_bn and info.world_size > 1:
        if info.device.type != "cuda":
            raise ConfigError("model.sync_bn=true needs GPUs (torch's SyncBatchNorm has no CPU kernel); "
                              "leave it false on CPU")
        run.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(run.model)
    if cfg.model.channels_last:
        run.model.to(memory_format=torch.channels_last)
    if cfg.model.compile:
        compile_networks(run.model)
    torch.manual_seed(derive_seed(cfg.train.seed, "rank", info.rank))
    status, failed = "done", True
    try:
        with run.stop:
            status = _run_plan(run, plan, latest, state, init_state)
        failed = False
    finally:
        if own_logger:
            logger.close(exit_code=1 if failed else 0)
    return {"status": status, "global_step": run.counters.global_step,
            "skipped_total": run.counters.skipped_total,
            "val_mean_error_mm": run.last_val.get("val_mean_error_mm", float("nan")),
            "model_checksum": float(sum(p.detach().double().sum() for p in run.model.parameters()))}


def _run_plan(run: Run, plan: list[str], latest: Path | None, state: dict | None, init_state: dict | None) -> str:
    cfg = run.cfg
    if state is not None:
        _load_weights(run, state, str(latest))
        run.counters = Counters(state["global_step"], state["skipped_total"], state["skipped_in_a_row"])
        if run.info.is_main:
            print(f"resuming from {latest} (stage {state['stage']}, step {state['global_step']})", flush=True)
    elif init_state is not None:
        _load_weights(run, init_state, f"train.init_checkpoint={cfg.train.init_checkpoint}")
    for stage in plan:
        resume = None
        if state is not None:
            here, saved = ckpt.STAGES.index(stage), ckpt.STAGES.index(state["stage"])
            if here < saved:
                continue                                     # finished before the restart
            if here == saved:
                if state["stage_done"] and not _stage_can_continue(cfg, stage, state):
                    continue                                 # finished, and not made longer
                resume = state
        if run_stage(run, stage, resume) == "stopped":
            return "stopped"
    return "done"

"""The training loop: owns the cadence (stages, epochs, schedule, validation, logging, checkpoints).

Stage 1 ("pretrain") trains f and p on synthetic data; stage 2 ("main") trains the chosen method
starting from stage 1's weights (or cfg.train.init_checkpoint when stage 1 is off). A run
directory with checkpoints resumes where it stopped. SIGTERM/SIGINT finish the current step,
write a checkpoint and return with status "stopped".
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from murauer_dist import dist
from murauer_dist.data.batch import to_device
from murauer_dist.models import build_discriminator, build_model
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train.fault import maybe_inject_fault
from murauer_dist.train.engine import build_engines, current_lr
from murauer_dist.train.schedule import lr_multiplier
from murauer_dist.train.step import train_step
from murauer_dist.train.validate import validate


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss."""


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


def eval_uses_mapping(cfg, stage: str) -> bool:
    """Real images go through m unless m was never trained (stage 1, synthetic-only method)."""
    return stage == "main" and cfg.train.method != "synth_only"


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
             "rng": rng_states, "data": data_states, "config": run.cfg.to_dict(),
             "eval_mapped": eval_uses_mapping(run.cfg, stage)}
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
        torch.manual_seed(run.cfg.train.seed * 7919 + rank + state["global_step"])
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
            "The model has not changed since the last finite step: lower optim.lr, use train.precision=fp32, "
            "or check the data for NaN/inf values.")


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
    result = validate(run.model, loader, run.info.device, run.cfg.model.channels_last)
    run.logger.log(run.counters.global_step, {f"{stage}/{k}": v for k, v in result.items()} | {"epoch": epoch})
    run.last_val = result


def run_stage(run: Run, stage: str, resume: dict | None) -> str:
    """Train one stage from its start or from `resume`; returns "done" or "stopped"."""
    from murauer_dist.data.batch import stream_sizes

    cfg, info = run.cfg, run.info
    run.model.eval_mapped = eval_uses_mapping(cfg, stage)
    engines = build_engines(cfg, run.model, run.disc, info.rank, info.world_size, info.device)
    stream = run.stream_factory(cfg, stage, info.rank, info.world_size, info.device)
    position, data_state = (restore_position(run, resume, engines) if resume else (Position(), None))
    epochs, iters, limit = stage_length(cfg, stage)
    samples_per_step = sum(stream_sizes(cfg, stage).values())
    run.model.train()
    run.disc.train()
    while position.epoch <= epochs and position.stage_step < limit:
        for engine in engines.values():
            engine.lr_scale(lr_multiplier(position.epoch))
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
            maybe_inject_fault(run.counters.global_step)
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
        raise RuntimeError(f"{source}: weights do not fit this config's model ({err})") from err


def train(cfg, info: dist.DistInfo | None = None, stream_factory=None, eval_factory=None, logger=None) -> dict:
    """Run the stages of `cfg` in cfg.train.out (resuming if it has checkpoints).

    Returns {"status": "done" | "stopped", "global_step", "skipped_total", "val_mean_error_mm",
    "model_checksum"} (the checksum, a sum of all weights, must agree across ranks).
    """
    from murauer_dist.tracking.run_logger import RunLogger

    info = info or dist.DistInfo(0, 1, 0, torch.device("cpu"))
    run_dir = Path(cfg.train.out)
    plan = stage_plan(cfg)
    total = sum(stage_length(cfg, stage)[2] for stage in plan)
    own_logger = logger is None
    logger = logger or RunLogger(cfg, run_dir, info.rank, total_steps=total, desc="train")
    run = Run(cfg, info, run_dir, stream_factory or default_stream_factory, eval_factory or default_eval_factory,
              logger, StopFlag())
    torch.manual_seed(cfg.train.seed)                  # the same initial weights on every rank
    run.model = build_model(cfg).to(info.device)
    run.disc = build_discriminator(cfg).to(info.device)
    if cfg.model.sync_bn and info.world_size > 1:
        if info.device.type != "cuda":
            raise ValueError("model.sync_bn=true needs GPUs (torch's SyncBatchNorm has no CPU kernel); "
                             "leave it false on CPU")
        run.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(run.model)
    if cfg.model.channels_last:
        run.model.to(memory_format=torch.channels_last)
    torch.manual_seed(cfg.train.seed * 7919 + info.rank)
    status = "done"
    try:
        with run.stop:
            status = _run_plan(run, plan)
    finally:
        if own_logger:
            logger.close()
    return {"status": status, "global_step": run.counters.global_step,
            "skipped_total": run.counters.skipped_total,
            "val_mean_error_mm": run.last_val.get("val_mean_error_mm", float("nan")),
            "model_checksum": float(sum(p.detach().double().sum() for p in run.model.parameters()))}


def _run_plan(run: Run, plan: list[str]) -> str:
    cfg = run.cfg
    latest = ckpt.latest_checkpoint(run.run_dir)
    state = ckpt.load_checkpoint(latest, map_location=run.info.device) if latest else None
    if state is not None:
        _load_weights(run, state, str(latest))
        run.counters = Counters(state["global_step"], state["skipped_total"], state["skipped_in_a_row"])
        if run.info.is_main:
            print(f"resuming from {latest} (stage {state['stage']}, step {state['global_step']})", flush=True)
    elif cfg.train.init_checkpoint:
        _load_weights(run, ckpt.load_checkpoint(ckpt.resolve_checkpoint(cfg.train.init_checkpoint)),
                      cfg.train.init_checkpoint)
    for stage in plan:
        resume = None
        if state is not None:
            done_index = ckpt.STAGES.index(state["stage"]) - (0 if state["stage_done"] else 1)
            if ckpt.STAGES.index(stage) <= done_index:
                continue                                     # finished before the restart
            if stage == state["stage"]:
                resume = state
        if run_stage(run, stage, resume) == "stopped":
            return "stopped"
    return "done"

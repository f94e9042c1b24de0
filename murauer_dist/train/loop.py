"""The training loop: owns the cadence (stages, epochs, schedule, validation, logging, checkpoints).

Stage 1 ("pretrain") trains f and p on synthetic data; stage 2 ("main") trains the chosen method
starting from stage 1's weights (or cfg.train.init_checkpoint when stage 1 is off). A run
directory with checkpoints resumes where it stopped, from its newest readable checkpoint, and only
with the config it was trained with (run_config.check_run_config; config_changes.RESUMABLE_KEYS lists what
may change). SIGTERM/SIGINT finish the current step, write a checkpoint and return with status "stopped".

Around the loop: run.py (the live run's state), stages.py (the stage plan and lengths), run_state.py
(what a checkpoint records and how a run resumes from it), run_config.py (the run directory's config),
guards.py (the non-finite guards and their errors).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from murauer_dist import dist
from murauer_dist.config import ConfigError, check_for_training
from murauer_dist.batches.batch import stream_sizes, to_device
from murauer_dist.batches.eval_loader import build_eval_loader
from murauer_dist.batches.loaders import build_train_stream
from murauer_dist.methods import STAGES, uses_mapping
from murauer_dist.models import build_discriminator, build_model, compile_networks
from murauer_dist.seeds import derive_seed
from murauer_dist.tracking.run_logger import RunLogger
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train.engine import current_lr
from murauer_dist.train.engine_factory import build_engines
from murauer_dist.train.guards import NonFiniteLossError, NonFiniteValidationError, check_nonfinite, check_validation
from murauer_dist.train.preflight import check_training_inputs
from murauer_dist.train.run_config import RunConfigError, check_run_config
from murauer_dist.train.run import Counters, Position, Run, StopFlag
from murauer_dist.train.run_state import load_weights, read_init_checkpoint, restore_position, write_checkpoint
from murauer_dist.train.schedule import stage_multiplier
from murauer_dist.train.stages import stage_can_continue, stage_length, stage_plan
from murauer_dist.train.step import train_step
from murauer_dist.train.validate import validate

# write_checkpoint, compile_networks and the default factories are looked up in this module when
# called, so a launcher or test may replace them here (loop.write_checkpoint = ...).
__all__ = ["NonFiniteLossError", "NonFiniteValidationError", "RunConfigError", "Run", "StopFlag",
           "default_eval_factory", "default_stream_factory", "run_stage", "train", "write_checkpoint"]


def default_stream_factory(cfg, stage, rank, world_size, device):
    return build_train_stream(cfg, stage, rank, world_size, device)


def default_eval_factory(cfg, split, rank, world_size, device):
    return build_eval_loader(cfg, split, rank, world_size, device)


class IntervalStats:
    """Means of the loss terms and the data-wait share over one logging interval.

    The step's values stay on the device: each step adds them, stacked, to one running sum (a few
    kernels, no sync); summary() reads them back once per interval.
    """

    def __init__(self):
        self.names: tuple[str, ...] = ()
        self.device_sum: torch.Tensor | None = None
        self.host_sums: dict[str, float] = {}
        self.steps, self.data_wait, self.started = 0, 0.0, time.perf_counter()

    def add(self, result: dict, data_wait: float) -> None:
        tensors = {name: value for name, value in result.items() if isinstance(value, torch.Tensor)}
        # float64, as the Python floats summed before: the logged means are those of the values
        stacked = torch.stack([value.float().reshape(()) for value in tensors.values()]).double()
        if self.device_sum is None:
            self.names, self.device_sum = tuple(tensors), stacked
        elif tuple(tensors) != self.names:
            raise RuntimeError(f"the step's values changed within a logging interval: {self.names} -> {tuple(tensors)}")
        else:
            self.device_sum += stacked
        for name, value in result.items():
            if name not in tensors:
                self.host_sums[name] = self.host_sums.get(name, 0.0) + float(value)
        self.steps += 1
        self.data_wait += data_wait

    def summary(self, samples_per_step: int, world_size: int) -> dict:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        sums = dict(zip(self.names, self.device_sum.tolist())) if self.device_sum is not None else {}
        out = {name: value / self.steps for name, value in {**sums, **self.host_sums}.items()}
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
    check_validation(run, result, stage, epoch)


def run_stage(run: Run, stage: str, resume: dict | None) -> str:
    """Train one stage from its start or from `resume`; returns "done" or "stopped". The stage's
    stream is closed when the stage ends, however it ends (the readers it builds ahead included)."""
    stream = run.stream_factory(run.cfg, stage, run.info.rank, run.info.world_size, run.info.device)
    try:
        return _train_stage(run, stage, resume, stream)
    finally:
        stream.close()


def _train_stage(run: Run, stage: str, resume: dict | None, stream) -> str:
    cfg, info = run.cfg, run.info
    engines = build_engines(cfg, run.model, run.disc, info.rank, info.world_size, info.device, stage)
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
            # Every rank's stop request rides on the step's one agreement (no extra collective, no sync).
            result = train_step(engines, batch, cfg, stage, stop_requested=bool(run.stop.signal))
            stop = result.pop("stop")
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


def train(cfg, info: dist.DistInfo | None = None, stream_factory=None, eval_factory=None, logger=None) -> dict:
    """Run the stages of `cfg` in cfg.train.out (resuming if it has checkpoints).

    Returns {"status": "done" | "stopped", "global_step", "skipped_total", "val_mean_error_mm",
    "model_checksum"} (the checksum, a sum of all weights, must agree across ranks).
    """
    info = info or dist.DistInfo(0, 1, 0, torch.device("cpu"))
    check_for_training(cfg)
    run_dir = Path(cfg.train.out)
    plan = stage_plan(cfg)
    total = sum(stage_length(cfg, stage)[2] for stage in plan)
    # Everything that can refuse the run comes before anything is written (metrics, wandb, checkpoints).
    check_training_inputs(cfg, plan, stream_factory or default_stream_factory)
    # On the CPU, whatever the training device: the RNG states must stay CPU tensors, and
    # load_state_dict moves weights and optimizer state to where their parameters are (Adam's step
    # counters stay on the CPU, as Adam keeps them; on the GPU each would cost a sync per step).
    latest, state = ckpt.find_resumable(run_dir, map_location="cpu", set_aside=info.is_main)
    init_state = read_init_checkpoint(cfg) if state is None and cfg.train.init_checkpoint else None
    check_run_config(cfg, run_dir, state, info.is_main)
    own_logger = logger is None
    logger = logger or RunLogger(cfg, run_dir, info.rank, total_steps=total, desc="train")
    run = Run(cfg, info, run_dir, stream_factory or default_stream_factory, eval_factory or default_eval_factory,
              logger, StopFlag())
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True          # fixed crop and batch shapes: tune once per shape
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
        load_weights(run, state, str(latest))
        run.counters = Counters(state["global_step"], state["skipped_total"], state["skipped_in_a_row"])
        if run.info.is_main:
            print(f"resuming from {latest} (stage {state['stage']}, step {state['global_step']})", flush=True)
    elif init_state is not None:
        load_weights(run, init_state, f"train.init_checkpoint={cfg.train.init_checkpoint}")
    for stage in plan:
        resume = None
        if state is not None:
            here, saved = STAGES.index(stage), STAGES.index(state["stage"])
            if here < saved:
                continue                                     # finished before the restart
            if here == saved:
                if state["stage_done"] and not stage_can_continue(cfg, stage, state):
                    continue                                 # finished, and not made longer
                resume = state
        if run_stage(run, stage, resume) == "stopped":
            return "stopped"
    return "done"

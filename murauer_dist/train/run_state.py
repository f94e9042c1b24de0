"""What a checkpoint records of a live run, and how a run takes it back.

Position and Counters (run.py) are where a run stands; write_checkpoint gathers them with the weights, the
engines' state and every rank's RNG and data position into one checkpoint, restore_position and
load_weights put them back on resume. checkpoint.py handles the files themselves.
"""
from __future__ import annotations

import torch

from murauer_dist import dist
from murauer_dist.config import public_dict
from murauer_dist.seeds import derive_seed
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train.run import Counters, Position, Run


def gather_objects(value) -> list:
    """Every rank's `value` (rank order); a one-element list in a single process."""
    if not dist.is_dist():
        return [value]
    gathered = [None] * dist.world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def write_checkpoint(run: Run, stage: str, engines: dict, stream, position: Position, done: bool) -> None:
    """Collective (every rank contributes RNG and data state); rank 0 writes the file."""
    rng_states = gather_objects(ckpt.rng_state())
    data_states = gather_objects(ckpt.plain(stream.state_dict()))
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


def load_weights(run: Run, state: dict, source: str) -> None:
    try:
        run.model.load_state_dict(state["model"])
        if "disc" in state:
            run.disc.load_state_dict(state["disc"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ckpt.CheckpointError(f"{source}: its weights do not fit this config's model ({first}); use a "
                                   "checkpoint made with the same model.* and data.crop_size") from err


def read_init_checkpoint(cfg) -> dict:
    """The state named by train.init_checkpoint (a file or a run directory); errors name the key and file."""
    source = cfg.train.init_checkpoint
    try:
        return ckpt.load_checkpoint(ckpt.resolve_checkpoint(source))
    except ckpt.CheckpointError as err:
        raise ckpt.CheckpointError(f"train.init_checkpoint={source}: {err.reason} (give a checkpoint file written "
                                   "by `murauer-dist train`, e.g. RUN/checkpoints/final-pretrain.pt, or its run "
                                   "directory)", err.reason) from None

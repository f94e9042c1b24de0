"""Steps shared by `demo` and `experiment`: make what is missing, train in a child process, evaluate.

Training runs as `python -m murauer_dist.cli train ...` in a child process because a training
process ends with os._exit (the clean-exit rule for process groups), and because that is exactly
the command a user or a cluster job would run.

Threads: training and evaluation run torch on the cores that the loader's threads leave (at least
one). torch's OpenMP threads next to DALI's threads on the same cores spin in each other's way: on
the 2-core machine, 200 demo training steps took 36-63 s with one torch thread next to DALI's two
and 243-483 s with two (other load 6.9-8.6). OMP_NUM_THREADS, when set, wins.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from murauer_dist.config import Config, load_config
from murauer_dist.cores import usable_cores
from murauer_dist.frames.datasets import DEFAULT_DATASET
from murauer_dist.errors import UserError


class WorkflowError(UserError):
    """A dataset that does not match the config, or a training child process that failed."""


def _done(path: Path) -> bool:
    return path.is_file()


def _actors_text(split: int | None) -> str:
    return "one actor in every test frame" if split is None else f"the second actor from test frame {split}"


def _check_procedural_record(root: Path, cfg: Config) -> None:
    """A procedural dataset made with other frame counts, seed, realism profile, test actors or layout
    is not silently reused."""
    record = root / "procedural.json"
    if not record.is_file():
        return                                    # a real NYU download or a hand-made layout
    try:
        made = json.loads(record.read_text())
    except json.JSONDecodeError as err:
        raise WorkflowError(f"{record}: not valid JSON ({err.msg}, line {err.lineno}); delete {root} to make the "
                         f"dataset again") from None
    wanted = {"frames": {"train": cfg.data.synth_frames_train, "test": cfg.data.synth_frames_test},
              "seed": cfg.data.synth_seed}
    if {key: made.get(key) for key in wanted} != wanted:
        raise WorkflowError(f"{record}: this dataset was made with frames={made.get('frames')}, seed={made.get('seed')}, "
                         f"but the config asks for frames={wanted['frames']}, seed={wanted['seed']} "
                         f"(data.synth_frames_train/test, data.synth_seed); set data.root (and data.shards) to "
                         f"another folder, or delete {root} to make it again")
    made_realism = made.get("realism", {}).get("name", "default")        # absent: the default profile
    if made_realism != cfg.data.synth_realism:
        raise WorkflowError(f"{record}: this dataset was made with the realism profile {made_realism!r}, but the "
                            f"config says data.synth_realism={cfg.data.synth_realism}; set data.root (and "
                            f"data.shards) to another folder, or delete {root} to make it again")
    # lazy: heavy: scipy (the demo's parent process only checks and launches)
    from murauer_dist.frames.procedural.realism import changed_parameters, profile as realism_profile
    wanted_profile = realism_profile(cfg.data.synth_realism)
    changed = changed_parameters(wanted_profile, made.get("realism"))
    if changed:
        raise WorkflowError(f"{record}: this dataset was made with other parameters of the realism profile "
                            f"{made_realism!r} ({', '.join(changed)} differ from this version's); delete {root} and "
                            f"{cfg.data.shards} to make both again")
    # lazy: heavy: scipy
    from murauer_dist.frames.procedural.generate import GeneratorSettings, model_record
    model = model_record(GeneratorSettings.for_dataset(cfg.data.dataset, realism=wanted_profile))
    stale = [f"{key}.{name}" for key, values in model.items() for name in values
             if (made.get(key) or {}).get(name) != values[name]]
    if stale:
        raise WorkflowError(f"{record}: this dataset was made by a generator with other hand or sensor parameters "
                            f"({', '.join(stale[:4])}{' ...' if len(stale) > 4 else ''} differ from this version's); "
                            f"delete {root} and {cfg.data.shards} to make both again")
    wanted_split = wanted_profile.test_subject_split(cfg.data.synth_frames_test)
    made_split = made.get("test_subject_split")
    if made_split != wanted_split:           # datasets made before the test split had two subjects
        raise WorkflowError(f"{record}: this dataset has {_actors_text(made_split)}, but the generator makes "
                            f"{_actors_text(wanted_split)} (like NYU's test sequence); delete {root} and "
                            f"{cfg.data.shards} to make both again")
    made_dataset = made.get("dataset", DEFAULT_DATASET)
    if made_dataset != cfg.data.dataset:
        raise WorkflowError(f"{record}: this dataset was made as dataset {made_dataset!r}, but the config says "
                            f"data.dataset={cfg.data.dataset}; set data.root (and data.shards) to another folder")


def ensure_dataset(cfg: Config, workers: int = 2) -> None:
    """The procedural NYU-layout dataset at cfg.data.root, generated once."""
    root = Path(cfg.data.root)
    if all(_done(root / split / "joint_data.mat") for split in ("train", "test")):
        _check_procedural_record(root, cfg)
        print(f"[data] using the dataset in {root}")
        return
    from murauer_dist.frames.procedural.generate import synth_data  # lazy: heavy: scipy
    print(f"[data] generating {cfg.data.synth_frames_train} + {cfg.data.synth_frames_test} procedural frames in {root}")
    start = time.perf_counter()
    synth_data(str(root), frames_train=cfg.data.synth_frames_train, frames_test=cfg.data.synth_frames_test,
               seed=cfg.data.synth_seed, workers=workers, overwrite=root.exists(), dataset=cfg.data.dataset,
               realism=cfg.data.synth_realism)
    print(f"[data] done in {time.perf_counter() - start:.0f} s")


def ensure_shards(cfg: Config, preset: str, overrides, workers: int = 2) -> None:
    """Train/val/test shards at cfg.data.shards, written once (the writer itself resumes)."""
    shards = Path(cfg.data.shards)
    if all(_done(shards / split / "manifest.json") for split in ("train", "val", "test")):
        print(f"[shards] using the shards in {shards}")
        return
    from murauer_dist.shards.cli import make_shards_command  # lazy: heavy: torch, webdataset
    print(f"[shards] cropping {cfg.data.root} into {shards}")
    start = time.perf_counter()
    make_shards_command(root=cfg.data.root, out=str(shards), split="all", shard_size=0, workers=workers,
                        preset=preset, verify="", overrides=tuple(overrides))
    print(f"[shards] done in {time.perf_counter() - start:.0f} s")


def torch_threads(cfg: Config) -> int:
    """torch's intra-op threads for training and evaluation: OMP_NUM_THREADS if set, otherwise the
    usable cores less the loader's threads (DALI / DataLoader workers), at least 1."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, usable_cores() - cfg.loader.num_threads)


@contextlib.contextmanager
def torch_thread_count(count: int):
    """torch.set_num_threads(count) in this process, restored afterwards."""
    import torch  # lazy: heavy: torch
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_training(preset: str, overrides, log_file: Path | None = None) -> None:
    """`murauer-dist train PRESET overrides` in a child process with torch_threads(); raises with its exit code."""
    command = [sys.executable, "-m", "murauer_dist.cli", "train", preset, *overrides]
    print("[train] " + " ".join(command[2:]), flush=True)
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(torch_threads(load_config(preset, list(overrides))))}
    if log_file is None:
        result = subprocess.run(command, env=env)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "w") as handle:
            result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        where = f"; its log: {log_file}" if log_file else ""
        raise WorkflowError(f"training failed with exit code {result.returncode}: {' '.join(command[2:])}{where}")
    print(f"[train] done in {time.perf_counter() - start:.0f} s", flush=True)


def evaluate_run(run_dir: Path, out: Path | None = None, domain: str = "real", threads: int | None = None,
                 split: str = "test") -> dict:
    """Evaluate the final model of a run on the test shards (torch with `threads` threads, None: as
    set); returns metrics.json's content.

    domain "synth": the test frames' synthetic twins, written to RUN/eval-synth by default; split "val"
    or "labeled" (its labeled training frames): RUN/eval-val, RUN/eval-labeled(-synth).
    """
    from murauer_dist.eval.evaluate import evaluate_command  # lazy: heavy: torch
    with torch_thread_count(threads) if threads else contextlib.nullcontext():
        return evaluate_command(str(run_dir), out=str(out) if out else "", domain=domain, split=split)

"""What may differ between the config a run directory was trained with and the one it resumes with.

config_changes lists the differences between two config trees; may_change_on_resume and the key lists
below say which of them a resume accepts (train/run_config.py applies them, the experiment uses them to
reuse a finished cell).
"""
from __future__ import annotations

from murauer_dist.config import Config, flatten

# What a run may change when it resumes a run directory (train on a train.out that already has a
# config or checkpoints): how the run is logged, checkpointed, paced or where it lives, never what it
# trains. A name ending in "." covers its section. Anything else stops the run (see train/run_config.py,
# check_run_config) unless train.allow_config_change=true; every change is recorded in
# RUN/config-changes.yaml. localize.* and refiner.* configure hand localisation and its refiner, which
# the pose training never reads.
RESUMABLE_KEYS = ("logging.", "train.out", "train.checkpoint_every", "train.keep_checkpoints", "train.log_every",
                  "train.max_nonfinite_in_a_row", "loader.num_threads", "loader.device", "train.device",
                  "model.compile", "model.channels_last", "localize.", "refiner.")
# Stage lengths: they may change on resume as long as no stage that has already trained is shortened
# and no finished earlier stage would have trained differently (a longer run continues where it stopped).
LENGTH_KEYS = ("train.pretrain_epochs", "train.epochs", "train.max_steps")
# Never compared: the switch that lets a run resume with other values.
UNCOMPARED_KEYS = ("train.allow_config_change",)


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """{key: (old value, new value)} between two config trees; a key one tree lacks counts as its default
    (a run saved before the key existed), keys this version does not know are ignored (among them
    config.RETIRED_KEYS, the NYU rules that moved into the dataset spec)."""
    defaults = flatten(Config().to_dict())
    old_flat, new_flat = flatten(old), flatten(new)
    changes = {}
    for key, default in defaults.items():
        if key in UNCOMPARED_KEYS:
            continue
        before, after = old_flat.get(key, default), new_flat.get(key, default)
        if before != after:
            changes[key] = (before, after)
    return changes


def may_change_on_resume(key: str) -> bool:
    """True for the keys of RESUMABLE_KEYS (see there)."""
    return any(key == name or (name.endswith(".") and key.startswith(name)) for name in RESUMABLE_KEYS)

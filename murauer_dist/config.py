"""The one typed configuration tree: nested dataclasses, YAML presets, dotted overrides.

Every tunable of a run lives here and is read here, nowhere else. A preset is a YAML file in
`configs/` (it may name a `base:` preset it extends); overrides are `section.key=value` strings
converted to the declared field type. An unknown key or an unconvertible value is an error that
names the key and what would have been accepted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from murauer_dist.atomic import atomic_write_text
from murauer_dist.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(UserError, ValueError):
    """A preset or override that does not fit the config tree."""


@dataclass
class DataConfig:
    root: str = "data/procedural"        # NYU-layout folder (real download or `synth-data` output)
    shards: str = "data/shards"          # output of `make-shards`: {train,val,test}/ and labeled/
    crop_size: int = 128                 # network input side (pixels)
    cube_mm: float = 300.0               # edge of the 3D crop cube
    second_actor_cube_mm: float = 249.9  # NYU test frames >= second_actor_from use this cube
    second_actor_from: int = 2441        # 0-based test index where the smaller cube starts (-1: never)
    crop_margin: float = 1.625           # stored crop covers margin x the cube (room for rotation + jitter)
    shard_size: int = 500                # frames per tar shard
    encoding: str = "png"                # stored crops: "png" (16-bit) or "raw" (little-endian uint16)
    view_camera: int = 3                 # target view of view prediction (camera slot)
    swap_side_cameras_before: int = 0    # NYU: train frames < 29116 have cameras 2 and 3 swapped
    val_fraction: float = 0.05           # tail of the train frames held out for validation (never trained on)
    n_labeled: int = 100                 # labeled real frames (first n of the seeded permutation)
    label_seed: int = 123456789          # the original code's global seed; picks the labeled subset
    synth_frames_train: int = 4000       # procedural dataset size (demo / experiment make it if missing)
    synth_frames_test: int = 800
    synth_seed: int = 0


@dataclass
class AugmentConfig:
    enabled: bool = True
    rotation_deg: float = 60.0           # in-plane rotation ~ U[-r, r] about the palm centre
    center_jitter_mm: float = 5.0        # 3D crop-centre offset ~ N(0, s^2) per axis
    depth_noise_mm: float = 5.0          # per-pixel depth noise ~ N(0, s^2)
    cond_noise_mm: float = 15.0          # noise on the decoder's conditioning centre


@dataclass
class LoaderConfig:
    backend: str = "dali"                # "dali" or "reference" (webdataset + DataLoader)
    device: str = "auto"                 # "auto" (gpu when CUDA is present), "gpu" or "cpu"
    num_threads: int = 2                 # DALI CPU threads / reference loader workers per rank
    pairs: int = 21                      # labeled real/synthetic twins per step
    synth: int = 21                      # independent synthetic crops (random camera)
    views: int = 11                      # view-prediction frames (real and synthetic)
    unlabeled_real: int = 11
    unlabeled_synth: int = 11
    eval_batch: int = 64
    shuffle_buffer: int = 512            # samples a reader shuffles among (per rank and stream)
    bad_samples: str = "skip"            # sample missing a member: "skip" (counted) or "error"


@dataclass
class ModelConfig:
    in_features: int = 32                # conv1 filters
    stage_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 256])
    blocks_per_stage: int = 5
    embed_dim: int = 1024                # feature z and the mapping/discriminator width
    decoder_features: int = 64
    num_joints: int = 14
    released_affine_blocks: bool = False  # True: the released code's affine mapping/discriminator
    sync_bn: bool = False                # SyncBatchNorm across ranks (default: per-rank statistics)
    channels_last: bool = False
    compile: bool = False                # torch.compile the model


@dataclass
class LossConfig:
    beta: float = 1.0                    # labeled real pose loss
    lambda_c: float = 0.2                # feature matching on labeled pairs
    lambda_g: float = 1e-4               # view prediction
    lambda_m: float = 1e-5               # adversarial (mapping only)


@dataclass
class OptimConfig:
    lr: float = 3.3e-4
    weight_decay: float = 1e-3           # coupled L2, as torch.optim.Adam does it (not AdamW)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_scaling: str = "none"             # "none", "linear" or "sqrt" in the world size


@dataclass
class TrainConfig:
    method: str = "murauer"              # murauer | real_synth | synth_only | real_only
    seed: int = 1
    out: str = "runs/default"
    pretrain_epochs: int = 150           # stage 1 (synthetic only); 0 skips it
    epochs: int = 120                    # stage 2
    iters_per_epoch: int = 1137
    pretrain_batch: int = 64
    init_checkpoint: str = ""            # start stage 2 (or 1) from this file instead
    checkpoint_every: int = 500          # steps
    keep_checkpoints: int = 2
    max_nonfinite_in_a_row: int = 20
    engine: str = "ddp"                  # "ddp" or "deepspeed"
    deepspeed_config: str = "configs/deepspeed/zero1.json"
    precision: str = "fp32"              # "fp32" or "bf16" (autocast)
    log_every: int = 20
    max_steps: int = 0                   # >0: stop each stage after this many steps (smoke runs)


@dataclass
class LoggingConfig:
    wandb_mode: str = "auto"             # auto | online | offline | disabled
    project: str = "murauer-dist"
    entity: str = ""
    group: str = ""
    name: str = ""
    progress: bool = True
    console_every: int = 10              # not a terminal: one progress line per N logged steps (0: none)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "data.encoding": ("png", "raw"),
    "loader.backend": ("dali", "reference"),
    "loader.device": ("auto", "gpu", "cpu"),
    "loader.bad_samples": ("skip", "error"),
    "optim.lr_scaling": ("none", "linear", "sqrt"),
    "train.method": ("murauer", "real_synth", "synth_only", "real_only"),
    "train.engine": ("ddp", "deepspeed"),
    "train.precision": ("fp32", "bf16"),
    "logging.wandb_mode": ("auto", "online", "offline", "disabled"),
}


def _convert(path: str, value, annotation):
    """Convert `value` (YAML value or override string) to the declared type of `path`."""
    origin = typing.get_origin(annotation)
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, float, str):
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if annotation is int and isinstance(value, str):
                return int(float(value)) if value.strip().lower().count("e") else int(value)
            return annotation(value)
        if origin is list:
            (item_type,) = typing.get_args(annotation)
            items = value
            if isinstance(value, str):
                items = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
            if not isinstance(items, (list, tuple)):
                raise ValueError(value)
            return [_convert(path, item, item_type) for item in items]
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{path}': cannot read {value!r} as {getattr(annotation, '__name__', annotation)}") from None
    raise ConfigError(f"config key '{path}': unsupported field type {annotation}")


def _set(cfg: Config, path: str, value) -> None:
    parts = path.split(".")
    node = cfg
    for depth, name in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node)}
        if name not in fields:
            prefix = ".".join(parts[:depth])
            valid = ", ".join(sorted((prefix + "." if prefix else "") + f for f in fields))
            raise ConfigError(f"unknown config key '{path}'; valid keys here: {valid}")
        if depth == len(parts) - 1:
            hints = typing.get_type_hints(type(node))
            if dataclasses.is_dataclass(hints[name]):
                raise ConfigError(f"config key '{path}' is a section; set one of its keys instead")
            converted = _convert(path, value, hints[name])
            if path in CHOICES and converted not in CHOICES[path]:
                raise ConfigError(f"config key '{path}': {converted!r} is not one of {', '.join(CHOICES[path])}")
            setattr(node, name, converted)
        else:
            node = getattr(node, name)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"unknown config key '{path}': '{'.'.join(parts[:depth + 1])}' is not a section")


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def preset_path(preset: str | os.PathLike) -> Path:
    """A preset name (`demo-cpu`) or a path to a YAML file."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = CONFIG_DIR / f"{preset}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"no preset '{preset}': not a YAML file and not one of {known}")


def _preset_values(preset: str | os.PathLike, seen: tuple = ()) -> dict[str, object]:
    path = preset_path(preset)
    if path in seen:
        raise ConfigError(f"preset {path} extends itself through 'base:'")
    with open(path) as handle:
        tree = yaml.safe_load(handle) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"preset {path}: expected a mapping of sections, got {type(tree).__name__}")
    base = tree.pop("base", None)
    values = _preset_values(base, seen + (path,)) if base else {}
    values.update(_flatten(tree))
    return values


def load_config(preset: str | os.PathLike | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Defaults, then the preset (and its bases), then `key=value` overrides, in that order."""
    cfg = Config()
    if preset:
        source = preset_path(preset)
        for path, value in _preset_values(preset).items():
            try:
                _set(cfg, path, value)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
    for item in overrides:
        if "=" not in str(item):
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, value = str(item).split("=", 1)
        _set(cfg, path.strip().lstrip("-"), value)
    return cfg


def config_from_dict(tree: dict) -> Config:
    """Rebuild a config saved by `save_config` (e.g. from a checkpoint)."""
    cfg = Config()
    for path, value in _flatten(tree).items():
        _set(cfg, path, value)
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def dumps(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def to_json(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)

"""The one typed configuration tree: nested dataclasses, YAML presets, dotted overrides.

Every tunable of a run lives here and is read here, nowhere else. A preset is a YAML file in
`configs/` (it may name a `base:` preset it extends); overrides are `section.key=value` strings
converted to the declared field type. An unknown key or an unconvertible value is an error that
names the key and what would have been accepted.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from murauer_dist.atomic import atomic_write_text
from murauer_dist.frames.datasets import BUILT_IN, DEFAULT_DATASET, DatasetError, dataset_spec
from murauer_dist.errors import UserError
from murauer_dist.methods import METHODS, required_streams, synthetic_needs
from murauer_dist.tracking.secrets import scrub_secrets

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(UserError, ValueError):
    """A preset or override that does not fit the config tree."""


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric field (of every item of a list field); NaN and inf never are."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            return f"{low}, {high}"
        if low:
            return f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}"
        return f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}"


def ranged(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, **bounds):
    """A dataclass field whose valid range (Range(**bounds)) sits next to it, in its metadata."""
    return field(default=default, default_factory=factory, metadata={"range": Range(**bounds)})


@dataclass
class DataConfig:
    root: str = "data/procedural"        # dataset folder (NYU layout: the download or `synth-data` output)
    shards: str = "data/shards"          # output of `make-shards`: {train,val,test}/ and labeled/
    dataset: str = DEFAULT_DATASET       # camera, joints, files and rules of the data: a built-in name
                                         # (configs/datasets/NAME.yaml) or a spec file's path (docs/datasets.md)
    crop_size: int = ranged(128, ge=16)  # network input side (pixels); its minimum: min_crop_size
    cube_mm: float = ranged(300.0, gt=0)  # edge of the 3D crop cube
    crop_margin: float = ranged(1.625, ge=1)  # stored crop covers margin x the cube (room for rotation + jitter)
    shard_size: int = ranged(500, ge=1)  # frames per tar shard
    encoding: str = "png"                # stored crops: "png" (16-bit) or "raw" (little-endian uint16)
    view_camera: int = ranged(3, ge=1, le=3)  # target view of view prediction (camera slot)
    val_fraction: float = ranged(0.05, ge=0, lt=1)  # tail of the train frames held out for validation (never trained on)
    n_labeled: int = ranged(100, ge=1)   # labeled real frames (first n of the seeded permutation); at most the
                                         # train frames of the shards (checked when the labeled subset is made)
    label_seed: int = ranged(123456789, ge=0, le=2 ** 32 - 1)  # the original code's global seed; picks the labeled subset
    synth_frames_train: int = ranged(4000, ge=1)  # procedural dataset size (demo / experiment make it if missing)
    synth_frames_test: int = ranged(800, ge=1)
    synth_seed: int = ranged(0, ge=0, le=2 ** 32 - 1)
    synth_realism: str = "default"       # realism profile of the procedural dataset (frames/procedural/realism.py)


@dataclass
class AugmentConfig:
    enabled: bool = True
    rotation_deg: float = ranged(60.0, ge=0, le=180)  # in-plane rotation ~ U[-r, r] about the palm centre
    center_jitter_mm: float = ranged(5.0, ge=0)  # 3D crop-centre offset ~ N(0, s^2) per axis
    depth_noise_mm: float = ranged(5.0, ge=0)  # per-pixel depth noise ~ N(0, s^2)
    cond_noise_mm: float = ranged(15.0, ge=0)  # noise on the decoder's conditioning centre


@dataclass
class LoaderConfig:
    backend: str = "dali"                # "dali" or "reference" (webdataset + DataLoader)
    device: str = "auto"                 # where DALI runs: "auto" (the training device), "gpu" or "cpu"
    num_threads: int = ranged(2, ge=1)   # DALI CPU threads / reference loader workers per rank
    pairs: int = ranged(21, ge=0)        # labeled real/synthetic twins per step (0 only where methods.required_streams allows)
    synth: int = ranged(21, ge=0)        # independent synthetic crops (random camera)
    views: int = ranged(11, ge=0)        # view-prediction frames (real and synthetic)
    unlabeled_real: int = ranged(11, ge=0)
    unlabeled_synth: int = ranged(11, ge=0)
    eval_batch: int = ranged(64, ge=1)
    shuffle_buffer: int = ranged(512, ge=1)  # samples a reader shuffles among (per rank and stream)
    bad_samples: str = "skip"            # sample missing a member: "skip" (counted) or "error"


@dataclass
class ModelConfig:
    in_features: int = ranged(32, ge=1)  # conv1 filters
    stage_widths: list[int] = ranged(factory=lambda: [64, 128, 256, 256], ge=4)  # multiples of 4, see NETWORK_RULES
    blocks_per_stage: int = ranged(5, ge=1)
    embed_dim: int = ranged(1024, ge=1)  # feature z and the mapping/discriminator width
    decoder_features: int = ranged(64, ge=1)
    num_joints: int = ranged(14, ge=1)   # the dataset's evaluated joints unless set (load_config)
    released_affine_blocks: bool = False  # True: the released code's affine mapping/discriminator
    sync_bn: bool = False                # SyncBatchNorm across ranks (default: per-rank statistics)
    channels_last: bool = False
    compile: bool = False                # torch.compile the model


@dataclass
class LossConfig:
    beta: float = ranged(1.0, ge=0)      # labeled real pose loss
    lambda_c: float = ranged(0.2, ge=0)  # feature matching on labeled pairs
    lambda_g: float = ranged(1e-4, ge=0)  # view prediction
    lambda_m: float = ranged(1e-5, ge=0)  # adversarial (mapping only)


@dataclass
class OptimConfig:
    lr: float = ranged(3.3e-4, gt=0)
    weight_decay: float = ranged(1e-3, ge=0)  # coupled L2, as torch.optim.Adam does it (not AdamW)
    betas: list[float] = ranged(factory=lambda: [0.9, 0.999], ge=0, lt=1)
    lr_scaling: str = "none"             # "none", "linear" or "sqrt" in the world size
    schedule: str = "epoch"              # lr multiplier: "epoch" (the paper's per-epoch values), "progress"
                                         # (the paper's curve over the stage's progress) or "wsd" (warm-up,
                                         # the peak held, the paper's decay in the last anneal_fraction;
                                         # train/schedule.py)
    anneal_fraction: float = ranged(0.25, gt=0, le=1)  # "wsd": the share of a stage spent decaying


@dataclass
class TrainConfig:
    method: str = "murauer"              # a name of murauer_dist/methods.py METHODS (murauer, real_synth, ...)
    device: str = "auto"                 # training device: "auto" (the local GPU when CUDA is present), "gpu", "cpu"
    seed: int = ranged(1, ge=0, le=2 ** 31 - 1)
    out: str = "runs/default"
    pretrain_epochs: int = ranged(150, ge=0)  # stage 1 (synthetic only); 0 skips it
    epochs: int = ranged(120, ge=1)      # stage 2
    iters_per_epoch: int = ranged(1137, ge=1)
    pretrain_batch: int = ranged(64, ge=1)
    init_checkpoint: str = ""            # start stage 2 (or 1) from this file instead
    checkpoint_every: int = ranged(500, ge=1)  # steps
    keep_checkpoints: int = ranged(2, ge=0)  # periodic checkpoints kept (0: all)
    max_nonfinite_in_a_row: int = ranged(20, ge=0)
    engine: str = "ddp"                  # "ddp" or "deepspeed"
    deepspeed_config: str = "configs/deepspeed/zero1.json"
    precision: str = "fp32"              # "fp32" or "bf16" (autocast)
    log_every: int = ranged(20, ge=1)
    max_steps: int = ranged(0, ge=0)     # >0: stop each stage after this many steps (smoke runs)
    allow_config_change: bool = False    # resume a run directory although its config differs (recorded)


@dataclass
class LoggingConfig:
    wandb_mode: str = "auto"             # auto | online | offline | disabled
    project: str = "murauer-dist"
    entity: str = ""
    group: str = ""
    name: str = ""
    progress: bool = True
    console_every: int = ranged(10, ge=0)  # not a terminal: one progress line per N logged steps (0: none)


@dataclass
class LocalizeConfig:
    """Finding the hand in a raw frame (murauer_dist/localize/centre.py): predict, evaluate --centre.
    They read this version's defaults and their localize.KEY=VALUE overrides, never a checkpoint's copy."""
    band_mm: float = ranged(250.0, gt=0)  # the hand: pixels in a cube of this edge whose front face is the nearest object
                                         # (250: a body just behind the hand stays out; 300 lost 4x more frames)
    min_pixels: int = ranged(100, ge=1)  # an object needs this many pixels (smaller ones: speckle, flying pixels)
    edge_mm: float = ranged(30.0, gt=0)  # depth step between neighbours that separates two objects
    surface_mm: float = ranged(150.0, ge=0)  # a plane reaching the image border and wider than this is a surface
                                         # (table, wall), not the hand (0: never remove surfaces)
    iterations: int = ranged(3, ge=1, le=20)  # refiner steps (each re-crops around the last estimate)


@dataclass
class RefinerConfig:
    """The centre refiner (murauer_dist/inference/refiner.py; trained by localize/train_refiner.py) and `murauer-dist train-refiner`."""
    out: str = ""                        # checkpoint file; "": TRAIN_OUT/refiner.pt (train.out)
    steps: int = ranged(6000, ge=1)      # val centre error 11.5 mm after 3000 steps, 9.8 mm after 6000 (demo data)
    batch: int = ranged(64, ge=1)
    lr: float = ranged(1e-3, gt=0)       # Adam, cosine decay to 0 over the steps
    weight_decay: float = ranged(1e-4, ge=0)
    jitter_mm: float = ranged(30.0, gt=0, le=90)  # training offset of the crop centre ~ N(0, s^2) per axis
    fine_jitter_mm: float = ranged(8.0, ge=0, le=90)  # ... for a share fine_share of each batch (0: none)
    fine_share: float = ranged(0.5, ge=0, lt=1)
    rotation_deg: float = ranged(60.0, ge=0, le=180)  # in-plane rotation ~ U[-r, r] (the offset target is invariant)
    scale_range: float = ranged(0.15, ge=0, lt=1)  # hand size: scale the scene in 3D about the palm centre by
                                         # s ~ U[1 - r, 1 + r], so one actor's palm is not learned as the rule
                                         # (0.15: adult hand sizes; costs 0.6 mm on the val split's actor)
    width: int = ranged(8, ge=1)         # channels of the first stage (doubled per stage up to max_width)
    max_width: int = ranged(64, ge=1)
    hidden: int = ranged(256, ge=1)      # fully connected layer before the 3 outputs
    val_every: int = ranged(500, ge=1)   # steps between validations on the val split
    seed: int = ranged(1, ge=0, le=2 ** 31 - 1)


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
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "data.encoding": ("png", "raw"),
    "data.synth_realism": ("default", "nyu-fit"),    # frames/procedural/realism.py PROFILES (a test keeps them in step)
    "loader.backend": ("dali", "reference"),
    "loader.device": ("auto", "gpu", "cpu"),
    "train.device": ("auto", "gpu", "cpu"),
    "loader.bad_samples": ("skip", "error"),
    "optim.lr_scaling": ("none", "linear", "sqrt"),
    "optim.schedule": ("epoch", "progress", "wsd"),    # train/schedule.py SCHEDULES
    "train.method": tuple(METHODS),
    "train.engine": ("ddp", "deepspeed"),
    "train.precision": ("fp32", "bf16"),
    "logging.wandb_mode": ("auto", "online", "offline", "disabled"),
}

def min_crop_size(num_stages: int) -> int:
    """The smallest data.crop_size the network takes: the encoder's max-pool and each of its stride-2
    stages halve the crop and must leave at least 1x1 (models/encoder.py); the view decoder needs 16."""
    return max(16, 2 ** (num_stages + 1))


def _rule_problems(cfg: "Config") -> list[str]:
    """Checks that tie several keys together (single values are checked by their field's Range)."""
    problems = []
    widths = cfg.model.stage_widths
    if not widths:
        problems.append("config key 'model.stage_widths': [] has no stage; give at least one width, e.g. [8,8,16,16]")
    bad = [w for w in widths if w % 4]
    if bad:
        problems.append(f"config key 'model.stage_widths': {bad} are not multiples of 4 (bottleneck expansion)")
    need = min_crop_size(len(widths))
    if cfg.data.crop_size < need:
        problems.append(f"config key 'data.crop_size': {cfg.data.crop_size} is too small for the network: it must be "
                        f">= {need} (the encoder halves it {len(widths) + 1} times: its max-pool and "
                        f"{len(widths)} stride-2 stages, one per model.stage_widths entry)")
    spec = dataset_spec(cfg.data.dataset)
    if cfg.model.num_joints != spec.joints.count:
        problems.append(f"config key 'model.num_joints': {cfg.model.num_joints}, but data.dataset={spec.name} has "
                        f"{spec.joints.count} joints; set model.num_joints={spec.joints.count} or leave it unset")
    if cfg.data.view_camera > spec.num_cameras:
        problems.append(f"config key 'data.view_camera': {cfg.data.view_camera}, but data.dataset={spec.name} has "
                        f"{spec.num_cameras} camera slot(s)")
    terms = METHODS[cfg.train.method].terms
    for stream, term in required_streams(cfg.train.method).items():
        weight = terms[term] if isinstance(terms[term], str) else None       # a cfg.loss field, or fixed
        if getattr(cfg.loader, stream) > 0 or (weight and getattr(cfg.loss, weight) == 0):
            continue
        remedy = f"; or set loss.{weight}=0 to switch the term off" if weight else ""
        problems.append(f"config key 'loader.{stream}': 0, but train.method={cfg.train.method} needs this batch "
                        f"({term} would silently be 0); set loader.{stream} >= 1{remedy}")
    return problems


def check_for_training(cfg: "Config") -> None:
    """What only training needs (make-shards may use other crop sizes): a crop the view decoder can make,
    and synthetic data where the method or stage 1 needs it."""
    size = cfg.data.crop_size
    if size & (size - 1):
        raise ConfigError(f"config key 'data.crop_size': {size} cannot be trained: the view decoder doubles a 4x4 map "
                          f"up to the crop, so it must be a power of two >= 16 (16, 32, 64, 128, ...)")
    spec = dataset_spec(cfg.data.dataset)
    if spec.synthetic:
        return
    needs = synthetic_needs(cfg.train.method)
    if needs:
        raise ConfigError(f"config key 'train.method': {cfg.train.method} needs synthetic data ({needs}), but "
                          f"data.dataset={spec.name} has none (its spec says synthetic: false); train it with "
                          f"train.method=real_only")
    if cfg.train.pretrain_epochs > 0:
        raise ConfigError(f"config key 'train.pretrain_epochs': {cfg.train.pretrain_epochs}, but stage 1 pre-trains on "
                          f"synthetic crops and data.dataset={spec.name} has none (synthetic: false); set "
                          f"train.pretrain_epochs=0")


_NON_FINITE_WORDS = ("nan", "inf", "infinity")


def _check_magnitude(path: str, text: str) -> None:
    """ConfigError for a number written out that no float can hold (1e400 would silently become inf)."""
    try:
        number = float(text)
    except ValueError:
        return                                   # not a number at all: the caller's message says so
    if not math.isfinite(number) and text.strip().lower().lstrip("+-") not in _NON_FINITE_WORDS:
        raise ConfigError(f"config key '{path}': {text.strip()} is too large for a number here (the largest is about "
                          f"1.8e308; it would become {number})")
    mantissa = text.strip().lower().split("e")[0]
    if number == 0 and any(digit in mantissa for digit in "123456789"):
        raise ConfigError(f"config key '{path}': {text.strip()} is too small for a number here (the smallest is about "
                          f"5e-324; it would become 0.0)")


def _convert(path: str, value, annotation):
    """Convert `value` (YAML value or override string) to the declared type of `path`."""
    origin = typing.get_origin(annotation)
    if annotation in (int, float) and isinstance(value, str):
        _check_magnitude(path, value)
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


# Keys that moved out of the config; an old preset or checkpoint that holds them still loads.
RETIRED_KEYS = {
    "data.second_actor_cube_mm": "the dataset spec's second_actor_cube_mm",
    "data.second_actor_from": "the dataset spec's second_actor_from",
    "data.swap_side_cameras_before": "the dataset spec's swap_side_cameras_before",
}


def _check_retired(path: str) -> None:
    """A command-line override of a retired key: a ConfigError that says where the rule went."""
    if path in RETIRED_KEYS:
        raise ConfigError(f"config key '{path}' is now {RETIRED_KEYS[path]} (configs/datasets/*.yaml, "
                          f"docs/datasets.md); make-shards takes it from the dataset. Drop the override (for "
                          f"other rules, write a dataset spec file and set data.dataset=PATH)")


def _without_retired(values: dict, where: str) -> dict:
    """`values` without the retired keys, after one line on stderr naming those it held (an old preset or
    a checkpoint's config still loads)."""
    retired = [key for key in values if key in RETIRED_KEYS]
    if retired:
        print(f"note: {where}: {', '.join(retired)} moved into the dataset spec (configs/datasets/*.yaml, "
              f"docs/datasets.md); the value(s) here are ignored", file=sys.stderr)
    return {key: value for key, value in values.items() if key not in RETIRED_KEYS}


def _dataset_value(path: str, value: str) -> str:
    """data.dataset: a built-in name as it is; a spec file's path made absolute (a run finds it from
    anywhere); anything else a ConfigError naming the key."""
    try:
        dataset_spec(value)
    except (DatasetError, UserError) as err:
        raise ConfigError(f"config key '{path}': {err}") from None
    return value if value in BUILT_IN else str(Path(value).expanduser().resolve())


def _set(cfg: Config, path: str, value, check: bool = True) -> None:
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
            if path == "data.dataset":
                converted = _dataset_value(path, converted)
            if path in CHOICES and converted not in CHOICES[path]:
                raise ConfigError(f"config key '{path}': {converted!r} is not one of {', '.join(CHOICES[path])}")
            valid = fields[name].metadata.get("range")
            if check and valid is not None:
                items = converted if isinstance(converted, list) else [converted]
                if not all(valid.accepts(item) for item in items):
                    where = "valid for every item" if isinstance(converted, list) else "valid"
                    raise ConfigError(f"config key '{path}': {converted!r} is out of range ({where}: "
                                      f"{valid.describe()})")
            setattr(node, name, converted)
        else:
            node = getattr(node, name)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"unknown config key '{path}': '{'.'.join(parts[:depth + 1])}' is not a section")


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
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


def _base_path(base, preset_file: Path) -> Path:
    """A preset's `base:`: a file path (relative to the preset's own folder) or a preset name."""
    text = str(base)
    if text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text:
        path = Path(text).expanduser()
        path = path if path.is_absolute() else preset_file.parent / path
        if not path.is_file():
            raise ConfigError(f"preset {preset_file}: base: {text} does not exist (looked for {path}; a relative "
                              f"base is read from the preset's own folder; a bare name is a preset in configs/)")
        return path
    return preset_path(text)


def _read_preset(path: Path) -> dict:
    try:
        with open(path) as handle:
            tree = yaml.safe_load(handle) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"preset {path}:{where}: YAML syntax error ({problem}); fix the file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"preset {path}: cannot be read ({err})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"preset {path}: expected a mapping of sections, got {type(tree).__name__}")
    return tree


def _preset_values(preset: str | os.PathLike, seen: tuple = ()) -> dict[str, object]:
    path = preset if isinstance(preset, Path) and preset.is_file() else preset_path(preset)
    if path.resolve() in seen:
        raise ConfigError(f"preset {path} extends itself through 'base:'")
    tree = _read_preset(path)
    base = tree.pop("base", None)
    values = _preset_values(_base_path(base, path), seen + (path.resolve(),)) if base else {}
    values.update(flatten(tree))
    return values


def load_config(preset: str | os.PathLike | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Defaults, then the preset (and its bases), then `key=value` overrides, in that order.
    model.num_joints (and data.view_camera, for a dataset of fewer cameras) follow the dataset unless
    the preset or an override sets them."""
    cfg, given = Config(), set()
    if preset:
        source = preset_path(preset)
        for path, value in _without_retired(_preset_values(preset), f"preset {source}").items():
            try:
                _set(cfg, path, value)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
            given.add(path)
    for item in overrides:
        if "=" not in str(item):
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, value = str(item).split("=", 1)
        path = path.strip().lstrip("-")
        _check_retired(path)
        _set(cfg, path, value)
        given.add(path)
    spec = dataset_spec(cfg.data.dataset)
    if "model.num_joints" not in given:
        cfg.model.num_joints = spec.joints.count
    if "data.view_camera" not in given:               # a dataset with fewer cameras: its last one
        cfg.data.view_camera = min(cfg.data.view_camera, spec.num_cameras)
    problems = _rule_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def config_from_dict(tree: dict) -> Config:
    """Rebuild a config saved by `save_config` (e.g. from a checkpoint); ranges are not re-checked, so a
    run made under older rules still loads."""
    cfg = Config()
    for path, value in _without_retired(flatten(tree), "a saved run config").items():
        _set(cfg, path, value, check=False)
    return cfg


def public_dict(cfg: Config) -> dict:
    """The config tree as it may be written anywhere: credentials redacted (tracking/secrets.py)."""
    return scrub_secrets(cfg.to_dict())


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(public_dict(cfg), sort_keys=False))


def dumps(cfg: Config) -> str:
    return yaml.safe_dump(public_dict(cfg), sort_keys=False)

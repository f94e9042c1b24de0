"""DeepSpeed engines for the pose model and the discriminator (cfg.train.engine = "deepspeed").

Each trained network gets its own `deepspeed.initialize` engine with a client `torch.optim.Adam`
(the DeepSpeed fused Adam would JIT-compile a CPU kernel for ~40 s and changes nothing here).
Both engines all-reduce their gradients, so every rank takes the same discriminator step and then
the same model step. The model's adversarial loss must go through `disc.module` with the
discriminator frozen: running the discriminator *engine* inside the model's backward breaks
gradient bookkeeping at ZeRO 0, 2 and 3 ("already been reduced" / "direct backward not supported").

The JSON file (cfg.train.deepspeed_config) holds the ZeRO stage and the other DeepSpeed knobs;
`train_micro_batch_size_per_gpu` is filled in from the stream sizes and bf16 autocast from
cfg.train.precision, so the config cannot disagree with the run.
"""
from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as torch_dist

from murauer_dist.config import CONFIG_DIR, ConfigError
from murauer_dist.batches.batch import stream_sizes
from murauer_dist.dist import LaunchError
from murauer_dist.train.engine import ScheduledLr, make_adam


def resolve_config_path(path: str) -> Path:
    """A DeepSpeed JSON path as given, or relative to the repository root (configs/deepspeed/...)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    in_repo = CONFIG_DIR.parent / path
    if in_repo.is_file():
        return in_repo
    known = ", ".join(sorted(str(p.relative_to(CONFIG_DIR.parent)) for p in (CONFIG_DIR / "deepspeed").glob("*.json")))
    raise ConfigError(f"train.deepspeed_config: no file '{path}' (shipped configs: {known})")


def micro_batch_size(cfg) -> int:
    """Samples per rank and step: the largest per-step total over both stages (DeepSpeed bookkeeping)."""
    return max(sum(stream_sizes(cfg, stage).values()) for stage in ("pretrain", "main"))


def deepspeed_config(cfg) -> dict:
    """The JSON file of cfg.train.deepspeed_config, completed from the run's config."""
    path = resolve_config_path(cfg.train.deepspeed_config)
    try:
        ds_config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(ds_config, dict):
        raise ConfigError(f"{path}: expected a JSON object of DeepSpeed settings")
    for key in ("optimizer", "scheduler", "fp16"):
        if key in ds_config:
            raise ConfigError(f"{path}: key '{key}' is not supported here (optimizer and LR come from cfg.optim; "
                              "fp16 does not run on CPU, use train.precision=bf16)")
    ds_config.pop("train_batch_size", None)  # derived by DeepSpeed from micro batch x world x accumulation
    ds_config["train_micro_batch_size_per_gpu"] = micro_batch_size(cfg)
    ds_config.setdefault("gradient_accumulation_steps", 1)
    if ds_config["gradient_accumulation_steps"] != 1:
        raise ConfigError(f"{path}: gradient_accumulation_steps must be 1 (one engine step per training step)")
    ds_config["torch_autocast"] = _autocast_setting(cfg, path, ds_config)
    return ds_config


def _autocast_setting(cfg, path: Path, ds_config: dict) -> dict:
    """bf16 runs use DeepSpeed's torch_autocast: fp32 master weights and BatchNorm, bf16 matmuls
    and bf16 gradient all-reduce for conv/linear weights (DeepSpeed's "bf16" mode would cast the
    weights to bf16 but leave BatchNorm running statistics in fp32, which CPU batch_norm rejects)."""
    if ds_config.get("bf16", {}).get("enabled", False):
        raise ConfigError(f"{path}: 'bf16.enabled' is not supported for this model (BatchNorm statistics); "
                          "use a *-bf16.json config (torch_autocast) with train.precision=bf16")
    autocast = ds_config.get("torch_autocast", {})
    wants_bf16 = cfg.train.precision == "bf16"
    if autocast.get("enabled", False) and not wants_bf16:
        raise ConfigError(f"{path} enables bf16 autocast but train.precision={cfg.train.precision}: "
                          "set train.precision=bf16 or use the fp32 config of the same ZeRO stage")
    return {**autocast, "enabled": wants_bf16, "dtype": "bfloat16"} if wants_bf16 else {"enabled": False}


class DeepSpeedEngine(ScheduledLr):
    """One network behind `deepspeed.initialize`, with the trainer's engine protocol.

    `.module` is the bare network (use it to run the discriminator inside the model loss),
    calling the object runs the engine's forward, `.backward(loss)` reduces gradients across
    ranks as the ZeRO stage prescribes, `.step()` is the optimizer step plus zeroing the grads,
    `.lr_scale(mult)` sets the learning rate to mult x the base rate. `.state_dict()` holds the
    optimizer state in plain torch.optim.Adam form (whole tensors, whatever the ZeRO stage and
    world size), so checkpoints move between engines and world sizes.
    """

    def __init__(self, network: torch.nn.Module, optimizer: torch.optim.Adam, ds_config: dict):
        import deepspeed  # lazy: optional: deepspeed (and heavy, ~2 s), only for DeepSpeed runs

        self.base_lr = float(optimizer.param_groups[0]["lr"])
        self.multiplier = 1.0
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=network, optimizer=optimizer, config=ds_config,
            dist_init_required=not torch_dist.is_initialized())
        self.client_optimizer = optimizer  # the torch Adam (ZeRO >= 1 runs it on this rank's partition)
        self.zero_stage = self.engine.zero_optimization_stage()

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()  # optimizer step, then zero_grad (one accumulation step per training step)

    def state_dict(self) -> dict:
        """Optimizer + schedule state. With ZeRO >= 1 this gathers partitions: call it on EVERY rank."""
        optimizer = self.client_optimizer.state_dict() if self.zero_stage == 0 else self._gathered_adam_state()
        return {"optimizer": optimizer, "base_lr": self.base_lr, "multiplier": self.multiplier}

    def load_state_dict(self, state: dict) -> None:
        """Restore optimizer + schedule state (every rank). Load the module weights first: with
        ZeRO >= 1 the fp32 master partitions are refreshed from them here."""
        if self.zero_stage == 0:
            self.client_optimizer.load_state_dict(state["optimizer"])
        else:
            self.optimizer.refresh_fp32_params()
            self._scatter_adam_state(state["optimizer"])
        self.base_lr = float(state["base_lr"])
        self.lr_scale(state["multiplier"])

    def _gathered_adam_state(self) -> dict:
        from deepspeed.utils import safe_get_full_optimizer_state  # lazy: optional: deepspeed

        params = list(self.module.parameters())
        partition_state = next(iter(self.client_optimizer.state.values()), None)
        per_param = {}
        if partition_state is not None:  # Adam has stepped at least once
            for index, param in enumerate(params):
                per_param[index] = {"step": partition_state["step"].detach().clone()}
                for key in ("exp_avg", "exp_avg_sq"):
                    per_param[index][key] = safe_get_full_optimizer_state(param, key).detach().float().cpu()
        group = {key: value for key, value in self.client_optimizer.param_groups[0].items() if key != "params"}
        return {"state": per_param, "param_groups": [{**group, "params": list(range(len(params)))}]}

    def _scatter_adam_state(self, optimizer_state: dict) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state  # lazy: optional: deepspeed

        params = list(self.module.parameters())
        saved = optimizer_state["state"]
        if saved and len(saved) != len(params):
            raise ValueError(f"optimizer state holds {len(saved)} parameters, the network has {len(params)}")
        if not saved:
            return
        self._create_adam_state()
        for index, param in enumerate(params):
            entry = saved[index]
            for key in ("exp_avg", "exp_avg_sq"):
                safe_set_full_optimizer_state(param, entry[key].to(param.device, torch.float32), key)
        step = saved[0]["step"]
        for partition_state in self.client_optimizer.state.values():
            partition_state["step"] = step.detach().clone().to(partition_state["step"].device)

    def _create_adam_state(self) -> None:
        """Adam creates its state at the first step; a resumed engine needs it (zeros) before then,
        linked to the parameters' ZeRO fragments so the full tensors can be written into it."""
        if self.client_optimizer.state:
            return
        if self.optimizer.optimizer is not self.client_optimizer:
            raise RuntimeError("DeepSpeed replaced the client optimizer; cannot restore its state")
        for flat_partition in self.optimizer.single_partition_of_fp32_groups:
            self.client_optimizer.state[flat_partition] = {
                "step": torch.tensor(0.0), "exp_avg": torch.zeros_like(flat_partition),
                "exp_avg_sq": torch.zeros_like(flat_partition)}
        self.optimizer._lazy_init_hp_params_optimizer_state()

    def destroy(self) -> None:
        """Remove DeepSpeed's gradient hooks from the module (before wrapping it again)."""
        self.engine.destroy()


def _single_process_environment(world_size: int) -> None:
    """deepspeed.initialize wants LOCAL_RANK and, without a process group, the torchrun variables
    (else it tries MPI discovery); a single plain `python` process gets a one-rank group."""
    if torch_dist.is_initialized() or world_size > 1:
        if "LOCAL_RANK" not in os.environ:
            raise LaunchError("DeepSpeed with several ranks needs LOCAL_RANK in the environment: "
                               "start through torchrun (launch/torchrun.sh) or the deepspeed launcher")
        return
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])


# Engines per wrapped module: the trainer builds fresh engines per stage, and the previous
# engine's gradient hooks must come off the module first.
_LIVE_ENGINES: dict[int, DeepSpeedEngine] = {}


def build_deepspeed_engines(cfg, model: torch.nn.Module, disc: torch.nn.Module, rank: int, world_size: int,
                            device: torch.device, lr: float | None = None) -> dict[str, DeepSpeedEngine]:
    """Engines for the pose model and the discriminator, both data-parallel over all ranks.

    `lr` is the (already world-size-scaled) learning rate; default cfg.optim.lr.
    """
    _single_process_environment(world_size)
    lr = cfg.optim.lr if lr is None else lr
    ds_config = deepspeed_config(cfg)
    engines = {}
    for name, network in (("model", model), ("disc", disc)):
        network = network.to(device)
        previous = _LIVE_ENGINES.pop(id(network), None)
        if previous is not None:
            previous.destroy()
        engines[name] = DeepSpeedEngine(network, make_adam(cfg, network, lr), copy.deepcopy(ds_config))
        _LIVE_ENGINES[id(network)] = engines[name]
    return engines

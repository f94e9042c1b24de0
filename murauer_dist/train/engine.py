"""Engines: one object per trained network that hides how it is wrapped and optimised.

The protocol (PlainEngine, DdpEngine and the DeepSpeed engine all implement it):
    .module            the bare nn.Module (state_dict, eval, frozen calls)
    engine(*a, **k)    forward, through the wrapper (DDP/DeepSpeed) so gradients get reduced
    .backward(loss)    backward pass
    .step()            optimizer step, then zero the gradients
    .lr_scale(mult)    learning rate = base lr * mult (the per-epoch schedule)
    .state_dict() / .load_state_dict(state)   optimizer + schedule state for checkpoints
    .can_undo_step     whether .save_for_undo() before a step and .undo_step() after it take the
                       step back on the device (a step later found non-finite on some rank)
The training step only talks to this protocol, so it is the same for every engine.
engine_factory.build_engines makes the engines of a stage.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from murauer_dist.train.undo import OptimizerUndo


def make_adam(cfg, module: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with coupled L2 weight decay, as the original (not AdamW)."""
    return torch.optim.Adam(module.parameters(), lr=lr, betas=tuple(cfg.optim.betas),
                            weight_decay=cfg.optim.weight_decay)


class ScheduledLr:
    """The learning rate of an engine's optimizer: base rate x the schedule's multiplier."""

    optimizer: torch.optim.Optimizer
    base_lr: float
    multiplier: float
    can_undo_step = False

    def lr_scale(self, multiplier: float) -> None:
        self.multiplier = float(multiplier)
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * self.multiplier


class PlainEngine(ScheduledLr):
    """Single process: the module itself and its optimizer."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, lr: float):
        self.module = module
        self.optimizer = optimizer
        self.base_lr = lr
        self.multiplier = 1.0
        self.lr_scale(1.0)
        self._undo = OptimizerUndo(optimizer)

    can_undo_step = True

    def save_for_undo(self) -> None:
        self._undo.save()

    def undo_step(self) -> None:
        self._undo.undo()

    def _forward(self):
        return self.module

    def __call__(self, *args, **kwargs):
        return self._forward()(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "base_lr": self.base_lr, "multiplier": self.multiplier}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.base_lr = float(state["base_lr"])
        self.lr_scale(state["multiplier"])


class DdpEngine(PlainEngine):
    """torch DDP: gradients are all-reduced during backward; forward must go through __call__.

    find_unused_parameters makes DDP walk the autograd graph after every forward; it is asked for
    only where a stage leaves parameters without a gradient (methods.leaves_parameters_unused:
    stage 1 never touches m and g, ablations drop g, the released affine blocks leave fc1 dead).
    gradient_as_bucket_view: the gradients are views into DDP's all-reduce buckets, one copy fewer.
    Not static_graph: a skipped (non-finite) step runs a forward without a backward.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, lr: float, device: torch.device,
                 find_unused_parameters: bool = True):
        super().__init__(module, optimizer, lr)
        device_ids = [device.index] if device.type == "cuda" else None
        self.wrapped = DistributedDataParallel(module, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters,
                                               gradient_as_bucket_view=True)

    def _forward(self):
        return self.wrapped


def current_lr(engine) -> float:
    return float(engine.optimizer.param_groups[0]["lr"])

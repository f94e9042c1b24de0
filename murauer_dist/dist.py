"""Rank information and collective helpers; every function also works in a single process.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (+ MASTER_ADDR/PORT): then the process group is
initialised (nccl on GPU, gloo on CPU). Without them the run is a single process and the
collectives below are identities.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from murauer_dist.errors import UserError


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class LaunchError(UserError):
    """A launch environment (variables, devices) this process cannot run in."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"environment variable {name}={value!r} is not an integer; unset it or start "
                          "through torchrun (launch/torchrun.sh)") from None


def env_local_rank() -> int:
    """This process's rank on its node, from the launcher's LOCAL_RANK (0 without a launcher)."""
    return _env_int("LOCAL_RANK", 0)


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group from torchrun's environment (or stay a single process)."""
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = env_local_rank()
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "gpu"
    if use_cuda and not torch.cuda.is_available():
        raise LaunchError(f"train.device=gpu, but CUDA is not available here (torch {torch.__version__}); "
                          "use train.device=auto or cpu, or install a CUDA build of torch")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        # After an elastic restart torchrun's store still holds the dead processes' addresses:
        # each attempt gets its own key prefix so the new group never dials them.
        store, _, _ = next(dist.rendezvous("env://", rank, world_size))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        # device_id binds NCCL's communicator to this rank's GPU at once (eager init; no guessing later).
        bound = {"device_id": torch_device} if use_cuda else {}
        dist.init_process_group("nccl" if use_cuda else "gloo", store=dist.PrefixStore(f"attempt-{attempt}", store),
                                rank=rank, world_size=world_size, **bound)
    return DistInfo(rank, world_size, local_rank, torch_device)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place, returned for chaining)."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(tensor).div_(world_size())


def all_true(flag: bool | torch.Tensor, device: torch.device | str = "cpu") -> bool:
    """True on every rank only if `flag` holds on every rank (agreement before a collective step)."""
    value = flag.to(torch.float32) if isinstance(flag, torch.Tensor) else torch.tensor(float(flag))
    value = value.reshape(1).to(device)
    if is_dist():
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def agree(ok: torch.Tensor, stop: bool) -> tuple[bool, bool]:
    """(`ok` holds on every rank, some rank asked to `stop`) in one all-reduce and one read-back.

    The training step's only host sync: `ok` (a device tensor) is never read alone, and the stop
    request rides along (torch.full writes it on the device without a host copy).
    """
    flags = torch.stack([ok.reshape(()).to(torch.float32),
                         torch.full((), 0.0 if stop else 1.0, device=ok.device)])
    if is_dist():
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    all_ok, none_stops = flags.tolist()
    return all_ok > 0.5, none_stops < 0.5


def clean_exit(code: int = 0) -> None:
    """End the process: barrier, destroy the group, flush, os._exit (avoids the gloo exit abort)."""
    if is_dist():
        try:
            if code == 0:
                dist.barrier()
        finally:
            dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""A CUDA step's device mistakes and costs, visible on a CPU-only machine: run it on `meta`.

`meta` is a device every torch build has. Like CUDA, and unlike the CPU, it refuses a CPU tensor in a
non-pointwise op (torch.stack, cat, ...: "Tensor on device cpu is not on the expected device meta")
and it refuses torch.set_rng_state. Unlike CUDA it holds no values, so every read of a device value
by the host (item, bool, float, tolist, .cpu(), mask indexing, nonzero) is exactly the set of places
where a CUDA step would stop and wait for the GPU: a host sync.

HostSyncCounter is a dispatch mode that records each such read (with where it happened in the
package) and answers it with a stand-in value, so the run goes on and the test can count them all:
scalars read as 1 (flags "true", never a stop), copies to the CPU as ones, masks as all-selected.
Reads of CPU tensors (Adam's step counters, which Adam keeps on the CPU on a GPU too) are not syncs
and are not counted. OpCounter counts the operators a step dispatches, and which of them launch a
kernel on a GPU (not views, detaches and allocations). Used by tests/test_device.py and
`murauer-dist bench step-cost`.
"""
from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_MASK_OPS = {aten.nonzero.default, aten.masked_select.default, aten.argwhere.default}


def _on_meta(args) -> bool:
    return any(isinstance(a, torch.Tensor) and a.device.type == "meta" for a in args)


def _where() -> str:
    """The innermost frame of the project's code that asked for the value."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "murauer_dist" in frame.filename and "meta_audit" not in frame.filename:
            return f"{frame.filename.split('murauer_dist')[-1].lstrip('/')}:{frame.lineno} {frame.line}"
    return "outside murauer_dist"


class HostSyncCounter(TorchDispatchMode):
    """Counts the host reads of `meta` tensors (see the module doc); .syncs lists (op, where)."""

    def __init__(self):
        super().__init__()
        self.syncs: list[tuple[str, str]] = []

    def count(self) -> int:
        return len(self.syncs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and _on_meta(args):
            self.syncs.append(("item", _where()))
            return True if args[0].dtype == torch.bool else (1.0 if args[0].dtype.is_floating_point else 1)
        if func is aten._to_copy.default and _on_meta(args) and torch.device(kwargs.get("device") or "meta").type == "cpu":
            self.syncs.append(("copy to cpu", _where()))
            return torch.ones(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        if func is aten.index.Tensor and _on_meta(args) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.syncs.append(("mask indexing", _where()))
            return args[0]
        if func in _MASK_OPS and _on_meta(args):
            self.syncs.append((str(func), _where()))
            return torch.zeros(0, args[0].dim(), dtype=torch.long, device="meta")
        return func(*args, **kwargs)


# Operators that only make views, detach, allocate or read a CPU scalar: no kernel runs on a GPU.
NO_KERNEL = {"aten.detach", "aten.view", "aten._unsafe_view", "aten.t", "aten.expand", "aten.as_strided",
             "aten.empty", "aten.empty_like", "aten.new_empty", "aten.empty_strided", "aten._local_scalar_dense",
             "aten.reshape", "aten.squeeze", "aten.unsqueeze", "aten.alias", "aten.split_with_sizes", "aten.split",
             "aten.slice", "aten.select", "aten.permute", "aten.transpose", "aten.lift_fresh", "aten.unbind",
             "aten.set_", "aten.resize_"}


class OpCounter(TorchDispatchMode):
    """Operators dispatched while active, by name (.counts); .kernels() = those that launch a kernel.
    With `device` ("meta"), only the operators that touch a tensor on it or create one there."""

    def __init__(self, device: str | None = None):
        super().__init__()
        self.device = device
        self.counts: dict[str, int] = {}

    def kernels(self) -> int:
        return sum(n for name, n in self.counts.items() if name not in NO_KERNEL)

    def _touches_device(self, args, kwargs) -> bool:
        if self.device is None:
            return True
        target = kwargs.get("device")
        return (target is not None and torch.device(target).type == self.device) or any(
            isinstance(a, torch.Tensor) and a.device.type == self.device for a in (*args, *kwargs.values()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._touches_device(args, kwargs):
            name = str(func.overloadpacket)
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **kwargs)

"""Taking back one step on the device: what a skipped step (a non-finite loss on some rank) changed.

The step decides whether it is kept only at its end, with its one host sync (train/step.py), after
the discriminator has already stepped and the model's forward passes have moved the BatchNorm
running statistics. Both are put back from copies taken at the start of the step: preallocated
tensors refreshed with one multi-tensor copy each, so keeping the option costs no host sync and no
allocation per step.
"""
from __future__ import annotations

import torch


class TensorSnapshot:
    """Copies of a fixed list of tensors; take() and restore() are one multi-tensor copy each."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.tensors = list(tensors)
        with torch.no_grad():
            self.saved = [tensor.detach().clone() for tensor in self.tensors]

    def holds(self, tensors: list[torch.Tensor]) -> bool:
        """Whether this snapshot is of exactly these tensor objects (a moved module has new ones)."""
        return len(tensors) == len(self.tensors) and all(a is b for a, b in zip(tensors, self.tensors))

    @torch.no_grad()
    def take(self) -> None:
        if self.tensors:
            torch._foreach_copy_(self.saved, self.tensors)

    @torch.no_grad()
    def restore(self) -> None:
        if self.tensors:
            torch._foreach_copy_(self.tensors, self.saved)


def snapshot_of(tensors: list[torch.Tensor], previous: TensorSnapshot | None) -> TensorSnapshot:
    """`previous` when it still holds these tensors, else a new snapshot of them (allocated once)."""
    return previous if previous is not None and previous.holds(tensors) else TensorSnapshot(tensors)


class OptimizerUndo:
    """Puts a torch optimizer and its parameters back to before its latest step.

    Parameters and every tensor of the optimizer state are copied before the step; the step counters
    (Adam's `step`, a CPU tensor unless the optimizer is capturable) go back by one. Before the
    optimizer's first step it has no state, and undoing that step removes the state it created.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.snapshot: TensorSnapshot | None = None
        self.had_state = False

    def _params(self) -> list[torch.Tensor]:
        return [param for group in self.optimizer.param_groups for param in group["params"]]

    def _tensors(self) -> list[torch.Tensor]:
        params = self._params()
        state = [self.optimizer.state[param] for param in params if param in self.optimizer.state]
        return params + [value for entry in state for key, value in sorted(entry.items())
                         if key != "step" and torch.is_tensor(value)]

    def save(self) -> None:
        self.had_state = any(param in self.optimizer.state for param in self._params())
        self.snapshot = snapshot_of(self._tensors(), self.snapshot)
        self.snapshot.take()

    def undo(self) -> None:
        if self.snapshot is None:
            raise RuntimeError("OptimizerUndo.undo() without a save() before the step")
        self.snapshot.restore()
        for param in self._params():
            if not self.had_state:
                self.optimizer.state.pop(param, None)
                continue
            step = self.optimizer.state.get(param, {}).get("step")
            if torch.is_tensor(step):
                step.sub_(1)
            elif step is not None:
                self.optimizer.state[param]["step"] = step - 1

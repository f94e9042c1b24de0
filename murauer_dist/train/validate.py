"""Validation: mean joint error in mm on the held-out split, summed over all ranks."""
from __future__ import annotations

import torch

from murauer_dist import dist
from murauer_dist.batches.batch import to_device


def joint_error_mm(pose: torch.Tensor, target: torch.Tensor, cube_mm: torch.Tensor) -> torch.Tensor:
    """Per-frame mean over joints of the Euclidean distance in mm (normalised units x cube/2)."""
    distance = (pose.float() - target.float()).norm(dim=-1)          # (B, J), normalised
    return distance.mean(dim=1) * cube_mm.float() / 2.0


@torch.no_grad()
def validate(model: torch.nn.Module, loader, device: torch.device, mapped: bool,
             channels_last: bool = False) -> dict[str, float]:
    """{"val_mean_error_mm", "val_frames"} over every rank's share of the split (nan when empty).

    mapped: run the real images through m (methods.uses_mapping of the method and stage).
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        batch = to_device(batch, device)
        depth = batch["depth"]
        if channels_last:
            depth = depth.contiguous(memory_format=torch.channels_last)
        errors = joint_error_mm(model.predict(depth, mapped), batch["target"], batch["cube_mm"])
        totals += torch.stack([errors.double().sum(), torch.tensor(float(errors.numel()), device=device,
                                                                    dtype=torch.float64)])
    model.train(was_training)
    dist.all_reduce_sum(totals)
    frames = float(totals[1])
    return {"val_mean_error_mm": float(totals[0]) / frames if frames else float("nan"), "val_frames": frames}

"""The batch contract between the loaders (DALI and reference) and the trainer.

A training batch is a dict of streams, each a dict of named tensors (B = that stream's batch size,
H = W = data.crop_size, J = model.num_joints):

    pairs            labeled real/synthetic twins, camera 1, identical augmentation draw
        real_depth (B,1,H,W) float32 in [-1,1]; synth_depth (B,1,H,W); target (B,J,3) in [-1,1];
        center_xyz (B,3) mm (jittered crop centre); cube_mm (B,); frame (B,) int64
    synth            independent synthetic crops, random camera
        depth (B,1,H,W); target (B,J,3); center_xyz (B,3); cube_mm (B,); frame (B,)
    views            view prediction: camera-1 input and the target view, both domains, no rotation
        real_depth, synth_depth (B,1,H,W) inputs; real_view, synth_view (B,1,H,W) targets (no jitter);
        real_cond, synth_cond (B,3) normalised noisy input centre; target (B,J,3); labeled (B,) bool;
        frame (B,)
    unlabeled_real   camera-1 real crops, any train frame: depth (B,1,H,W); frame (B,)
    unlabeled_synth  camera-1 synthetic crops, any train frame: depth (B,1,H,W); frame (B,)

An evaluation batch (val/test, camera 1, real, no augmentation) is one flat dict:
    depth (B,1,H,W); target (B,J,3); center_xyz (B,3); cube_mm (B,); frame (B,)

Streams whose batch size is 0 in the config are absent. The pre-training stage uses only `synth`.
"""
from __future__ import annotations

import torch

from murauer_dist.methods import FIVE_STREAMS, method_for

STREAMS = FIVE_STREAMS          # every stream a step can draw, in order (the method table's list)


def stream_sizes(cfg, stage: str) -> dict[str, int]:
    """Per-rank batch size of every stream for `stage` ("pretrain" or "main"); 0 = not drawn.

    The streams a stage draws are its method's (murauer_dist/methods.py); stage 1 is synthetic only.
    """
    drawn = method_for(cfg.train.method, stage).streams
    if stage == "pretrain":
        return {name: (cfg.train.pretrain_batch if name in drawn else 0) for name in STREAMS}
    return {name: (int(getattr(cfg.loader, name)) if name in drawn else 0) for name in STREAMS}


def _depth(generator, batch: int, size: int) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=generator) * 2.0 - 1.0


def fake_batch(sizes: dict[str, int], crop_size: int, num_joints: int, seed: int = 0,
               labeled_fraction: float = 0.3) -> dict[str, dict[str, torch.Tensor]]:
    """Random tensors with the contract's names and shapes (for model tests and step benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    batch: dict[str, dict[str, torch.Tensor]] = {}

    def target(n):
        return torch.rand(n, num_joints, 3, generator=gen) * 2.0 - 1.0

    def common(n):
        return {"center_xyz": torch.tensor([[0.0, 0.0, 700.0]]).repeat(n, 1),
                "cube_mm": torch.full((n,), 300.0), "frame": torch.arange(n)}

    if sizes.get("pairs", 0):
        n = sizes["pairs"]
        batch["pairs"] = {"real_depth": _depth(gen, n, crop_size), "synth_depth": _depth(gen, n, crop_size),
                          "target": target(n), **common(n)}
    if sizes.get("synth", 0):
        n = sizes["synth"]
        batch["synth"] = {"depth": _depth(gen, n, crop_size), "target": target(n), **common(n)}
    if sizes.get("views", 0):
        n = sizes["views"]
        batch["views"] = {"real_depth": _depth(gen, n, crop_size), "synth_depth": _depth(gen, n, crop_size),
                          "real_view": _depth(gen, n, crop_size), "synth_view": _depth(gen, n, crop_size),
                          "real_cond": torch.rand(n, 3, generator=gen) * 2 - 1,
                          "synth_cond": torch.rand(n, 3, generator=gen) * 2 - 1,
                          "target": target(n), "frame": torch.arange(n),
                          "labeled": torch.rand(n, generator=gen) < labeled_fraction}
    for name in ("unlabeled_real", "unlabeled_synth"):
        if sizes.get(name, 0):
            batch[name] = {"depth": _depth(gen, sizes[name], crop_size), "frame": torch.arange(sizes[name])}
    return batch


def to_device(batch: dict, device: torch.device | str, non_blocking: bool = True) -> dict:
    """Move a (nested) dict of tensors to `device`."""
    return {key: to_device(value, device, non_blocking) if isinstance(value, dict)
            else value.to(device, non_blocking=non_blocking) for key, value in batch.items()}

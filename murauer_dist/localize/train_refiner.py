"""`murauer-dist train-refiner PRESET [key=value ...]`: train the centre refiner on the shards.

Data: the real camera-1 crops of the train shards through the reference loader's `unlabeled_real`
stream (reference_pipeline.py: the stored 1.625x-margin crop warped by one affine map, augment.py), with the
stream's centre jitter set to refiner.jitter_mm (N(0, s^2) per axis, in 3D: the crop moves and
scales with the jittered centre, and depth is normalised around it) for a share 1 - refiner.fine_share
of each batch and to refiner.fine_jitter_mm for the rest (one reader per scale: coarse offsets to
learn the way from a centre of mass, fine ones for the last millimetres of later iterations),
rotation refiner.rotation_deg and the usual depth noise. With refiner.scale_range r > 0 each training
crop then shows the hand scaled in 3D about the palm centre by s ~ U[1 - r, 1 + r] (`scale_about_palm`:
DeepPrior++'s scale augmentation, so that the offset from the visible surface to the palm centre is
learned relative to the hand's size instead of one actor's palm thickness). The target is the offset
from the jittered centre back to the stored crop centre, the ground-truth palm centre: -jitter / (cube/2).
Every train frame's palm centre is used, as the protocol already does to crop every (also unlabeled) frame.

Recipe: Adam (refiner.lr, refiner.weight_decay), cosine decay to 0 over refiner.steps, batches of
refiner.batch, mean squared error on the normalised offset. Every refiner.val_every steps and at
the end: the centre error in mm on up to VAL_SAMPLES frames of the val split (fixed draws) before
and after one refiner step. The checkpoint (refiner.py) goes to refiner.out, default
TRAIN_OUT/refiner.pt.
"""
from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from murauer_dist.config import load_config, public_dict
from murauer_dist.batches import streams
from murauer_dist.batches.augment import CUBE, SCALE, U_C, V_C, Z_C, jittered_center
from murauer_dist.batches.loaders import DataSources
from murauer_dist.batches.reference_backend import ReferenceStreamBackend
from murauer_dist.batches.reference_pipeline import RawBatches, raw_loader
from murauer_dist.shards import read as shard_read
from murauer_dist.errors import UserError
from murauer_dist.inference.refiner import build_refiner, save_refiner
from murauer_dist.paths import output_file
from murauer_dist.seeds import derive_seed
from murauer_dist.tracking.progress import progress

STREAM = "unlabeled_real"          # camera-1 real crops with crop geometry and the jitter drawn
VAL_SAMPLES = 512


def refiner_out(cfg) -> Path:
    return Path(cfg.refiner.out) if cfg.refiner.out else Path(cfg.train.out) / "refiner.pt"


def stream_config(cfg, jitter_mm: float | None = None, threads: int | None = None):
    """The config the reference loader reads: its augmentation set to the refiner's draws."""
    data_cfg = copy.deepcopy(cfg)
    data_cfg.augment.enabled = True
    data_cfg.augment.center_jitter_mm = float(cfg.refiner.jitter_mm if jitter_mm is None else jitter_mm)
    data_cfg.augment.rotation_deg = float(cfg.refiner.rotation_deg)
    data_cfg.loader.backend = "reference"
    if threads is not None:
        data_cfg.loader.num_threads = threads
    return data_cfg


def jitter_scales(cfg) -> list[tuple[float, int]]:
    """(jitter std mm, samples per batch) of the batch's parts: the coarse and the fine offsets."""
    r = cfg.refiner
    fine = int(round(r.batch * r.fine_share)) if r.fine_jitter_mm > 0 else 0
    return [(float(jitter), count) for jitter, count in ((r.jitter_mm, r.batch - fine), (r.fine_jitter_mm, fine))
            if count > 0]


def targets(raw: dict) -> torch.Tensor:
    """The offset from the jittered centre to the palm centre, in units of cube/2: (B, 3)."""
    half = raw["crop"][:, 0, CUBE].double() / 2.0
    return (-raw["jitter"].double() / half[:, None]).float()


def palm_pixels(raw: dict, camera, crop_size: int) -> torch.Tensor:
    """(B, 2) network-crop pixel coordinates (x, y; pixel centres at i + 0.5) of the palm centre.

    augment.py maps network pixel x_net to stored pixel S/2 + s R^T (c' - c) + k R^T (x_net - C/2), and
    the palm is the stored crop's centre S/2: x_net = C/2 - (s / k) (c' - c), whatever the rotation."""
    crop = raw["crop"][:, 0].double()
    centre = jittered_center(crop, raw["jitter"].double(), camera)
    k = crop[:, Z_C] / centre["xyz"][:, 2]
    offset = centre["uv"] - crop[:, [U_C, V_C]]
    return crop_size / 2.0 - (crop[:, SCALE] / k)[:, None] * offset


def scale_about_palm(depth: torch.Tensor, palm_px: torch.Tensor, palm_depth: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """The normalised crops (B, 1, C, C) with the scene scaled by `scale` (B,) in 3D about the palm centre.

    palm_px (B, 2): the palm centre in crop pixels (`palm_pixels`); palm_depth (B,): its normalised depth
    (the target's z). Pixels are resampled about palm_px (nearest neighbour, as the loader warps; outside
    -> background); foreground depths d become palm_depth + s (d - palm_depth); background stays +1 and
    what leaves the cube becomes +1. The palm centre does not move, so the offset target is unchanged.
    Weak perspective: exact for points at the palm's depth, off by (s - 1) dz / z for the rest."""
    batch, _, height, width = depth.shape
    s = scale.to(torch.float64).reshape(batch, 1, 1)
    centers = torch.arange(width, dtype=torch.float64) + 0.5
    grid_y, grid_x = torch.meshgrid(centers, centers, indexing="ij")
    px, py = palm_px[:, 0].double().reshape(batch, 1, 1), palm_px[:, 1].double().reshape(batch, 1, 1)
    col = torch.floor(px + (grid_x - px) / s).long()
    row = torch.floor(py + (grid_y - py) / s).long()
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).reshape(batch, -1)
    values = torch.gather(depth.reshape(batch, -1), 1, flat).reshape(batch, height, width)
    values = torch.where(inside, values, torch.ones((), dtype=values.dtype))
    z = palm_depth.to(values.dtype).reshape(batch, 1, 1)
    scaled = z + s.to(values.dtype) * (values - z)
    keep = (values < 1.0) & (scaled.abs() <= 1.0)
    return torch.where(keep, scaled, torch.ones((), dtype=values.dtype))[:, None]


def to_batch(raw: dict, camera) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised depth (B,1,C,C), target (B,3), half cube (B,) mm) of a raw unlabeled_real batch."""
    depth = streams.finish(STREAM, raw, camera)["depth"]
    return depth, targets(raw), raw["crop"][:, 0, CUBE].double() / 2.0


class RefinerData:
    """Endless training batches and fixed validation batches (reference loader, unlabeled_real stream)."""

    def __init__(self, cfg):
        self.cfg = stream_config(cfg)
        self.sources = DataSources(self.cfg, need_labeled=False)
        self.camera = self.sources.spec.camera
        samples = self.sources.samples("train", STREAM)
        scales = jitter_scales(cfg)
        threads = max(1, cfg.loader.num_threads // len(scales))
        self.readers = [ReferenceStreamBackend(stream_config(cfg, jitter, threads), STREAM, count, {"main": samples},
                                              {"main": (0, 1)}, derive_seed(cfg.refiner.seed, "refiner", STREAM, jitter),
                                              0.0, self.sources.stored, self.sources.layout)
                        for jitter, count in scales]
        self.val_samples = self._val_samples()
        self.scale_range = float(cfg.refiner.scale_range)
        self.crop_size = int(cfg.data.crop_size)
        self.generator = torch.Generator().manual_seed(derive_seed(cfg.refiner.seed, "refiner", "scale"))

    def _val_samples(self) -> list:
        try:
            tars = shard_read.split_tars(self.cfg.data.shards, "val")
        except shard_read.ShardError:
            return []
        members = list(streams.needed_members(STREAM, self.cfg.data.encoding, self.sources.layout,
                                              self.cfg.data.view_camera).values())
        return shard_read.complete_samples(tars, members, self.cfg.loader.bad_samples)[:VAL_SAMPLES]

    def next(self):
        parts = []
        for reader in self.readers:
            raw = reader.next_raw()
            depth, target, half = to_batch(raw, self.camera)
            if self.scale_range > 0:
                scale = 1.0 + (torch.rand(len(depth), generator=self.generator, dtype=torch.float64) * 2.0 - 1.0) \
                    * self.scale_range
                depth = scale_about_palm(depth, palm_pixels(raw, self.camera, self.crop_size), target[:, 2], scale)
            parts.append((depth, target, half))
        return tuple(torch.cat(tensors) for tensors in zip(*parts))

    def validation(self):
        """The val batches, the same draws every time (fixed seed, no shuffling)."""
        if not self.val_samples:
            return
        dataset = RawBatches(self.cfg, STREAM, self.cfg.loader.eval_batch, {"main": self.val_samples},
                             self.sources.stored, self.sources.layout, seed=derive_seed(self.cfg.refiner.seed, "val"),
                             repeat=False)
        for raw in raw_loader(dataset, 0):
            yield to_batch(raw, self.camera)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


@torch.no_grad()
def validate(model, data: RefinerData, device) -> dict:
    """Centre error (mm) on the val frames before and after one refiner step, and the val loss."""
    was_training = model.training
    model.eval()
    before, after, losses = [], [], []
    for depth, target, half in data.validation():
        pred = model(depth.to(device)).double().cpu()
        losses.append(float(((pred - target.double()) ** 2).mean()))
        before.append((target.double() * half[:, None]).norm(dim=1))
        after.append(((target.double() - pred) * half[:, None]).norm(dim=1))
    model.train(was_training)
    if not before:
        return {}
    before, after = torch.cat(before).numpy(), torch.cat(after).numpy()
    return {"val_frames": int(len(before)), "val_loss": float(np.mean(losses)),
            "val_centre_error_before_mm": float(before.mean()), "val_centre_error_after_mm": float(after.mean()),
            "val_centre_error_after_median_mm": float(np.median(after))}


def train_refiner(cfg, log=print) -> dict:
    """Train the refiner of `cfg`; write its checkpoint; return {path, steps, losses, metrics}."""
    r = cfg.refiner
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(derive_seed(r.seed, "refiner", "init"))
    out = output_file(refiner_out(cfg), "refiner.out")
    data = RefinerData(cfg)
    model = build_refiner(cfg).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / r.steps)))
    jitters = " + ".join(f"{count} at {jitter:g} mm" for jitter, count in jitter_scales(cfg))
    log(f"train-refiner: {r.steps} steps of {r.batch} real crops ({cfg.data.crop_size}x{cfg.data.crop_size}, cube "
        f"{cfg.data.cube_mm:g} mm, centre jitter {jitters}, rotation {r.rotation_deg:g} deg, hand scale "
        f"+-{r.scale_range:g}) from "
        f"{cfg.data.shards}, device {device}; checkpoint {out}")
    losses: list[float] = []
    metrics: dict = {}
    start = time.monotonic()
    threads = torch.get_num_threads()
    if device.type == "cpu":      # the loader's worker processes share the cores (measured 3x faster on 2 cores)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - cfg.loader.num_threads))
    try:
        for step in progress(range(1, r.steps + 1), desc="train-refiner", enabled=cfg.logging.progress):
            depth, target, _ = data.next()
            pred = model(depth.to(device))
            loss = torch.nn.functional.mse_loss(pred, target.to(device))
            if not torch.isfinite(loss):
                raise UserError(f"train-refiner: the loss became {loss.item()} at step {step}; lower refiner.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if step % r.val_every == 0 or step == r.steps:
                metrics = validate(model, data, device)
                recent = float(np.mean(losses[-min(len(losses), r.val_every):]))
                shown = (f", val centre error {metrics['val_centre_error_before_mm']:.1f} -> "
                         f"{metrics['val_centre_error_after_mm']:.1f} mm" if metrics else " (no val split)")
                log(f"train-refiner: step {step}/{r.steps} loss {recent:.4f}{shown}")
    finally:
        data.close()
        torch.set_num_threads(threads)
    metrics = {**metrics, "train_loss_first": float(np.mean(losses[:min(20, len(losses))])),
               "train_loss_last": float(np.mean(losses[-min(20, len(losses)):])),
               "seconds": round(time.monotonic() - start, 1)}
    save_refiner(out, model, public_dict(cfg), cfg.data.cube_mm, data.sources.spec.name, r.steps, metrics)
    log(f"train-refiner: wrote {out}")
    return {"path": out, "steps": r.steps, "losses": losses, "metrics": metrics}


def train_refiner_command(preset: str, overrides=()) -> dict:
    cfg = load_config(preset, list(overrides))
    return train_refiner(cfg)

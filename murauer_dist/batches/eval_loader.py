"""Public loader API for evaluation: the eval batches of one split (DALI or reference reader).

    build_eval_loader(cfg, split, rank=0, world_size=1, device="cpu", domain="real") -> EvalLoader

Camera-1 crops without augmentation, in frame order, this rank's part; the labels are finished like
the training streams' (loaders.finish_on).
"""
from __future__ import annotations

from pathlib import Path

import torch

from murauer_dist import geometry
from murauer_dist.batches import streams
from murauer_dist.batches.loaders import cut_labeled_subset, finish_on, single_torch_thread
from murauer_dist.shards import read as shard_read

EVAL_SPLITS = ("test", "val", "labeled")


def eval_folder(cfg, split: str):
    """The shard folder of an eval split: SHARDS/test, SHARDS/val, or "labeled": the labeled real frames
    the config trains on (cut_labeled_subset), whose
    error next to the held-out splits' tells fitting from generalising."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"eval split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    if split == "labeled":
        return cut_labeled_subset(cfg)
    return Path(cfg.data.shards) / split


class EvalLoader:
    """Eval batches of one split (camera-1 crops, no augmentation), this rank's part, frame order.

    domain "real" is the test protocol; "synth" reads the same frames' synthetic twins instead.
    """

    def __init__(self, cfg, split: str, rank: int, world_size: int, device, domain: str = "real"):
        if domain not in streams.EVAL_STREAMS:
            raise ValueError(f"eval domain must be one of {sorted(streams.EVAL_STREAMS)}, got {domain!r}")
        self.stream = streams.EVAL_STREAMS[domain]
        self.cfg, self.rank, self.world, self.device = cfg, rank, world_size, torch.device(device)
        self.stored = geometry.stored_size(cfg.data.crop_size, cfg.data.crop_margin)
        folder = eval_folder(cfg, split)
        self.tars = shard_read.split_tars(folder, "")
        self.spec = shard_read.check_dataset(cfg, folder, "")
        shard_read.check_geometry(self.tars, cfg.data.crop_size, self.stored, cfg.data.encoding)
        self.layout = shard_read.sample_layout(self.tars, self.spec)
        members = list(streams.needed_members(self.stream, cfg.data.encoding, self.layout, cfg.data.view_camera).values())
        self.samples = shard_read.complete_samples(self.tars, members, cfg.loader.bad_samples)
        self.part = shard_read.partition(len(self.samples), rank, world_size)

    def __len__(self) -> int:
        return -(-len(self.part) // self.cfg.loader.eval_batch)

    def __iter__(self):
        if not len(self.part):
            return
        if self.cfg.loader.backend == "dali":
            from murauer_dist.batches.dali_backend import dali_eval_raw  # lazy: optional: nvidia.dali
            raws = dali_eval_raw(self.cfg, self.tars, (self.rank, self.world), self.device, self.layout, self.stream)
        else:
            from murauer_dist.batches.reference_backend import reference_eval_raw  # lazy: heavy: webdataset
            raws = reference_eval_raw(self.cfg, [self.samples[i] for i in self.part], self.stored, self.layout,
                                      self.stream)
        for raw in raws:
            frames = len(raw["frame"])
            with single_torch_thread():
                out = finish_on(self.device, self.stream, {**raw, "theta": torch.zeros(frames),
                                                           "jitter": torch.zeros(frames, 3)}, self.spec.camera)
            yield out


def build_eval_loader(cfg, split: str, rank: int = 0, world_size: int = 1, device="cpu",
                      domain: str = "real") -> EvalLoader:
    return EvalLoader(cfg, split, rank, world_size, device, domain)

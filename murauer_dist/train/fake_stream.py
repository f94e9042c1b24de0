"""A deterministic in-memory training stream with the TrainStream API (tests and benchmarks).

Batch (epoch, position) is batch.fake_batch seeded by (seed, stage, rank, epoch, position), so a stream
restored from its state_dict yields exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import torch

from murauer_dist.batches.batch import fake_batch, stream_sizes, to_device
from murauer_dist.seeds import derive_seed


class FakeTrainStream:
    def __init__(self, cfg, stage: str, rank: int = 0, device: torch.device | str = "cpu"):
        self.sizes = stream_sizes(cfg, stage)
        self.crop_size, self.num_joints = cfg.data.crop_size, cfg.model.num_joints
        self.steps_per_epoch = cfg.train.iters_per_epoch
        self.seed_parts = (cfg.train.seed, stage, rank)
        self.device = torch.device(device)
        self.epoch, self.position = 1, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def make_batch(self, epoch: int, position: int) -> dict:
        seed = derive_seed(*self.seed_parts, epoch, position)
        return to_device(fake_batch(self.sizes, self.crop_size, self.num_joints, seed=seed), self.device)

    def close(self) -> None:
        """Nothing to free (TrainStream's protocol: the loop closes a stage's stream when it ends)."""

    def __iter__(self):
        while self.position < self.steps_per_epoch:
            batch = self.make_batch(self.epoch, self.position)
            self.position += 1
            yield batch


class FakeEvalLoader:
    """Validation batches (one flat dict each) from fake_batch's synthetic stream."""

    def __init__(self, cfg, batches: int = 2, seed: int = 99, device: torch.device | str = "cpu"):
        self.cfg, self.batches, self.seed, self.device = cfg, batches, seed, torch.device(device)

    def __iter__(self):
        for index in range(self.batches):
            batch = fake_batch({"synth": self.cfg.loader.eval_batch}, self.cfg.data.crop_size,
                               self.cfg.model.num_joints, seed=self.seed + index)["synth"]
            yield to_device(batch, self.device)


def fake_stream_factory(cfg, stage: str, rank: int, world_size: int, device) -> FakeTrainStream:
    return FakeTrainStream(cfg, stage, rank, device)


def fake_eval_factory(cfg, split: str, rank: int, world_size: int, device) -> FakeEvalLoader:
    return FakeEvalLoader(cfg, seed=99 + rank, device=device)

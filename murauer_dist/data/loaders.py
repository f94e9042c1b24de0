"""Public loader API: the training streams of a stage and the evaluation loader (DALI or reference).

    build_train_stream(cfg, stage, rank, world_size, device) -> TrainStream (endless batch dicts)
    build_eval_loader(cfg, split, rank=0, world_size=1, device="cpu") -> iterable of eval batches

cfg.loader.backend picks "dali" (dali_pipeline.py; GPU or CPU by cfg.loader.device) or "reference"
(reference_pipeline.py). An epoch is cfg.train.iters_per_epoch steps on every rank (so no rank waits for
another at the end). Each stream reads its own readers: pairs from the labeled shard set, views from
the labeled set with probability max(0.3, n/N) and from all train frames otherwise (a frame of the
labeled set drawn there is flagged labeled too), synth / unlabeled_* from all train shards. Within an
epoch, rank r reads the contiguous part (r + epoch) % world of each set, so ranks never share a sample
in an epoch and the parts rotate between epochs; a set smaller than the world (a tiny labeled set) is
read whole by every rank. Seeds derive from (train.seed, stage, epoch, stream, rank).

The dataset (camera, joints) is the config's data.dataset, checked against the one the shard
manifests record (shard_read.check_dataset); the readers and streams.finish take its camera.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from murauer_dist import geometry
from murauer_dist.data import streams
from murauer_dist.data.batch import stream_sizes
from murauer_dist.data.shards import read as shard_read
from murauer_dist.seeds import derive_seed


@contextlib.contextmanager
def single_torch_thread(device: torch.device):
    """The loader's small torch ops on the CPU run on one thread: torch's intra-op pool spinning next
    to the DALI / DataLoader threads made them 20x slower on a 2-core machine (measured)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stream_seed(seed: int, stage: str, epoch: int, stream: str, rank: int) -> int:
    return derive_seed(seed, stage, epoch, stream, rank)


class DataSources:
    """Shard tars and complete samples of the train, labeled and eval sets of a config."""

    def __init__(self, cfg, need_labeled: bool):
        self.cfg = cfg
        self.stored = geometry.stored_size(cfg.data.crop_size, cfg.data.crop_margin)
        self.train_tars = shard_read.split_tars(cfg.data.shards, "train")
        self.spec = shard_read.check_dataset(cfg, cfg.data.shards, "train")
        shard_read.check_geometry(self.train_tars, cfg.data.crop_size, self.stored, cfg.data.encoding)
        self.layout = shard_read.sample_layout(self.train_tars, self.spec)
        self.labeled_tars: list[str] = []
        if need_labeled:
            folder = shard_read.labeled_folder(cfg.data.shards, cfg.data.n_labeled, cfg.data.label_seed)
            self.labeled_tars = shard_read.split_tars(folder, "")
        self.skipped: dict[str, int] = {}

    def samples(self, which: str, stream: str) -> list[tuple[str, str]]:
        tars = self.labeled_tars if which == "labeled" else self.train_tars
        members = list(streams.needed_members(stream, self.cfg.data.encoding, self.cfg.data.view_camera,
                                              self.layout.slots).values())
        self.skipped[f"{stream}/{which}"] = shard_read.count_skipped(tars, members)
        return shard_read.complete_samples(tars, members, self.cfg.loader.bad_samples)

    def labeled_frames(self) -> torch.Tensor:
        return torch.tensor(sorted(shard_read.frames_in(self.labeled_tars)), dtype=torch.long)

    def labeled_probability(self) -> float:
        n = len(shard_read.frames_in(self.labeled_tars))
        total = len(shard_read.frames_in(self.train_tars))
        return max(0.3, n / max(total, 1))


def _part(count: int, rank: int, world: int, epoch: int) -> tuple[int, int]:
    if count < world:
        return (0, 1)
    return ((rank + epoch) % world, world)


class TrainStream:
    """Endless training batches (dict of streams) on `device`; see the module doc for the policy."""

    def __init__(self, cfg, stage: str, rank: int, world_size: int, device):
        self.cfg, self.stage, self.rank, self.world = cfg, stage, rank, world_size
        self.device = torch.device(device)
        self.sizes = {name: size for name, size in stream_sizes(cfg, stage).items() if size > 0}
        if not self.sizes:
            raise ValueError(f"stage {stage!r} of method {cfg.train.method!r} draws no stream (all batch sizes 0)")
        self.steps_per_epoch = int(cfg.train.iters_per_epoch)
        need_labeled = "pairs" in self.sizes or "views" in self.sizes
        self.sources = DataSources(cfg, need_labeled)
        self.labeled_frames = self.sources.labeled_frames() if need_labeled else torch.zeros(0, dtype=torch.long)
        self.samples = {name: self._stream_samples(name) for name in self.sizes}
        self.epoch, self.step_in_epoch = 0, 0
        self._readers: dict | None = None

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self.sources.skipped)

    def _stream_samples(self, stream: str) -> dict[str, list]:
        if stream == "pairs":
            return {"main": self.sources.samples("labeled", stream)}
        if stream == "views":
            return {"labeled": self.sources.samples("labeled", stream), "main": self.sources.samples("train", stream)}
        return {"main": self.sources.samples("train", stream)}

    def set_epoch(self, epoch: int) -> None:
        """Re-create every stream's reader for `epoch` (seeds and rank parts derive from it)."""
        if self._readers is not None and epoch == self.epoch and self.step_in_epoch == 0:
            return
        self.close()
        self.epoch, self.step_in_epoch = int(epoch), 0
        self._readers = {name: self._make_reader(name) for name in self.sizes}

    def _make_reader(self, stream: str):
        seed = stream_seed(self.cfg.train.seed, self.stage, self.epoch, stream, self.rank)
        parts = {which: _part(len(s), self.rank, self.world, self.epoch) for which, s in self.samples[stream].items()}
        probability = self.sources.labeled_probability() if stream == "views" else 0.0
        if self.cfg.loader.backend == "dali":
            from murauer_dist.data.dali_reader import DaliStreamReader
            return DaliStreamReader(self.cfg, stream, self.sizes[stream], self.sources, parts, seed, probability,
                                    self.device)
        from murauer_dist.data.reference_reader import ReferenceStreamReader
        return ReferenceStreamReader(self.cfg, stream, self.sizes[stream], self.samples[stream], parts, seed,
                                     probability, self.sources.stored, self.sources.layout)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._readers is None:
            self.set_epoch(self.epoch)
        elif self.step_in_epoch >= self.steps_per_epoch:
            self.set_epoch(self.epoch + 1)
        batch = {}
        with single_torch_thread(self.device):
            for name, reader in self._readers.items():
                raw = {key: value.to(self.device, non_blocking=True) for key, value in reader.next_raw().items()}
                batch[name] = streams.finish(name, raw, self.sources.spec.camera, self.labeled_frames,
                                             self.cfg.data.view_camera)
        self.step_in_epoch += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Resume exactly: the epoch's readers again, then the consumed batches skipped."""
        self._readers = None
        self.set_epoch(int(state["epoch"]))
        for _ in range(int(state["step_in_epoch"])):
            for reader in self._readers.values():
                reader.next_raw()
        self.step_in_epoch = int(state["step_in_epoch"])

    def close(self) -> None:
        for reader in (self._readers or {}).values():
            reader.close()
        self._readers = None


def build_train_stream(cfg, stage: str, rank: int, world_size: int, device) -> TrainStream:
    return TrainStream(cfg, stage, rank, world_size, device)


EVAL_SPLITS = ("test", "val", "labeled")


def eval_folder(cfg, split: str):
    """The shard folder of an eval split: SHARDS/test, SHARDS/val, or "labeled": the labeled real frames
    the config trains on (SHARDS/labeled/seed{data.label_seed}-n{data.n_labeled}, made if missing), whose
    error next to the held-out splits' tells fitting from generalising."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"eval split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    if split == "labeled":
        return shard_read.labeled_folder(cfg.data.shards, cfg.data.n_labeled, cfg.data.label_seed)
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
        members = list(streams.needed_members(self.stream, cfg.data.encoding).values())
        self.samples = shard_read.complete_samples(self.tars, members, cfg.loader.bad_samples)
        self.part = shard_read.partition(len(self.samples), rank, world_size)

    def __len__(self) -> int:
        return -(-len(self.part) // self.cfg.loader.eval_batch)

    def __iter__(self):
        if not len(self.part):
            return
        if self.cfg.loader.backend == "dali":
            from murauer_dist.data.dali_reader import dali_eval_raw
            raws = dali_eval_raw(self.cfg, self.tars, (self.rank, self.world), self.device, self.layout, self.stream)
        else:
            from murauer_dist.data.reference_reader import reference_eval_raw
            raws = reference_eval_raw(self.cfg, [self.samples[i] for i in self.part], self.stored, self.layout,
                                      self.stream)
        for raw in raws:
            raw = {key: value.to(self.device, non_blocking=True) for key, value in raw.items()}
            with single_torch_thread(self.device):
                out = streams.finish(self.stream, {**raw, "theta": torch.zeros(len(raw["frame"]), device=self.device),
                                            "jitter": torch.zeros(len(raw["frame"]), 3, device=self.device)},
                                     self.spec.camera)
            yield out


def build_eval_loader(cfg, split: str, rank: int = 0, world_size: int = 1, device="cpu",
                      domain: str = "real") -> EvalLoader:
    return EvalLoader(cfg, split, rank, world_size, device, domain)

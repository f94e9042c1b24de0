"""Public loader API for training: the training streams of a stage (DALI or reference); the
evaluation loader, which shares the helpers here, is eval_loader.py.

    build_train_stream(cfg, stage, rank, world_size, device) -> TrainStream (endless batch dicts)

cfg.loader.backend picks "dali" (dali_pipeline.py; GPU or CPU by cfg.loader.device) or "reference"
(reference_pipeline.py). An epoch is cfg.train.iters_per_epoch steps on every rank (so no rank waits for
another at the end). Each stream reads its own readers: pairs from the labeled shard set, views from
the labeled set with probability max(0.3, n/N) and from all train frames otherwise (a frame of the
labeled set drawn there is flagged labeled too), synth / unlabeled_* from all train shards. Within an
epoch, rank r reads the contiguous part (r + epoch) % world of each set, so ranks never share a sample
in an epoch and the parts rotate between epochs; a set smaller than the world (a tiny labeled set) is
read whole by every rank. Seeds derive from (train.seed, stage, epoch, stream, rank).

Epoch rollover: the next epoch's readers are built on a background thread shortly before the epoch
ends (EpochBuild, BuildPace), so the rollover step finds them ready (shuffle buffers filled, first
batch made) instead of waiting for them, and the ended epoch's readers are closed on another
(Closing). They are the readers the epoch would get anyway (same seeds, same parts): no batch
changes (docs/benchmarks.md, "Epoch rollover").

Where the work runs: streams.finish_labels (the label arithmetic, ~70 tiny float64 ops) on the CPU,
where both readers leave the labels; streams.finish_images (depth normalisation) where the images
are (the GPU for DALI on the GPU); then only the results go to the training device, from pinned
memory when that is a GPU (to_training_device).

The dataset (camera, joints) is the config's data.dataset, checked against the one the shard
manifests record (shard_read.check_dataset); the readers and streams.finish take its camera.
"""
from __future__ import annotations

import contextlib
import itertools
import statistics
import threading
import time
from collections import deque
from pathlib import Path

import torch

from murauer_dist import geometry
from murauer_dist.batches import streams
from murauer_dist.batches.batch import stream_sizes
from murauer_dist.shards import read as shard_read
from murauer_dist.shards.labeled import ensure_labeled_shards, labeled_dir
from murauer_dist.seeds import derive_seed


@contextlib.contextmanager
def single_torch_thread():
    """The loader's small torch ops on the CPU run on one thread: torch's intra-op pool spinning next
    to the DALI / DataLoader threads made them 20x slower on a 2-core machine (measured). Whatever the
    training device: the label arithmetic runs on the CPU (finish_on)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def copy_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; a CPU tensor bound for a GPU goes from pinned memory without blocking the
    host (for a CPU target pinning would only add a copy)."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def to_training_device(tensors: dict, device: torch.device) -> dict:
    return {key: copy_to(value, device) for key, value in tensors.items()}


def finish_on(device: torch.device, stream: str, raw: dict, camera, labeled_frames=None, view_camera: int = 3) -> dict:
    """streams.finish with each part where its inputs are, the results on `device`: the label
    arithmetic on the CPU (on a GPU each of its ~70 tiny ops would be a kernel launch), the depth
    normalisation where the images are (DALI on the GPU: there; no image comes back to the CPU)."""
    labels, centres = streams.finish_labels(stream, raw, camera, labeled_frames, view_camera)
    image_device = raw[next(iter(streams.image_fields(stream)))].device
    centres = {kind: (copy_to(z, image_device), copy_to(cube, image_device)) for kind, (z, cube) in centres.items()}
    images = streams.finish_images(stream, raw, centres)
    return {**to_training_device(images, device), **to_training_device(labels, device)}


def stream_seed(seed: int, stage: str, epoch: int, stream: str, rank: int) -> int:
    return derive_seed(seed, stage, epoch, stream, rank)


def cut_labeled_subset(cfg) -> Path:
    """SHARDS/labeled/seed{data.label_seed}-n{data.n_labeled}: cut from the train shards the first time a
    run asks for it (shards.labeled: once, atomically, safe when ranks race), read as it is afterwards.
    The one place where building batches writes shards."""
    folder = labeled_dir(cfg.data.shards, cfg.data.n_labeled, cfg.data.label_seed)
    if folder.is_dir():
        return folder
    return ensure_labeled_shards(cfg.data.shards, cfg.data.n_labeled, cfg.data.label_seed)


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
            self.labeled_tars = shard_read.split_tars(cut_labeled_subset(cfg), "")
        self.skipped: dict[str, int] = {}

    def samples(self, which: str, stream: str) -> list[tuple[str, str]]:
        tars = self.labeled_tars if which == "labeled" else self.train_tars
        members = list(streams.needed_members(stream, self.cfg.data.encoding, self.layout,
                                              self.cfg.data.view_camera).values())
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


def close_readers(readers: dict | None) -> None:
    for reader in (readers or {}).values():
        reader.close()


class ReaderFactory:
    """Makes one rank's readers of an epoch for a stage. It holds no reader, and nothing in it changes
    after construction, so EpochBuild's thread may use it while the stream reads on."""

    def __init__(self, cfg, stage: str, rank: int, world: int, device: torch.device, sizes: dict,
                 sources: DataSources, samples: dict, labeled_probability: float):
        self.cfg, self.stage, self.rank, self.world, self.device = cfg, stage, rank, world, device
        self.sizes, self.sources, self.samples = sizes, sources, samples
        self.labeled_probability = labeled_probability

    def build(self, epoch: int) -> dict:
        """Every stream's reader for `epoch`, each with its first batch made."""
        readers = {}
        try:
            for name in self.sizes:
                readers[name] = self.make(name, epoch)
            for reader in readers.values():     # after all are started: their workers fill in parallel
                reader.prime()
        except BaseException:
            close_readers(readers)
            raise
        return readers

    def make(self, stream: str, epoch: int):
        seed = stream_seed(self.cfg.train.seed, self.stage, epoch, stream, self.rank)
        parts = {which: _part(len(s), self.rank, self.world, epoch) for which, s in self.samples[stream].items()}
        probability = self.labeled_probability if stream == "views" else 0.0
        if self.cfg.loader.backend == "dali":
            from murauer_dist.batches.dali_backend import DaliStreamBackend  # lazy: optional: nvidia.dali
            return DaliStreamBackend(self.cfg, stream, self.sizes[stream], self.sources, parts, seed, probability,
                                    self.device)
        from murauer_dist.batches.reference_backend import ReferenceStreamBackend  # lazy: heavy: webdataset
        return ReferenceStreamBackend(self.cfg, stream, self.sizes[stream], self.samples[stream], parts, seed,
                                     probability, self.sources.stored, self.sources.layout)


# What the background threads below work on (readers being built or closed), by key. A thread gets
# only its key: a forked child (a DataLoader worker) drops the Thread objects of the threads it did not
# inherit, and if one held the last reference to a reader, the child would free it there; freeing a
# DALI pipeline in a forked child hangs (measured: its threads are not there). An entry leaves the
# table when its thread is done, in this process.
_IN_FLIGHT: dict[int, tuple] = {}
_keys = itertools.count()


def run_in_background(name: str, work, *args) -> threading.Thread:
    """Start `work(*args)` on a thread (not a daemon: an exiting interpreter waits for it instead of
    tearing DALI down under it)."""
    key = next(_keys)
    _IN_FLIGHT[key] = (work, args)
    thread = threading.Thread(target=_run_entry, args=(key,), name=name)
    thread.start()
    return thread


def _run_entry(key: int) -> None:
    work, args = _IN_FLIGHT[key]
    try:
        work(*args)
    finally:
        del work, args
        _IN_FLIGHT.pop(key)                 # may free an abandoned stream's readers: here, not in a child


def _build_into(factory: ReaderFactory, epoch: int, result: dict) -> None:
    """EpochBuild's work: the readers (or the error) and the build's wall time into `result`."""
    started = time.perf_counter()
    try:
        if factory.device.type == "cuda" and factory.device.index is not None:
            torch.cuda.set_device(factory.device)       # the current CUDA device is per thread
        result["readers"] = factory.build(epoch)
    except BaseException as err:            # raised again in the consumer's thread by take()
        result["error"] = err
    result["seconds"] = time.perf_counter() - started


class EpochBuild:
    """One epoch's readers, built on a background thread; take() waits for them, discard() closes them.
    The thread never holds the stream: one dropped without close() is freed at once, as before."""

    def __init__(self, epoch: int, factory: ReaderFactory):
        self.epoch = epoch
        self._result: dict = {}
        self._thread = run_in_background(f"readers-epoch-{epoch}", _build_into, factory, epoch, self._result)

    @property
    def seconds(self) -> float | None:
        return self._result.get("seconds")

    def take(self) -> dict:
        self._thread.join()
        if "error" in self._result:
            raise self._result.pop("error")
        return self._result.pop("readers")

    def discard(self) -> None:
        self._thread.join()
        close_readers(self._result.pop("readers", None))


class Closing:
    """Readers closed on a background thread: joining the DataLoader worker processes and DALI threads
    of the epoch that ended took most of the remaining rollover wait (about 0.1 s, measured)."""

    def __init__(self, readers: dict):
        self._thread = run_in_background("readers-close", close_readers, readers)

    def wait(self) -> None:
        self._thread.join()


class BuildPace:
    """When to start building the next epoch's readers: `LEAD` times the last build's wall time before
    the epoch's end (at the measured step time), so that two sets of readers (shuffle buffers, worker
    processes) are alive together only briefly and the next set is still ready in time."""

    LEAD = 2.0
    WINDOW = 20                         # step intervals the median is taken over

    def __init__(self):
        self.build_seconds: float | None = None
        self._intervals: deque = deque(maxlen=self.WINDOW)
        self._last_step: float | None = None

    def step(self) -> None:
        now = time.perf_counter()
        if self._last_step is not None:
            self._intervals.append(now - self._last_step)
        self._last_step = now

    def due(self, steps_left: int) -> bool:
        if self.build_seconds is None or not self._intervals:
            return False
        return steps_left * statistics.median(self._intervals) <= self.LEAD * self.build_seconds


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
        samples = {name: self._stream_samples(name) for name in self.sizes}
        probability = self.sources.labeled_probability() if "views" in self.sizes else 0.0
        self.factory = ReaderFactory(cfg, stage, rank, world_size, self.device, self.sizes, self.sources, samples,
                                     probability)
        self.epoch, self.step_in_epoch = 0, 0
        self._readers: dict | None = None
        self._next: EpochBuild | None = None      # the next epoch's readers, built ahead
        self._closing: Closing | None = None      # the last epoch's readers, being closed
        self.pace = BuildPace()

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
        """Every stream's reader for `epoch` (seeds and rank parts derive from it): the ones built
        ahead when they are this epoch's, else new ones."""
        if self._readers is not None and epoch == self.epoch and self.step_in_epoch == 0:
            return
        self._retire_readers()
        self.epoch, self.step_in_epoch = int(epoch), 0
        ahead, self._next = self._next, None
        if ahead is not None and ahead.epoch == self.epoch:
            self._readers = ahead.take()
            self.pace.build_seconds = ahead.seconds
        else:
            if ahead is not None:
                ahead.discard()
            started = time.perf_counter()
            self._readers = self.factory.build(self.epoch)
            self.pace.build_seconds = time.perf_counter() - started
        self._start_next_if_due()

    def _retire_readers(self) -> None:
        """Close the current readers in the background (the previous ones' closing waited for first)."""
        self._wait_closed()
        if self._readers:
            self._closing = Closing(self._readers)
        self._readers = None

    def _wait_closed(self) -> None:
        if self._closing is not None:
            self._closing.wait()
            self._closing = None

    def _start_next_if_due(self) -> None:
        if self._next is None and self.pace.due(self.steps_per_epoch - self.step_in_epoch):
            self._next = EpochBuild(self.epoch + 1, self.factory)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        self.pace.step()
        if self._readers is None:
            self.set_epoch(self.epoch)
        elif self.step_in_epoch >= self.steps_per_epoch:
            self.set_epoch(self.epoch + 1)
        batch = {}
        with single_torch_thread():
            for name, reader in self._readers.items():
                batch[name] = finish_on(self.device, name, reader.next_raw(), self.sources.spec.camera,
                                        self.labeled_frames, self.cfg.data.view_camera)
        self.step_in_epoch += 1
        self._start_next_if_due()
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Resume exactly: the epoch's readers again, then the consumed batches skipped."""
        self._retire_readers()
        self.set_epoch(int(state["epoch"]))
        for _ in range(int(state["step_in_epoch"])):
            for reader in self._readers.values():
                reader.next_raw()
        self.step_in_epoch = int(state["step_in_epoch"])

    def close(self) -> None:
        """Close every reader, the ones being built ahead or closed in the background too (their
        threads are waited for)."""
        ahead, self._next = self._next, None
        if ahead is not None:
            ahead.discard()
        close_readers(self._readers)
        self._readers = None
        self._wait_closed()


def build_train_stream(cfg, stage: str, rank: int, world_size: int, device) -> TrainStream:
    return TrainStream(cfg, stage, rank, world_size, device)

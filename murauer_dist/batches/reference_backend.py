"""Reference (webdataset + DataLoader) readers behind the loader API: raw stream dicts."""
from __future__ import annotations

from murauer_dist.shards import read as shard_read
from murauer_dist.shards.schema import SampleLayout
from murauer_dist.batches.reference_pipeline import RawBatches, raw_loader


def _take(samples: list, part: tuple[int, int]) -> list:
    return [samples[i] for i in shard_read.partition(len(samples), *part)]


class ReferenceStreamBackend:
    """One stream's DataLoader over this rank's samples (endless); next_raw() gives the next raw batch."""

    def __init__(self, cfg, stream: str, batch_size: int, samples: dict, parts: dict, seed: int,
                 labeled_probability: float, stored: int, layout: SampleLayout):
        mine = {which: _take(s, parts[which]) for which, s in samples.items()}
        workers = min(cfg.loader.num_threads, min(len(s) for s in mine.values()))
        dataset = RawBatches(cfg, stream, batch_size, mine, stored, layout, seed, repeat=True,
                             labeled_probability=labeled_probability)
        self.loader = raw_loader(dataset, workers)
        self.iterator = iter(self.loader)
        self._first: dict | None = None

    def prime(self) -> None:
        """Make the first batch now (workers started, shuffle buffers filled), as DALI's iterator does."""
        if self._first is None:
            self._first = next(self.iterator)

    def next_raw(self) -> dict:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self.iterator)

    def close(self) -> None:
        """Drop the iterator: its __del__ ends and joins the DataLoader's worker processes."""
        self.iterator, self._first = None, None


def reference_eval_raw(cfg, samples: list, stored: int, layout: SampleLayout, stream: str = "eval"):
    dataset = RawBatches(cfg, stream, cfg.loader.eval_batch, {"main": samples}, stored, layout, seed=0, repeat=False)
    yield from raw_loader(dataset, 0)

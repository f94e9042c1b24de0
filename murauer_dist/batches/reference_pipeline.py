"""Reference loader: plain webdataset + torch DataLoader, PIL 16-bit decoding, torch augmentation.

The correctness oracle for the DALI pipelines and the fallback without DALI. It yields the same raw
stream dicts (streams.py) from the same augmentation math (augment.py); only reading, decoding and the
random draws' source (a seeded torch.Generator per worker) differ.

Sample partition: a rank reads the contiguous part `rank` of `world` of the complete samples (DALI's
split), a DataLoader worker every `workers`-th sample of that; within a pass a shuffle buffer of
loader.shuffle_buffer samples mixes the order, each pass with its own seed.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import webdataset as wds

from murauer_dist.batches import augment
from murauer_dist.shards import schema
from murauer_dist.shards.read import ShardError
from murauer_dist.batches.streams import EVAL_STREAMS, needed_members, synth_field
from murauer_dist.frames.datasets import spec_of
from murauer_dist.seeds import derive_seed


def decode_member(name: str, data: bytes, stored: int, layout: schema.SampleLayout, where: str) -> np.ndarray:
    """One shard member -> array (schema.decode_member: images uint16 (S,S), labels float32 in their shape)."""
    try:
        return schema.decode_member(name, data, stored, layout)
    except (OSError, ValueError) as err:
        raise ShardError(f"{where}: member {name} cannot be decoded ({err})") from err


class SampleSource:
    """Decoded samples (dict of arrays + "frame") of a fixed list of (tar, key), in passes."""

    def __init__(self, samples: list[tuple[str, str]], members: dict, stored: int, layout: schema.SampleLayout,
                 shuffle: bool, seed: int, buffer: int, worker: int = 0, workers: int = 1, repeat: bool = True):
        self.samples, self.members, self.stored, self.layout = samples, members, stored, layout
        self.shuffle, self.seed, self.buffer, self.repeat = shuffle, seed, buffer, repeat
        self.mine = {sample for i, sample in enumerate(samples) if i % workers == worker}
        if not self.mine:
            raise ShardError(f"worker {worker} of {workers} has no samples among {len(samples)}; use fewer workers")

    def _pass(self, number: int):
        urls = sorted({tar for tar, _ in self.samples}, key=[tar for tar, _ in self.samples].index)
        data = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
        data = data.select(lambda s: (s["__url__"], s["__key__"]) in self.mine)
        if self.shuffle:
            rng = random.Random(derive_seed(self.seed, "pass", number))
            data = data.shuffle(self.buffer, initial=self.buffer, rng=rng)
        for raw in data:
            where = f"shard {raw['__url__']}, sample {raw['__key__']}"
            out = {field: decode_member(name, raw[name], self.stored, self.layout, where)
                   for field, name in self.members.items()}
            out["frame"] = schema.frame_of_key(raw["__key__"], f"shard {raw['__url__']}")
            yield out

    def __iter__(self):
        number = 0
        while True:
            yield from self._pass(number)
            number += 1
            if not self.repeat:
                return


def _stack(records: list[dict], field: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([r[field] for r in records]))


def _images(records, field) -> torch.Tensor:
    return _stack(records, field).float()[:, None]


def _labels(records) -> dict:
    """crop (B, *schema crop_shape), joints (B, *schema joints_shape), frame (B,)."""
    return {"crop": _stack(records, "crop"), "joints": _stack(records, "joints"),
            "frame": torch.tensor([r["frame"] for r in records], dtype=torch.long)}


class Augmenter:
    """The reference twin of the DALI graphs: draws, warp, noise -> raw stream dict."""

    def __init__(self, cfg, generator: torch.Generator, stored: int, layout: schema.SampleLayout):
        aug = cfg.augment
        on = bool(aug.enabled)
        self.rotation_deg = aug.rotation_deg if on else 0.0
        self.jitter_mm = aug.center_jitter_mm if on else 0.0
        self.noise_mm = aug.depth_noise_mm if on else 0.0
        self.cond_mm = aug.cond_noise_mm if on else 0.0
        self.crop_size, self.stored, self.layout, self.gen = cfg.data.crop_size, stored, layout, generator
        self.camera = spec_of(cfg).camera          # the loaders checked data.dataset against the shards

    def draws(self, batch: int, rotate: bool = True) -> dict:
        params = augment.draw_params(self.gen, batch, self.rotation_deg if rotate else 0.0, self.jitter_mm)
        return params

    def noise(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, 1, self.crop_size, self.crop_size, generator=self.gen) * self.noise_mm

    def warp(self, images: torch.Tensor, crop_row, draws, noise=None) -> tuple[torch.Tensor, torch.Tensor]:
        matrix = augment.affine_matrix(crop_row, draws["theta"], draws["jitter"], self.crop_size, self.stored,
                                       self.camera)
        out = augment.warp_nearest(images, matrix, self.crop_size)
        return (out if noise is None else augment.add_depth_noise(out, noise)), matrix

    def central(self, images: torch.Tensor) -> torch.Tensor:
        """The un-augmented central slice (geometry.center_crop) of (B,1,S,S)."""
        start = (self.stored - self.crop_size) // 2
        return images[..., start:start + self.crop_size, start:start + self.crop_size].contiguous()

    def labeled(self, records: list[dict], fields: dict, cam: torch.Tensor) -> dict:
        """Shared draw for all `fields` (raw name -> record field) of labeled samples."""
        labels = _labels(records)
        batch = len(records)
        crop_row = labels["crop"][torch.arange(batch), cam]
        draws, noise = self.draws(batch), self.noise(batch)
        out = {}
        for name, field in fields.items():
            out[name], matrix = self.warp(_images(records, field), crop_row, draws, noise)
        return {**out, **labels, **draws, "matrix": matrix}


def pairs_batch(aug: Augmenter, records: list[dict]) -> dict:
    cam = torch.zeros(len(records), dtype=torch.long)
    halves = {half: half for half in ("real", "synth") if half in records[0]}   # real only: no synthetic twins
    return aug.labeled(records, halves, cam)


def synth_batch(aug: Augmenter, records: list[dict]) -> dict:
    cam = torch.randint(0, aug.layout.num_cameras, (len(records),), generator=aug.gen)
    for record, c in zip(records, cam.tolist()):
        record["depth"] = record[synth_field(aug.layout.slots[c])]
    return {**aug.labeled(records, {"depth": "depth"}, cam), "cam": cam}


def unlabeled_batch(aug: Augmenter, records: list[dict]) -> dict:
    crop = _stack(records, "crop")
    draws = aug.draws(len(records))
    depth, matrix = aug.warp(_images(records, "depth"), crop[:, 0], draws, aug.noise(len(records)))
    return {"depth": depth, "crop": crop, **draws, "matrix": matrix,
            "frame": torch.tensor([r["frame"] for r in records], dtype=torch.long)}


def views_batch(aug: Augmenter, records: list[dict], from_labeled: torch.Tensor) -> dict:
    batch = len(records)
    labels = _labels(records)
    draws, noise = aug.draws(batch, rotate=False), aug.noise(batch)
    real, matrix = aug.warp(_images(records, "real"), labels["crop"][:, 0], draws, noise)
    synth, _ = aug.warp(_images(records, "synth"), labels["crop"][:, 0], draws, noise)
    cond = torch.randn(batch, 2, 3, generator=aug.gen, dtype=torch.float64) * aug.cond_mm
    return {"real": real, "synth": synth, "real_view": aug.central(_images(records, "real_view")),
            "synth_view": aug.central(_images(records, "synth_view")), "cond_real": cond[:, 0],
            "cond_synth": cond[:, 1], "from_labeled": from_labeled, **labels, **draws, "matrix": matrix}


def eval_batch(aug: Augmenter, records: list[dict]) -> dict:
    return {"depth": aug.central(_images(records, "depth")), **_labels(records)}


class RawBatches(torch.utils.data.IterableDataset):
    """Raw stream batches of one stream for one rank; DataLoader workers split the samples."""

    def __init__(self, cfg, stream: str, batch_size: int, sources: dict, stored: int, layout: schema.SampleLayout,
                 seed: int, repeat: bool = True, labeled_probability: float = 0.0):
        super().__init__()
        self.cfg, self.stream, self.batch_size, self.sources = cfg, stream, batch_size, sources
        self.stored, self.layout = stored, layout
        self.seed, self.repeat, self.labeled_probability = seed, repeat, labeled_probability

    def _source(self, name: str, worker: int, workers: int) -> SampleSource:
        members = needed_members(self.stream, self.cfg.data.encoding, self.layout, self.cfg.data.view_camera)
        return SampleSource(self.sources[name], members, self.stored, self.layout, shuffle=self.repeat,
                            seed=derive_seed(self.seed, name, worker),
                            buffer=self.cfg.loader.shuffle_buffer, worker=worker, workers=workers,
                            repeat=self.repeat)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "augment", worker))
        aug = Augmenter(self.cfg, gen, self.stored, self.layout)
        if self.stream == "views":
            yield from self._views(aug, worker, workers)
            return
        source = iter(self._source("main", worker, workers))
        build = {"pairs": pairs_batch, "synth": synth_batch, "unlabeled_real": unlabeled_batch,
                 "unlabeled_synth": unlabeled_batch, **dict.fromkeys(EVAL_STREAMS.values(), eval_batch)}[self.stream]
        while True:
            records = [r for _, r in zip(range(self.batch_size), source)]
            if not records:
                return
            yield build(aug, records)
            if len(records) < self.batch_size:
                return

    def _views(self, aug: Augmenter, worker: int, workers: int):
        labeled = iter(self._source("labeled", worker, workers))
        anyframe = iter(self._source("main", worker, workers))
        while True:
            coin = torch.rand(self.batch_size, generator=aug.gen) < self.labeled_probability
            records = [next(labeled) if c else next(anyframe) for c in coin.tolist()]
            yield views_batch(aug, records, coin)


def raw_loader(dataset: RawBatches, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       persistent_workers=False, prefetch_factor=2 if workers else None)


"""DALI readers behind the loader API: one pipeline per stream, raw stream dicts as torch tensors."""
from __future__ import annotations

import torch

from murauer_dist import dist
from murauer_dist.batches import augment
from murauer_dist.batches import dali_pipeline
from murauer_dist.shards.schema import SampleLayout


def _device_id(dali_device: str, device: torch.device):
    if dali_device == "cpu":
        return None
    if device.type == "cuda" and device.index is not None:
        return device.index
    return dist.env_local_rank()


def _raw(output: dict) -> dict:
    """Iterator output -> raw dict: frame ids from the padded source_info, integer types widened."""
    raw = dict(output)
    raw["frame"] = torch.from_numpy(dali_pipeline.frames_from_info(raw.pop("info")))
    if "cam" in raw:
        raw["cam"] = raw["cam"].long()
    if "from_labeled" in raw:
        raw["from_labeled"] = raw["from_labeled"].bool()
    return raw


# Images of a raw stream dict that get depth noise, one field per draw (pair and view twins share it).
NOISY_FIELDS = {"pairs": ("real", "synth"), "synth": ("depth",), "views": ("real", "synth"),
                "unlabeled_real": ("depth",), "unlabeled_synth": ("depth",)}


def add_noise(raw: dict, stream: str, generator: torch.Generator, sigma_mm: float) -> dict:
    """One N(0, sigma^2) field per sample, shared by the stream's twin images, on valid pixels only."""
    fields = tuple(f for f in NOISY_FIELDS.get(stream, ()) if f in raw)     # pairs of a real-only dataset: no synth
    if not fields or sigma_mm <= 0:
        return raw
    first = raw[fields[0]]
    noise = torch.randn(first.shape, generator=generator, device=first.device).mul_(sigma_mm)
    return {**raw, **{f: augment.add_depth_noise(raw[f], noise) for f in fields}}


class DaliStreamBackend:
    """One stream's DALI pipeline (endless); next_raw() gives the next raw batch."""

    def __init__(self, cfg, stream: str, batch_size: int, sources, parts: dict, seed: int,
                 labeled_probability: float, device: torch.device):
        dali_device = dali_pipeline.resolve_device(cfg.loader.device, device)
        graph = dali_pipeline.StreamGraph(cfg, dali_device, seed, parts["main"], sources.layout)
        if stream == "pairs":
            builder, args = dali_pipeline.pairs_graph, (sources.labeled_tars,)
        elif stream == "synth":
            builder, args = dali_pipeline.synth_graph, (sources.train_tars,)
        elif stream == "views":
            builder, args = dali_pipeline.views_graph, (sources.labeled_tars, sources.train_tars,
                                                        labeled_probability, parts["labeled"])
        else:
            builder, args = dali_pipeline.unlabeled_graph, (sources.train_tars, stream)
        device_id = _device_id(dali_device, device)
        self.iterator, _, self.pipeline = dali_pipeline.build_iterator(builder, graph, batch_size, device_id,
                                                                       cfg.loader.num_threads, False, *args)
        noise_device = f"cuda:{device_id}" if dali_device == "gpu" else "cpu"
        self.generator = torch.Generator(device=noise_device).manual_seed(seed)
        self.stream = stream
        self.noise_mm = cfg.augment.depth_noise_mm if cfg.augment.enabled else 0.0

    def next_raw(self) -> dict:
        return add_noise(_raw(next(self.iterator)[0]), self.stream, self.generator, self.noise_mm)

    def prime(self) -> None:
        """Nothing to do: the iterator made the first batch when it was built (prepare_first_batch)."""

    def close(self) -> None:
        if self.pipeline is not None:
            dali_pipeline.shutdown(self.pipeline)
        self.iterator, self.pipeline = None, None


def dali_eval_raw(cfg, tars: list[str], part: tuple[int, int], device: torch.device, layout: SampleLayout,
                  stream: str = "eval"):
    """Raw eval batches of this rank's contiguous part, in shard order, the last one partial."""
    dali_device = dali_pipeline.resolve_device(cfg.loader.device, device)
    graph = dali_pipeline.StreamGraph(cfg, dali_device, 0, part, layout)
    iterator, _, pipeline = dali_pipeline.build_iterator(dali_pipeline.eval_graph, graph, cfg.loader.eval_batch,
                                                         _device_id(dali_device, device), cfg.loader.num_threads,
                                                         True, tars, stream)
    try:
        for output in iterator:
            yield _raw(output[0])
    finally:
        dali_pipeline.shutdown(pipeline)

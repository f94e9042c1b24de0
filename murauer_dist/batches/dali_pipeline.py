"""DALI pipelines: read shard tars, decode 16-bit crops, draw the augmentation and warp, per stream.

One switch for where it runs: device "gpu" -> device_id=local rank, the mixed decoder and .gpu()
image ops; "cpu" -> device_id=None and the same graph on the CPU (what CI runs; docs/stack-notes.md
§2). The output of every pipeline is the *raw* stream dict of streams.py (crops in mm, warped and
noisy; random draws; stored labels), turned into the batch contract by streams.finish in torch.

The warp matrix is built in the graph from crop.f32 and the draws with the formula of augment.py
(affine_node); warp_affine samples nearest with pixel centres at +0.5 and fills 0 outside. The
per-pixel depth noise is drawn in torch on the output device (dali_backend): DALI's CPU normal
generator cost more than decoding and warping together (measured: 2.2x fewer samples per CPU-second).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline, do_not_convert
import nvidia.dali.math as dmath
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from murauer_dist.batches.augment import SCALE, U_C, V_C, X_C, Y_C, Z_C
from murauer_dist.shards import schema
from murauer_dist.shards.read import dali_index_paths
from murauer_dist.batches.streams import needed_members, synth_field
from murauer_dist.frames.datasets import Camera, spec_of
from murauer_dist.geometry import stored_size
from murauer_dist.seeds import derive_seed

SOURCE_INFO_BYTES = 1024       # "shard.tar:offset:key.member", zero-padded to one width for the iterator
READER = "reader"
DALI_TYPES = {np.dtype(np.float32): types.FLOAT, np.dtype(np.uint16): types.UINT16, np.dtype(np.uint8): types.UINT8}


def resolve_device(device: str, training_device=None) -> str:
    """DALI's device: "auto" follows the training device (GPU batches for a CUDA model, else CPU)."""
    if device == "auto":
        if training_device is not None:
            return "gpu" if getattr(training_device, "type", str(training_device)) == "cuda" else "cpu"
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device not in ("gpu", "cpu"):
        raise ValueError(f"loader device must be auto, gpu or cpu, got {device!r}")
    return device


def _read(tars, members: dict, layout: schema.SampleLayout, part: tuple[int, int], shuffle: bool, seed: int,
          buffer: int, name: str) -> dict:
    """webdataset reader over `tars`; one node per raw field (images as bytes, labels as float)."""
    fields, exts = list(members), [members[f] for f in members]
    dtypes = [DALI_TYPES[schema.member_dtype(e)] for e in exts]
    # plain Python file work: keep the conditionals' AutoGraph from trying to convert it
    index_paths = do_not_convert(dali_index_paths)(list(tars))
    nodes = fn.readers.webdataset(paths=list(tars), index_paths=index_paths, ext=exts,
                                  dtypes=dtypes, name=name,
                                  missing_component_behavior="skip", shard_id=part[0], num_shards=part[1],
                                  stick_to_shard=True, random_shuffle=shuffle, initial_fill=buffer, seed=seed,
                                  pad_last_batch=not shuffle,
                                  # read(), not mmap: a shard cut short under a running job is an error
                                  # naming it (train/preflight.py), not a SIGBUS that kills the process
                                  dont_use_mmap=True)
    nodes = nodes if isinstance(nodes, (list, tuple)) else [nodes]
    out = dict(zip(fields, nodes))
    for field in ("crop", "joints"):
        if field in out:
            out[field] = fn.reshape(out[field], shape=list(layout.label_shape(members[field])))
    out["info"] = fn.pad(fn.get_property(nodes[0], key="source_info"), axes=[0], shape=[SOURCE_INFO_BYTES])
    return out


def _decode(node, encoding: str, stored: int, device: str):
    """Encoded crop -> (S,S,1) float32 mm on the pipeline's image device."""
    if encoding == "png":
        image = fn.decoders.image(node, device="mixed" if device == "gpu" else "cpu",
                                  output_type=types.ANY_DATA, dtype=types.UINT16)
    else:
        image = fn.reshape(node, shape=[stored, stored, 1], layout="HWC")
        image = image.gpu() if device == "gpu" else image
    return fn.cast(image, dtype=types.FLOAT)


def affine_node(crop_row, theta, jitter, crop_size: int, stored_size: int, camera: Camera):
    """(2,3) network -> stored pixel matrix, the graph twin of augment.affine_matrix (CPU nodes)."""
    x, y = crop_row[X_C] + jitter[0], crop_row[Y_C] + jitter[1]
    z = crop_row[Z_C] + jitter[2]
    du = camera.ux + camera.fx * x / z - crop_row[U_C]
    dv = camera.uy - camera.fy_signed * y / z - crop_row[V_C]
    cos, sin = dmath.cos(theta), dmath.sin(theta)
    k = crop_row[Z_C] / z
    scale = crop_row[SCALE]
    half_out, half_stored = crop_size / 2.0, stored_size / 2.0
    tx = half_stored + scale * (cos * du + sin * dv) - k * (cos + sin) * half_out
    ty = half_stored + scale * (cos * dv - sin * du) - k * (cos - sin) * half_out
    return fn.stack(fn.stack(k * cos, k * sin, tx), fn.stack(-(k * sin), k * cos, ty))


def _warp(image, matrix, crop_size: int):
    return fn.warp_affine(image, matrix=matrix, size=[crop_size, crop_size], interp_type=types.INTERP_NN,
                          fill_value=0.0, inverse_map=True)


def _chw(image):
    return fn.transpose(image, perm=[2, 0, 1])


class StreamGraph:
    """Settings shared by the graph builders of one pipeline."""

    def __init__(self, cfg, device: str, seed: int, part: tuple[int, int], layout: schema.SampleLayout):
        self.cfg, self.device, self.seed, self.part, self.layout = cfg, device, seed, part, layout
        self.camera = spec_of(cfg).camera          # the loaders checked data.dataset against the shards
        self.crop_size = cfg.data.crop_size
        self.stored_size = stored_size(cfg.data.crop_size, cfg.data.crop_margin)
        aug = cfg.augment
        on = bool(aug.enabled)
        self.rotation = math.radians(aug.rotation_deg) if on else 0.0
        self.jitter_mm = aug.center_jitter_mm if on else 0.0
        self.cond_mm = aug.cond_noise_mm if on else 0.0

    def draws(self, rotate: bool = True) -> dict:
        theta = fn.random.uniform(range=[-1.0, 1.0]) * (self.rotation if rotate else 0.0)
        jitter = fn.random.normal(shape=[3]) * self.jitter_mm
        return {"theta": theta, "jitter": jitter}

    def image(self, encoded, matrix):
        """Decode, warp, CHW: (1,C,C) float mm (depth noise is added in torch, see dali_backend)."""
        warped = _warp(_decode(encoded, self.cfg.data.encoding, self.stored_size, self.device), matrix, self.crop_size)
        return _chw(warped)

    def central(self, encoded):
        """Un-augmented central slice (no jitter, no noise)."""
        offset = (self.stored_size - self.crop_size) / 2.0
        matrix = np.array([[1.0, 0.0, offset], [0.0, 1.0, offset]], dtype=np.float32)
        return self.image(encoded, matrix)

    def read(self, tars, stream: str, shuffle: bool, name: str = READER, part=None) -> dict:
        """A reader of `tars`; a second reader of the pipeline (another `name`) gets its own seed."""
        members = needed_members(stream, self.cfg.data.encoding, self.layout, self.cfg.data.view_camera)
        seed = self.seed if name == READER else derive_seed(self.seed, name)
        return _read(tars, members, self.layout, part or self.part, shuffle, seed, self.cfg.loader.shuffle_buffer,
                     name)


def _labeled_stream(graph: StreamGraph, sample: dict, image_fields: dict, crop_row) -> dict:
    draws = graph.draws()
    matrix = affine_node(crop_row, draws["theta"], draws["jitter"], graph.crop_size, graph.stored_size, graph.camera)
    out = {field: graph.image(sample[member], matrix) for field, member in image_fields.items()}
    return {**out, "crop": sample["crop"], "joints": sample["joints"], **draws, "matrix": matrix,
            "info": sample["info"]}


def pairs_graph(graph: StreamGraph, tars) -> dict:
    sample = graph.read(tars, "pairs", shuffle=True)
    halves = {half: half for half in ("real", "synth") if half in sample}      # real only: no synthetic twins
    return _labeled_stream(graph, sample, halves, sample["crop"][0])


def _slot_pick(cam, sample: dict, slots: tuple[int, ...], index: int = 0):
    """(synth crop, crop row) of camera slot slots[cam] for a per-sample cam: nested if/else over the
    slots (split/merge: only the chosen crop goes on to be decoded)."""
    if index == len(slots) - 1:                # plain Python: the last slot is the final else
        return sample[synth_field(slots[index])], sample["crop"][index]
    if cam == index:
        encoded, row = sample[synth_field(slots[index])], sample["crop"][index]
    else:
        encoded, row = _slot_pick(cam, sample, slots, index + 1)
    return encoded, row


def synth_graph(graph: StreamGraph, tars) -> dict:
    """Independent synthetic crops; camera slot drawn per sample, only that crop decoded."""
    sample = graph.read(tars, "synth", shuffle=True)
    slots = graph.layout.slots
    cam = fn.random.uniform(values=list(range(len(slots))), dtype=types.INT32)
    encoded, row = _slot_pick(cam, sample, slots)
    out = _labeled_stream(graph, {**sample, "depth": encoded}, {"depth": "depth"}, row)
    return {**out, "cam": cam}


def views_graph(graph: StreamGraph, labeled_tars, train_tars, labeled_probability: float, labeled_part) -> dict:
    """Camera-1 input (jitter + noise, no rotation) and the target view; labeled with probability p."""
    labeled = graph.read(labeled_tars, "views", shuffle=True, name=READER, part=labeled_part)
    anyframe = graph.read(train_tars, "views", shuffle=True, name=READER + "_all")
    from_labeled = fn.random.coin_flip(probability=labeled_probability, dtype=types.BOOL)
    if from_labeled:        # split/merge: only the chosen reader's crops are decoded
        real, synth, real_view, synth_view = (labeled[k] for k in ("real", "synth", "real_view", "synth_view"))
        crop, joints, info = labeled["crop"], labeled["joints"], labeled["info"]
    else:
        real, synth, real_view, synth_view = (anyframe[k] for k in ("real", "synth", "real_view", "synth_view"))
        crop, joints, info = anyframe["crop"], anyframe["joints"], anyframe["info"]
    draws = graph.draws(rotate=False)
    matrix = affine_node(crop[0], draws["theta"], draws["jitter"], graph.crop_size, graph.stored_size, graph.camera)
    return {"real": graph.image(real, matrix), "synth": graph.image(synth, matrix),
            "real_view": graph.central(real_view), "synth_view": graph.central(synth_view),
            "cond_real": fn.random.normal(shape=[3]) * graph.cond_mm,
            "cond_synth": fn.random.normal(shape=[3]) * graph.cond_mm,
            "from_labeled": from_labeled, "crop": crop, "joints": joints, **draws, "matrix": matrix, "info": info}


def unlabeled_graph(graph: StreamGraph, tars, stream: str) -> dict:
    sample = graph.read(tars, stream, shuffle=True)
    draws = graph.draws()
    matrix = affine_node(sample["crop"][0], draws["theta"], draws["jitter"], graph.crop_size, graph.stored_size,
                         graph.camera)
    return {"depth": graph.image(sample["depth"], matrix), "crop": sample["crop"], **draws,
            "matrix": matrix, "info": sample["info"]}


def eval_graph(graph: StreamGraph, tars, stream: str = "eval") -> dict:
    sample = graph.read(tars, stream, shuffle=False)
    return {"depth": graph.central(sample["depth"]), "crop": sample["crop"], "joints": sample["joints"],
            "info": sample["info"]}


def build_iterator(builder, graph: StreamGraph, batch_size: int, device_id, threads: int, finite: bool,
                   *args) -> tuple[DALIGenericIterator, list[str], Pipeline]:
    """Build one pipeline from `builder(graph, *args)` and wrap it in a DALIGenericIterator (which makes
    the first batch now); the pipeline is returned too, for shutdown()."""
    names: list[str] = []

    @pipeline_def(enable_conditionals=True)
    def pipe():
        outputs = builder(graph, *args)
        names.extend(outputs)
        return tuple(outputs.values())

    pipeline = pipe(batch_size=batch_size, num_threads=threads, device_id=device_id, seed=graph.seed,
                    prefetch_queue_depth=2)
    pipeline.build()
    if finite:
        iterator = DALIGenericIterator([pipeline], names, reader_name=READER,
                                       last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False)
    else:
        iterator = DALIGenericIterator([pipeline], names, size=-1)
    return iterator, names, pipeline


def shutdown(pipeline: Pipeline) -> None:
    """Stop a pipeline's threads now, not when the garbage collector (or DALI's exit hook) gets to it:
    what Pipeline.__del__ calls; DALI has no public close."""
    pipeline._shutdown()


def frames_from_info(info) -> np.ndarray:
    """Padded source_info bytes (B, L) -> frame indices (B,), from the sample key f<frame:07d>."""
    rows = np.asarray(info.cpu().numpy(), dtype=np.uint8)
    frames = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        text = row.tobytes().rstrip(b"\0").decode()
        key, _ = schema.split_member_name(text.rsplit(":", 1)[-1])
        frames[i] = schema.frame_of_key(key, f"sample {text!r}")
    return frames

"""Shard schema version 1: the one place that knows a sample's key, members, encodings and shapes.

The writer, `make-shards --verify`, the labeled subsets and both loaders (DALI and reference) take
all of it from here; shards/README.md describes it. One sample per frame, key `f{frame:07d}`:
    real{k}.{png|u16}  synth{k}.{png|u16}   stored depth crops S x S, uint16 mm, camera slot k = 1..C
                                          (synth{k} only for a dataset with synthetic twins)
    joints.f32   float32 (C slots, 2 [uvd, xyz], J joints, 3)
    crop.f32     float32 (C slots, 8) = u_c, v_c, d_c, x_c, y_c, z_c, cube_mm, scale
    meta.json    {"schema", "frame", "split", "crop_size", "stored_size", "margin", "encoding", "cameras"}

The shapes are functions of the number of camera slots C and joints J (joints_shape, crop_shape,
SampleLayout) and the members of the dataset's domains: SampleLayout.of_spec(spec) gives a dataset's
layout (NYU: C = 3, J = 14, real and synth), SampleLayout.of(meta, spec) the one a sample's meta.json
and its dataset describe. There are no defaults: a layout always names its dataset's numbers.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from murauer_dist.errors import UserError

SCHEMA_VERSION = 1
DOMAINS = ("real", "synth")                        # every domain a sample may hold (synth: where the dataset has twins)
ENCODINGS = {"png": "png", "raw": "u16"}          # data.encoding -> crop member extension
JOINTS_MEMBER, CROP_MEMBER, META_MEMBER = "joints.f32", "crop.f32", "meta.json"
CROP_FIELDS = ("u_c", "v_c", "d_c", "x_c", "y_c", "z_c", "cube_mm", "scale")
META_KEYS = ("schema", "frame", "split", "crop_size", "stored_size", "margin", "encoding", "cameras")
# Bytes of a member by its extension: little-endian arrays; other members (png, json) are encoded bytes.
MEMBER_DTYPES = {"f32": np.dtype("<f4"), "u16": np.dtype("<u2")}
ENCODED_DTYPE = np.dtype(np.uint8)
PNG_COMPRESS_LEVEL = 1                             # level 6: 22% smaller crops, 3x the encode time
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SchemaError(UserError, ValueError):
    """Sample bytes that do not follow the shard schema."""


def camera_slots(num_cameras: int) -> tuple[int, ...]:
    """The 1-based camera slots of a sample (the k of real{k}, synth{k})."""
    return tuple(range(1, num_cameras + 1))


def joints_shape(num_cameras: int, num_joints: int) -> tuple[int, ...]:
    """Shape of joints.f32: [camera slot][uvd, xyz][joint][coordinate]."""
    return (num_cameras, 2, num_joints, 3)


def crop_shape(num_cameras: int) -> tuple[int, ...]:
    """Shape of crop.f32: [camera slot][CROP_FIELDS]."""
    return (num_cameras, len(CROP_FIELDS))


@dataclass(frozen=True)
class SampleLayout:
    """How many camera slots and joints, and which domains, the samples of a shard set hold."""

    num_cameras: int
    num_joints: int
    domains: tuple[str, ...] = DOMAINS

    @classmethod
    def of_spec(cls, spec) -> SampleLayout:
        """The layout of a dataset's samples (a datasets.DatasetSpec)."""
        return cls(num_cameras=spec.num_cameras, num_joints=spec.joints.count, domains=spec.domains)

    @classmethod
    def of(cls, meta: dict, spec) -> SampleLayout:
        """The layout a sample's meta.json describes (one slot per entry of "cameras") with the joints and
        domains of its dataset `spec` (schema 1 records neither)."""
        cameras = meta.get("cameras")
        num_cameras = len(cameras) if isinstance(cameras, list) and cameras else spec.num_cameras
        return cls(num_cameras=num_cameras, num_joints=spec.joints.count, domains=spec.domains)

    @property
    def slots(self) -> tuple[int, ...]:
        return camera_slots(self.num_cameras)

    @property
    def joints_shape(self) -> tuple[int, ...]:
        return joints_shape(self.num_cameras, self.num_joints)

    @property
    def crop_shape(self) -> tuple[int, ...]:
        return crop_shape(self.num_cameras)

    def label_shape(self, member: str) -> tuple[int, ...]:
        """Shape of a label member (joints.f32 or crop.f32)."""
        shapes = {JOINTS_MEMBER: self.joints_shape, CROP_MEMBER: self.crop_shape}
        if member not in shapes:
            raise SchemaError(f"{member!r} is not a label member ({', '.join(shapes)})")
        return shapes[member]


def sample_key(frame: int) -> str:
    return f"f{frame:07d}"


def frame_of_key(key: str, where: str = "") -> int:
    """The frame of a sample key; the exact inverse of sample_key (SchemaError otherwise)."""
    if not (key[:1] == "f" and key[1:].isdigit() and sample_key(int(key[1:])) == key):
        raise SchemaError(f"{where + ': ' if where else ''}sample key {key!r} is not of the form f{{frame:07d}}")
    return int(key[1:])


def split_member_name(name: str) -> tuple[str, str]:
    """A tar member name -> (sample key, member): `dir/f0000012.real1.png` -> ("f0000012", "real1.png")."""
    key, _, member = name.rsplit("/", 1)[-1].partition(".")
    return key, member


def check_version(meta: dict, where: str) -> None:
    """SchemaError unless meta.json (or a manifest) says this schema version."""
    if meta.get("schema") != SCHEMA_VERSION:
        raise SchemaError(f"{where}: schema {meta.get('schema')!r}, this code reads schema {SCHEMA_VERSION}; "
                          f"re-make the shards with make-shards")


def crop_member(domain: str, slot: int, encoding: str) -> str:
    return f"{domain}{slot}.{ENCODINGS[encoding]}"


def crop_members(encoding: str, layout: SampleLayout) -> tuple[str, ...]:
    """The stored crop members of a sample: every domain of the layout, every camera slot."""
    return tuple(crop_member(domain, slot, encoding) for domain in layout.domains for slot in layout.slots)


def member_names(encoding: str, layout: SampleLayout) -> tuple[str, ...]:
    """All member names (without the key) of a sample, in the sorted order they appear in the tar."""
    return tuple(sorted(crop_members(encoding, layout) + (JOINTS_MEMBER, CROP_MEMBER, META_MEMBER)))


def member_dtype(member: str) -> np.dtype:
    """The element type of a member's bytes: float32 labels, uint16 raw crops, else encoded bytes (uint8)."""
    return MEMBER_DTYPES.get(member.rsplit(".", 1)[-1], ENCODED_DTYPE)


def encode_meta(frame: int, split: str, crop_size: int, stored_size: int, margin: float, encoding: str,
                cameras: list[int]) -> bytes:
    meta = {"schema": SCHEMA_VERSION, "frame": frame, "split": split, "crop_size": crop_size,
            "stored_size": stored_size, "margin": margin, "encoding": encoding, "cameras": list(cameras)}
    return json.dumps(meta, sort_keys=True).encode()


def encode_labels(member: str, values: np.ndarray, layout: SampleLayout) -> bytes:
    """joints.f32 / crop.f32 bytes of an array of the layout's shape."""
    values = np.asarray(values)
    if values.shape != layout.label_shape(member):
        raise SchemaError(f"{member}: shape {values.shape}, the schema says {layout.label_shape(member)}")
    return values.astype(MEMBER_DTYPES["f32"]).tobytes()


def decode_labels(member: str, data: bytes, layout: SampleLayout) -> np.ndarray:
    """joints.f32 / crop.f32 bytes -> float32 array of the layout's shape."""
    shape = layout.label_shape(member)
    expected = 4 * int(np.prod(shape))
    if len(data) != expected:
        raise SchemaError(f"{member}: {len(data)} bytes, expected {expected} (float32 {shape})")
    return np.frombuffer(data, dtype=MEMBER_DTYPES["f32"]).reshape(shape).astype(np.float32)


def encode_crop(crop_mm: np.ndarray, encoding: str) -> bytes:
    crop = np.ascontiguousarray(crop_mm, dtype=np.uint16)
    if encoding == "raw":
        return crop.astype(MEMBER_DTYPES["u16"], copy=False).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)  # mode I;16
    return buffer.getvalue()


def decode_crop(data: bytes, member: str, size: int) -> np.ndarray:
    """A stored crop member (`.png` or `.u16`) -> uint16 (size, size) in mm."""
    if member.endswith(".u16"):
        if len(data) != size * size * 2:
            raise SchemaError(f"{member}: {len(data)} bytes, expected {size}x{size}x2 = {size * size * 2}")
        return np.frombuffer(data, dtype=MEMBER_DTYPES["u16"]).reshape(size, size).astype(np.uint16)
    with Image.open(io.BytesIO(data)) as image:
        crop = np.array(image)
    if crop.dtype != np.uint16 or crop.shape != (size, size):
        raise SchemaError(f"{member}: decoded to {crop.dtype} {crop.shape}, expected uint16 ({size}, {size})")
    return crop


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk, without decoding it."""
    if len(data) < 26 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise SchemaError("not a PNG (signature or IHDR chunk missing)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    return width, height, bit_depth, colour_type


def check_member_size(member: str, data: bytes, stored_size: int, layout: SampleLayout) -> None:
    """Cheap structural check of one member (sizes, PNG header); raises SchemaError."""
    if member.endswith(".u16"):
        decode_crop(data, member, stored_size)
    elif member.endswith(".png"):
        header = png_header(data)
        if header != (stored_size, stored_size, 16, 0):
            raise SchemaError(f"{member}: PNG {header[0]}x{header[1]}, {header[2]}-bit, colour type {header[3]}; "
                              f"expected {stored_size}x{stored_size} 16-bit grayscale")
    elif member in (JOINTS_MEMBER, CROP_MEMBER):
        decode_labels(member, data, layout)
    elif member == META_MEMBER:
        check_version(json.loads(data), META_MEMBER)


def decode_member(member: str, data: bytes, stored_size: int, layout: SampleLayout) -> np.ndarray:
    """A crop member -> uint16 (S, S) mm; a label member -> float32 of the layout's shape."""
    if member in (JOINTS_MEMBER, CROP_MEMBER):
        return decode_labels(member, data, layout)
    return decode_crop(data, member, stored_size)


def decode_sample(sample: dict, layout: SampleLayout) -> dict:
    """A webdataset sample (member name -> bytes, plus `__key__`) -> named numpy arrays.

    Returns {"key", "meta", "joints" float32 joints_shape, "crop" float32 crop_shape, "real1".."real{C}"
    (and "synth1".."synth{C}" where the layout has synth) (S,S) uint16}; `layout`: the dataset's
    (SampleLayout.of_spec). For tests and tools.
    """
    meta = json.loads(sample[META_MEMBER])
    size, encoding = meta["stored_size"], meta["encoding"]
    decoded = {"key": sample["__key__"], "meta": meta,
               "joints": decode_labels(JOINTS_MEMBER, sample[JOINTS_MEMBER], layout),
               "crop": decode_labels(CROP_MEMBER, sample[CROP_MEMBER], layout)}
    for domain in layout.domains:
        for slot in layout.slots:
            member = crop_member(domain, slot, encoding)
            decoded[f"{domain}{slot}"] = decode_crop(sample[member], member, size)
    return decoded

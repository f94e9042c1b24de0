"""Shard schema version 1: member names, shapes and byte encodings of one sample (see shards/README.md).

One sample per frame, key `f{frame:07d}`:
    real{1,2,3}.{png|u16}  synth{1,2,3}.{png|u16}   stored depth crops S x S, uint16 mm
    joints.f32   float32 (3 cams, 2 [uvd, xyz], 14 joints, 3)
    crop.f32     float32 (3 cams, 8) = u_c, v_c, d_c, x_c, y_c, z_c, cube_mm, scale
    meta.json    {"schema", "frame", "split", "crop_size", "stored_size", "margin", "encoding", "cameras"}
"""
from __future__ import annotations

import io
import json
import struct

import numpy as np
from PIL import Image

from murauer_dist.errors import UserError

SCHEMA_VERSION = 1
CAMERA_SLOTS = (1, 2, 3)
DOMAINS = ("real", "synth")
ENCODINGS = {"png": "png", "raw": "u16"}          # data.encoding -> member extension
JOINTS_SHAPE = (3, 2, 14, 3)                       # [cam slot][uvd, xyz][eval joint][coord]
CROP_FIELDS = ("u_c", "v_c", "d_c", "x_c", "y_c", "z_c", "cube_mm", "scale")
CROP_SHAPE = (3, len(CROP_FIELDS))
PNG_COMPRESS_LEVEL = 1                             # level 6: 22% smaller crops, 3x the encode time
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SchemaError(UserError, ValueError):
    """Sample bytes that do not follow the shard schema."""


def sample_key(frame: int) -> str:
    return f"f{frame:07d}"


def frame_of_key(key: str) -> int:
    if len(key) != 8 or key[0] != "f" or not key[1:].isdigit():
        raise SchemaError(f"sample key {key!r} is not of the form f{{frame:07d}}")
    return int(key[1:])


def crop_member(domain: str, slot: int, encoding: str) -> str:
    return f"{domain}{slot}.{ENCODINGS[encoding]}"


def member_names(encoding: str) -> tuple[str, ...]:
    """All member names (without the key) of a sample, in the sorted order they appear in the tar."""
    crops = [crop_member(domain, slot, encoding) for domain in DOMAINS for slot in CAMERA_SLOTS]
    return tuple(sorted(crops + ["joints.f32", "crop.f32", "meta.json"]))


def encode_crop(crop_mm: np.ndarray, encoding: str) -> bytes:
    crop = np.ascontiguousarray(crop_mm, dtype=np.uint16)
    if encoding == "raw":
        return crop.astype("<u2", copy=False).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)  # mode I;16
    return buffer.getvalue()


def decode_crop(data: bytes, member: str, size: int) -> np.ndarray:
    """A stored crop member (`.png` or `.u16`) -> uint16 (size, size) in mm."""
    if member.endswith(".u16"):
        if len(data) != size * size * 2:
            raise SchemaError(f"{member}: {len(data)} bytes, expected {size}x{size}x2 = {size * size * 2}")
        return np.frombuffer(data, dtype="<u2").reshape(size, size).astype(np.uint16)
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


def check_member_size(member: str, data: bytes, stored_size: int) -> None:
    """Cheap structural check of one member (sizes, PNG header); raises SchemaError."""
    if member.endswith(".u16"):
        decode_crop(data, member, stored_size)
    elif member.endswith(".png"):
        header = png_header(data)
        if header != (stored_size, stored_size, 16, 0):
            raise SchemaError(f"{member}: PNG {header[0]}x{header[1]}, {header[2]}-bit, colour type {header[3]}; "
                              f"expected {stored_size}x{stored_size} 16-bit grayscale")
    elif member == "joints.f32" and len(data) != 4 * int(np.prod(JOINTS_SHAPE)):
        raise SchemaError(f"joints.f32: {len(data)} bytes, expected {4 * int(np.prod(JOINTS_SHAPE))}")
    elif member == "crop.f32" and len(data) != 4 * int(np.prod(CROP_SHAPE)):
        raise SchemaError(f"crop.f32: {len(data)} bytes, expected {4 * int(np.prod(CROP_SHAPE))}")
    elif member == "meta.json":
        meta = json.loads(data)
        if meta.get("schema") != SCHEMA_VERSION:
            raise SchemaError(f"meta.json: schema {meta.get('schema')!r}, expected {SCHEMA_VERSION}")


def decode_sample(sample: dict) -> dict:
    """A webdataset sample (member name -> bytes, plus `__key__`) -> named numpy arrays.

    Returns {"key", "meta", "joints" (3,2,14,3) float32, "crop" (3,8) float32,
    "real1".."synth3" (S,S) uint16}. For the reference loader and tests.
    """
    meta = json.loads(sample["meta.json"])
    size, encoding = meta["stored_size"], meta["encoding"]
    decoded = {"key": sample["__key__"], "meta": meta,
               "joints": np.frombuffer(sample["joints.f32"], dtype="<f4").reshape(JOINTS_SHAPE),
               "crop": np.frombuffer(sample["crop.f32"], dtype="<f4").reshape(CROP_SHAPE)}
    for domain in DOMAINS:
        for slot in CAMERA_SLOTS:
            member = crop_member(domain, slot, encoding)
            decoded[f"{domain}{slot}"] = decode_crop(sample[member], member, size)
    return decoded

"""One frame -> one sample (a stored crop per camera slot and domain, joints, crop transforms, meta);
one shard -> one tar. The domains are the dataset's (real, and synth where it has synthetic twins).

Tars are deterministic (webdataset TarWriter with mtime 0, uid/gid 0, empty user/group names, USTAR,
members sorted by name, samples in frame order), so a resumed run writes the same bytes as an
uninterrupted one. A tar is written under a temporary name, then renamed, then its sidecar record
(sample count, SHA-256, per-sample digests, skipped frames, source root and source digest) is
written: a shard counts as finished only when its sidecar exists, its hash matches and its source
is still the same.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import webdataset as wds

from murauer_dist import geometry
from murauer_dist.frames import nyu
from murauer_dist.frames.readers import FrameReader
from murauer_dist.shards.manifest import shard_name, write_sidecar
from murauer_dist.shards.plan import SplitPlan
from murauer_dist.shards.schema import (CROP_MEMBER, JOINTS_MEMBER, META_MEMBER, SampleLayout,
                                             crop_member, encode_crop, encode_labels, encode_meta, sample_key)
from murauer_dist.errors import with_path

SKIPPABLE = (geometry.CropError, nyu.LayoutError)   # frame-level failures: skip and record, never crash
TEMP_PREFIX = ".tmp-"


def sample_layout(plan: SplitPlan) -> SampleLayout:
    """The camera slots, evaluated joints and domains of the plan's dataset."""
    return SampleLayout.of_spec(plan.spec)


def crop_slot(split: FrameReader, plan: SplitPlan, frame: int, slot: int) -> dict:
    """The stored crops of one camera slot (each domain of the dataset), its eval joints and its crop record."""
    camera = plan.physical_camera(frame, slot)
    labels = split.labels(frame, camera)
    center = labels.center_uvd
    where = f"{plan.source_split}/{frame} camera {camera}"
    if not (np.all(np.isfinite(center)) and center[2] > 0):
        raise geometry.CropError(f"frame {where}: palm centre {np.round(center, 2).tolist()} has no valid depth")
    cube = plan.cube_for(frame)
    window = geometry.CropWindow.around(center, cube, plan.stored_size, margin=plan.margin, camera=split.spec.camera)
    crops = {}
    for domain in split.spec.domains:
        stored = geometry.crop_depth(split.depth(frame, camera, domain), window, frame=f"{where} {domain}")
        geometry.check_crop(geometry.center_crop(stored, plan.crop_size), center[2], cube, frame=f"{where} {domain}")
        crops[domain] = stored
    joints = np.stack([labels.eval_uvd, labels.eval_xyz])                       # (2, joints, 3)
    record = np.array([*center, *labels.center_xyz, cube, window.scale], dtype=np.float64)
    return {"camera": camera, "crops": crops, "joints": joints, "crop": record}


def build_sample(split: FrameReader, plan: SplitPlan, frame: int) -> dict[str, bytes]:
    """The tar members of frame `frame` (raises a SKIPPABLE error when the frame cannot be cropped)."""
    layout = sample_layout(plan)              # the dataset's camera slots and evaluation joints
    slots = {slot: crop_slot(split, plan, frame, slot) for slot in layout.slots}
    sample = {"__key__": sample_key(frame)}
    for slot, parts in slots.items():
        for domain in layout.domains:
            sample[crop_member(domain, slot, plan.encoding)] = encode_crop(parts["crops"][domain], plan.encoding)
    for member, part in ((JOINTS_MEMBER, "joints"), (CROP_MEMBER, "crop")):
        sample[member] = encode_labels(member, np.stack([slots[s][part] for s in layout.slots]), layout)
    sample[META_MEMBER] = encode_meta(frame, plan.split, plan.crop_size, plan.stored_size, plan.margin,
                                      plan.encoding, [slots[s]["camera"] for s in layout.slots])
    return sample


def source_root(split: FrameReader) -> str:
    """The dataset root a shard set records as its source: the resolved path."""
    return str(Path(split.root).resolve())


def source_digest(split: FrameReader, plan: SplitPlan, index: int) -> str:
    """Digest of what shard `index` reads: per frame the labels of all cameras (both arrays of
    labels file) and the name, size and mtime of each of its depth PNGs ("missing" when absent).

    Stat calls, no reading: a finished shard is checked against its source in microseconds per
    frame when a run resumes. Taken before the shard's images are read, so a file that changes
    while the shard is written makes the next run see a changed source.
    """
    digest = hashlib.blake2b(digest_size=16)
    for frame in plan.shard_frames(index):
        digest.update(f"frame {frame}\n".encode())
        for camera in split.cameras:
            labels = split.labels(frame, camera)
            digest.update(np.ascontiguousarray(labels.uvd, "<f8").tobytes())
            digest.update(np.ascontiguousarray(labels.xyz, "<f8").tobytes())
            for domain in split.spec.domains:
                path = split.depth_path(frame, camera, domain)
                try:
                    stat = path.stat()
                    digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
                except OSError as err:
                    digest.update(f"{path.name} unreadable: {type(err).__name__}\n".encode())
    return digest.hexdigest()


def sample_digest(sample: dict[str, bytes]) -> str:
    """Digest over a sample's member names and bytes; lets --verify name the first bad sample."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(k for k in sample if not k.startswith("__")):
        digest.update(name.encode() + b"\0" + len(sample[name]).to_bytes(8, "little") + bytes(sample[name]))
    return digest.hexdigest()


class HashingFile:
    """Write-through file wrapper that computes the SHA-256 of everything written."""

    def __init__(self, handle):
        self.handle, self.sha256, self.size = handle, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def deterministic_tar_writer(handle) -> wds.TarWriter:
    return wds.TarWriter(handle, user="", group="", mode=0o444, encoder=False, mtime=0.0)


def write_shard(split: FrameReader, plan: SplitPlan, folder: Path, index: int) -> dict:
    """Write shard `index` of `plan` into `folder` (temp name, then rename) and its sidecar; return the record."""
    final = folder / shard_name(index)
    temp = folder / f"{TEMP_PREFIX}{final.name}.{os.getpid()}"
    source = source_digest(split, plan, index)
    samples, skipped = [], []
    try:
        with open(temp, "wb") as raw:
            hashing = HashingFile(raw)
            with deterministic_tar_writer(hashing) as tar:
                for frame in plan.shard_frames(index):
                    try:
                        sample = build_sample(split, plan, frame)
                    except SKIPPABLE as err:
                        skipped.append({"frame": frame, "key": sample_key(frame), "reason": str(err)})
                        continue
                    tar.write(sample)
                    samples.append({"key": sample["__key__"], "digest": sample_digest(sample)})
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, final)
    except OSError as err:
        temp.unlink(missing_ok=True)
        if err.filename not in (None, str(temp)):
            raise                                   # about another file (an image it read)
        raise with_path(err, final) from None       # a full disk, a read-only folder: name the shard
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    frames = plan.shard_frames(index)
    record = {"name": final.name, "index": index, "fingerprint": plan.fingerprint,
              "frames": [frames.start, frames.stop], "samples": len(samples), "bytes": hashing.size,
              "sha256": hashing.sha256.hexdigest(), "sample_digests": {s["key"]: s["digest"] for s in samples},
              "skipped": skipped, "source_root": source_root(split), "source_digest": source}
    write_sidecar(folder, record)
    return record

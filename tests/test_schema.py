"""The shard schema (shards/schema.py) against the writer and both readers (DALI on the CPU, reference)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from murauer_dist.frames.datasets import NYU
from murauer_dist import geometry
from murauer_dist.config import load_config
from murauer_dist.batches.eval_loader import build_eval_loader
from murauer_dist.shards import read, schema
from murauer_dist.shards.cli import make_shard_set
from murauer_dist.shards.handmade import make_nyu_layout
from murauer_dist.shards.manifest import read_manifest, shard_paths
from murauer_dist.shards.writer import deterministic_tar_writer

CROP = 32
BACKENDS = ("dali", "reference")


NYU_LAYOUT = schema.SampleLayout.of_spec(NYU)

def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """Shard sets made by the writer from one hand-made NYU layout, one per encoding."""
    root = make_nyu_layout(tmp_path_factory.mktemp("nyu"), frames_train=4, frames_test=3, seed=5)
    sets = {}
    for encoding in schema.ENCODINGS:
        out = tmp_path_factory.mktemp(f"shards-{encoding}")
        make_shard_set(str(root), str(out), shard_size=2, workers=1, log=quiet,
                       overrides=[f"data.crop_size={CROP}", f"data.encoding={encoding}", "data.val_fraction=0.25"])
        sets[encoding] = out
    return sets


def make_cfg(shards_dir: Path, backend: str, *overrides: str):
    return load_config("tiny", [f"data.shards={shards_dir}", f"data.crop_size={CROP}", f"loader.backend={backend}",
                                "loader.num_threads=1", "loader.eval_batch=2", *overrides])


def stored_samples(folder: Path, split: str = "test") -> dict[int, dict]:
    """frame -> schema.decode_sample of every sample of a split, read with plain webdataset."""
    dataset = wds.WebDataset([str(path) for path in shard_paths(folder, split)], shardshuffle=False)
    return {schema.frame_of_key(sample["__key__"]): schema.decode_sample(sample, NYU_LAYOUT) for sample in dataset}


def eval_raws(cfg, backend: str, layout: schema.SampleLayout | None = None) -> list[dict]:
    """The raw eval batches (before streams.finish) of the test split, from one backend, in the
    layout the eval loader reads from the samples (or `layout`)."""
    loader = build_eval_loader(cfg, "test")
    layout = layout or loader.layout
    if backend == "dali":
        from murauer_dist.batches.dali_backend import dali_eval_raw
        return list(dali_eval_raw(cfg, loader.tars, (0, 1), torch.device("cpu"), layout))
    from murauer_dist.batches.reference_backend import reference_eval_raw
    return list(reference_eval_raw(cfg, loader.samples, loader.stored, layout))


# ---- the schema itself


@pytest.mark.parametrize("frame", [0, 7, 72756, 9_999_999, 12_345_678])
def test_sample_key_round_trip(frame):
    key = schema.sample_key(frame)
    assert schema.frame_of_key(key) == frame
    assert schema.split_member_name(f"{key}.real1.png") == (key, "real1.png")
    assert schema.split_member_name(f"some/folder/{key}.meta.json") == (key, "meta.json")


@pytest.mark.parametrize("key", ["f12", "f00000012", "g0000012", "f000001a", "f-000001", "f", ""])
def test_a_key_sample_key_does_not_write_is_refused(key):
    with pytest.raises(schema.SchemaError, match=r"shard x.tar: sample key .* is not of the form f\{frame:07d\}"):
        schema.frame_of_key(key, "shard x.tar")


def test_shapes_are_functions_of_the_datasets_cameras_joints_and_domains():
    assert NYU_LAYOUT == schema.SampleLayout(3, len(geometry.EVAL_JOINTS), ("real", "synth"))
    assert NYU_LAYOUT.joints_shape == schema.joints_shape(3, 14) == (3, 2, 14, 3)
    assert NYU_LAYOUT.crop_shape == schema.crop_shape(3) == (3, 8) and NYU_LAYOUT.slots == schema.camera_slots(3)
    layout = schema.SampleLayout(num_cameras=2, num_joints=5)
    assert (layout.slots, layout.joints_shape, layout.crop_shape) == ((1, 2), (2, 2, 5, 3), (2, 8))
    assert schema.joints_shape(2, 5) == layout.joints_shape and schema.crop_shape(2) == layout.crop_shape
    assert schema.SampleLayout.of({"cameras": [1, 3]}, NYU) == schema.SampleLayout(num_cameras=2, num_joints=14)
    assert schema.SampleLayout.of({}, NYU) == NYU_LAYOUT
    assert schema.member_names("png", layout) == ("crop.f32", "joints.f32", "meta.json", "real1.png",
                                                  "real2.png", "synth1.png", "synth2.png")
    real_only = schema.SampleLayout(num_cameras=1, num_joints=5, domains=("real",))
    assert schema.member_names("raw", real_only) == ("crop.f32", "joints.f32", "meta.json", "real1.u16")
    with pytest.raises(TypeError):
        schema.SampleLayout()                                     # no dataset's numbers by default


def test_labels_round_trip_in_the_layouts_shape_and_refuse_another():
    layout = schema.SampleLayout(num_cameras=2, num_joints=5)
    for member in (schema.JOINTS_MEMBER, schema.CROP_MEMBER):
        shape = layout.label_shape(member)
        values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 7.5
        data = schema.encode_labels(member, values, layout)
        assert len(data) == 4 * values.size
        decoded = schema.decode_labels(member, data, layout)
        assert decoded.dtype == np.float32
        np.testing.assert_array_equal(decoded, values)
        with pytest.raises(schema.SchemaError, match="the schema says"):
            schema.encode_labels(member, values, NYU_LAYOUT)
        with pytest.raises(schema.SchemaError, match="bytes, expected"):
            schema.decode_labels(member, data, NYU_LAYOUT)
    with pytest.raises(schema.SchemaError, match="not a label member"):
        layout.label_shape("real1.png")


@pytest.mark.parametrize("encoding", sorted(schema.ENCODINGS))
def test_crops_round_trip_and_member_types(encoding):
    crop = np.random.default_rng(1).integers(0, 4000, size=(52, 52)).astype(np.uint16)
    member = schema.crop_member("real", 2, encoding)
    assert member == f"real2.{schema.ENCODINGS[encoding]}"
    np.testing.assert_array_equal(schema.decode_crop(schema.encode_crop(crop, encoding), member, 52), crop)
    expected = np.uint16 if encoding == "raw" else np.uint8          # png: encoded bytes
    assert schema.member_dtype(member) == np.dtype(expected)
    assert schema.member_dtype(schema.JOINTS_MEMBER) == schema.member_dtype(schema.CROP_MEMBER) == np.float32


def test_version_check():
    schema.check_version({"schema": schema.SCHEMA_VERSION}, "x")
    for meta in ({"schema": schema.SCHEMA_VERSION + 1}, {}):
        with pytest.raises(schema.SchemaError, match=f"shard a.tar: schema .*, this code reads schema "
                                                     f"{schema.SCHEMA_VERSION}"):
            schema.check_version(meta, "shard a.tar")
    meta = json.loads(schema.encode_meta(3, "test", 32, 52, 1.625, "png", [1, 2, 3]))
    assert tuple(meta) == tuple(sorted(schema.META_KEYS)) and meta["schema"] == schema.SCHEMA_VERSION
    meta["schema"] = 2
    with pytest.raises(schema.SchemaError, match="meta.json: schema 2"):
        schema.check_member_size(schema.META_MEMBER, json.dumps(meta).encode(), 52, NYU_LAYOUT)


# ---- the writer


@pytest.mark.parametrize("encoding", sorted(schema.ENCODINGS))
def test_writer_writes_the_schemas_members_keys_shapes_and_version(written, encoding):
    out = written[encoding]
    for split in ("train", "val", "test"):
        manifest = read_manifest(out / split)
        assert manifest["schema"] == manifest["settings"]["schema"] == schema.SCHEMA_VERSION
        for tar_path in shard_paths(out, split):
            with tarfile.open(tar_path) as tar:
                names = [schema.split_member_name(name) for name in tar.getnames()]
            keys = list(dict.fromkeys(key for key, _ in names))
            for key in keys:                                     # every member, in the schema's (tar) order
                assert tuple(member for k, member in names if k == key) == schema.member_names(encoding, NYU_LAYOUT)
            frames = [schema.frame_of_key(key) for key in keys]
            assert [schema.sample_key(frame) for frame in frames] == keys
            assert read.frames_in([str(tar_path)]) == frames     # the loaders' header scan agrees
            for sample in wds.WebDataset([str(tar_path)], shardshuffle=False):
                decoded = schema.decode_sample(sample, NYU_LAYOUT)
                meta = decoded["meta"]
                assert sorted(meta) == sorted(schema.META_KEYS) and meta["schema"] == schema.SCHEMA_VERSION
                assert meta["frame"] == schema.frame_of_key(sample["__key__"]) and meta["encoding"] == encoding
                assert schema.SampleLayout.of(meta, NYU) == NYU_LAYOUT
                assert decoded["joints"].shape == NYU_LAYOUT.joints_shape and decoded["crop"].shape == NYU_LAYOUT.crop_shape
                for member in schema.member_names(encoding, NYU_LAYOUT):
                    schema.check_member_size(member, sample[member], meta["stored_size"], NYU_LAYOUT)
    assert read.sample_layout([str(p) for p in shard_paths(out, "train")], NYU) == NYU_LAYOUT


# ---- both readers


@pytest.mark.parametrize("backend", BACKENDS)
def test_readers_give_the_schemas_shapes_and_the_stored_labels(written, backend):
    out = written["png"]
    stored = stored_samples(out)
    raws = eval_raws(make_cfg(out, backend), backend)
    frames = [frame for raw in raws for frame in raw["frame"].tolist()]
    assert frames == sorted(stored)
    for raw in raws:
        assert raw["crop"].shape[1:] == NYU_LAYOUT.crop_shape and raw["joints"].shape[1:] == NYU_LAYOUT.joints_shape
        for i, frame in enumerate(raw["frame"].tolist()):
            np.testing.assert_array_equal(raw["crop"][i].numpy(), stored[frame]["crop"])
            np.testing.assert_array_equal(raw["joints"][i].numpy(), stored[frame]["joints"])


def write_layout_shard(out: Path, layout: schema.SampleLayout, crop_size: int, margin: float,
                       frames: list[int]) -> dict[int, dict]:
    """A test split whose samples hold `layout`'s camera slots and joints, written from the schema alone."""
    stored_size = geometry.stored_size(crop_size, margin)
    rng = np.random.default_rng(4)
    folder = out / "test"
    folder.mkdir(parents=True)
    written = {}
    with open(folder / "shard-000000.tar", "wb") as handle, deterministic_tar_writer(handle) as tar:
        for frame in frames:
            labels = {member: rng.normal(0, 100, size=layout.label_shape(member)).astype(np.float32)
                      for member in (schema.JOINTS_MEMBER, schema.CROP_MEMBER)}
            sample = {"__key__": schema.sample_key(frame),
                      schema.META_MEMBER: schema.encode_meta(frame, "test", crop_size, stored_size, margin, "png",
                                                             list(layout.slots))}
            sample.update({member: schema.encode_labels(member, values, layout) for member, values in labels.items()})
            for domain in schema.DOMAINS:
                for slot in layout.slots:
                    crop = rng.integers(1, 3000, size=(stored_size, stored_size)).astype(np.uint16)
                    sample[schema.crop_member(domain, slot, "png")] = schema.encode_crop(crop, "png")
            assert tuple(sorted(k for k in sample if k != "__key__")) == schema.member_names("png", layout)
            tar.write(sample)
            written[frame] = labels
    return written


@pytest.mark.parametrize("backend", BACKENDS)
def test_readers_read_the_layout_they_are_given(tmp_path, backend):
    """Two camera slots (the loader reads that from meta.json "cameras") and five joints (schema 1
    records no joint count, so the layout is passed): the shapes follow the layout, not NYU's."""
    layout = schema.SampleLayout(num_cameras=2, num_joints=5)
    cfg = make_cfg(tmp_path, backend)
    written = write_layout_shard(tmp_path, layout, CROP, cfg.data.crop_margin, frames=[0, 1, 2])
    assert build_eval_loader(cfg, "test").layout == schema.SampleLayout(num_cameras=2, num_joints=14)
    raws = eval_raws(cfg, backend, layout)
    assert [frame for raw in raws for frame in raw["frame"].tolist()] == [0, 1, 2]
    for raw in raws:
        assert raw["crop"].shape[1:] == (2, 8) and raw["joints"].shape[1:] == (2, 2, 5, 3)
        for i, frame in enumerate(raw["frame"].tolist()):
            np.testing.assert_array_equal(raw["joints"][i].numpy(), written[frame][schema.JOINTS_MEMBER])
            np.testing.assert_array_equal(raw["crop"][i].numpy(), written[frame][schema.CROP_MEMBER])


def test_loaders_refuse_another_schema_version(written, tmp_path):
    """Both backends read through the same check (read.first_meta) before building a pipeline."""
    source = shard_paths(written["png"], "test")[0]
    (tmp_path / "test").mkdir()
    with tarfile.open(source) as tar, tarfile.open(tmp_path / "test" / "shard-000000.tar", "w") as copy:
        for info in tar.getmembers():
            data = tar.extractfile(info).read()
            if schema.split_member_name(info.name)[1] == schema.META_MEMBER:
                data = json.dumps({**json.loads(data), "schema": schema.SCHEMA_VERSION + 1}).encode()
                info.size = len(data)
            copy.addfile(info, fileobj=io.BytesIO(data))
    with pytest.raises(schema.SchemaError, match=f"shard-000000.tar: schema {schema.SCHEMA_VERSION + 1}, "
                                                 f"this code reads schema {schema.SCHEMA_VERSION}"):
        build_eval_loader(make_cfg(tmp_path, "dali"), "test")


def test_dali_types_cover_every_member_and_source_info_gives_the_key():
    from murauer_dist.batches import dali_pipeline as dp
    for encoding in schema.ENCODINGS:
        for member in schema.member_names(encoding, NYU_LAYOUT):
            assert schema.member_dtype(member) in dp.DALI_TYPES
    frames = [0, 42, 72756]
    texts = [f"/data/shards/test/shard-000001.tar:{1536 * i}:{schema.sample_key(f)}.real1.png"
             for i, f in enumerate(frames)]
    info = torch.zeros(len(texts), dp.SOURCE_INFO_BYTES, dtype=torch.uint8)
    for row, text in enumerate(texts):
        info[row, :len(text)] = torch.tensor(list(text.encode()), dtype=torch.uint8)
    assert dp.frames_from_info(info).tolist() == frames
    info[0, :] = 0
    bad = b"/data/shard.tar:0:f12.real1.png"
    info[0, :len(bad)] = torch.tensor(list(bad), dtype=torch.uint8)
    with pytest.raises(schema.SchemaError, match="sample key 'f12'"):
        dp.frames_from_info(info)

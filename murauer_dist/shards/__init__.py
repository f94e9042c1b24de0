"""WebDataset shards of a dataset's crops (schema in shards/README.md).

Loaders use: shard_paths(shards_dir, split) for the tar list of `train`, `val`, `test` or a labeled
subset folder, read_manifest(folder) for counts and settings, ensure_labeled_shards(shards_dir, n,
seed) for the labeled subset, decode_sample(sample) to turn a webdataset sample into arrays.
"""
import importlib

# Public name -> submodule; imported on first use, so reading the schema (schema.py, read.py) does
# not import the writer's dependencies (webdataset, torch).
_EXPORTS = {
    "ensure_labeled_shards": "labeled", "labeled_frames": "labeled",
    "ShardSetError": "manifest", "folder_shard_paths": "manifest", "num_samples": "manifest",
    "read_manifest": "manifest", "shard_paths": "manifest",
    "CROP_FIELDS": "schema", "DOMAINS": "schema",
    "SCHEMA_VERSION": "schema", "SampleLayout": "schema", "crop_member": "schema",
    "crop_shape": "schema", "decode_sample": "schema", "joints_shape": "schema", "member_names": "schema",
    "sample_key": "schema",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

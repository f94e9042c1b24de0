"""WebDataset shards of NYU-layout data (schema in shards/README.md).

Loaders use: shard_paths(shards_dir, split) for the tar list of `train`, `val`, `test` or a labeled
subset folder, read_manifest(folder) for counts and settings, ensure_labeled_shards(shards_dir, n,
seed) for the labeled subset, decode_sample(sample) to turn a webdataset sample into arrays.
"""
from murauer_dist.data.shards.labeled import ensure_labeled_shards, labeled_frames
from murauer_dist.data.shards.manifest import ShardSetError, folder_shard_paths, num_samples, read_manifest, shard_paths
from murauer_dist.data.shards.schema import (CAMERA_SLOTS, CROP_FIELDS, CROP_SHAPE, DOMAINS, JOINTS_SHAPE,
                                             SCHEMA_VERSION, crop_member, decode_sample, member_names, sample_key)

__all__ = ["ensure_labeled_shards", "labeled_frames", "ShardSetError", "num_samples", "read_manifest",
           "shard_paths", "folder_shard_paths", "CAMERA_SLOTS", "CROP_FIELDS", "CROP_SHAPE", "DOMAINS", "JOINTS_SHAPE",
           "SCHEMA_VERSION", "crop_member", "decode_sample", "member_names", "sample_key"]

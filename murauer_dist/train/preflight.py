"""What a training run checks before its first step, and how it reads a shard that fails during training.

check_training_inputs: everything the config, the manifests and the files can tell before any work,
for every stage the run will train (not only the first): no make-shards is writing the shard set; the
train shards exist, are of the config's dataset, crop size and encoding, and every tar has the size
its manifest records; the validation shards likewise when data.val_fraction > 0; the labeled subset
(data.n_labeled of data.label_seed) can be cut from the labeled pool, or, where it was cut already,
has the sizes its manifest records. A refused run has written nothing (no config.yaml, no metrics),
so the corrected command starts it.

shard_fault: an exception raised while training reads its shards (a tar cut short or rewritten under
a running job) as one ShardReadError naming the shard, the last good checkpoint and the way back:
`make-shards --verify`, repair, the same command again (it resumes from that checkpoint).
"""
from __future__ import annotations

from pathlib import Path

from murauer_dist import geometry
from murauer_dist.batches.batch import stream_sizes
from murauer_dist.errors import UserError
from murauer_dist.folder_lock import check_not_locked
from murauer_dist.shards import read as shard_read
from murauer_dist.shards.manifest import MANIFEST, read_manifest, shard_file
from murauer_dist.shards.read import ShardError
from murauer_dist.train import checkpoint as ckpt

LABELED_STREAMS = ("pairs", "views")


class ShardReadError(UserError):
    """A shard that could not be read while training ran."""


def reads_shards(stream_factory) -> bool:
    """True for the loop's own stream factory (the shard loaders); in-memory test streams read no shards."""
    return (getattr(stream_factory, "__module__", "") == "murauer_dist.train.loop"
            and getattr(stream_factory, "__name__", "") == "default_stream_factory")


def repair_hint(shards: Path) -> str:
    """How to find and repair a damaged shard of the set `shards` (a sentence without its first capital)."""
    return (f"check the set with `murauer-dist make-shards --verify {shards}` and repair it with `murauer-dist "
            f"make-shards ROOT {shards}` (the same arguments as before: it rewrites damaged shards)")


def check_shard_sizes(folder: Path, shards: Path) -> None:
    """ShardError unless every tar the manifest of `folder` lists has the size the manifest records (stat
    calls only: a shard cut short or rewritten after its manifest is refused before training)."""
    manifest = read_manifest(folder)
    for entry in manifest.get("shards", []):
        if not isinstance(entry, dict) or "name" not in entry or "bytes" not in entry:
            continue
        path = shard_file(folder, entry["name"])
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ShardError(f"{path} is missing (listed in {folder / 'manifest.json'}); {repair_hint(shards)}") from None
        if size != entry["bytes"]:
            raise ShardError(f"{path}: {size} bytes, but its manifest records {entry['bytes']}: the shard is damaged "
                             f"(cut short?) or was rewritten after its manifest; {repair_hint(shards)}")


def _check_split(cfg, shards: Path, split: str) -> None:
    folder = shards / split
    tars = shard_read.split_tars(shards, split)
    shard_read.check_dataset(cfg, shards, split)
    stored = geometry.stored_size(cfg.data.crop_size, cfg.data.crop_margin)
    shard_read.check_geometry(tars, cfg.data.crop_size, stored, cfg.data.encoding)
    if (folder / "manifest.json").is_file():
        check_shard_sizes(folder, shards)


def check_training_inputs(cfg, plan: list[str], stream_factory) -> None:
    """Refuse, before anything is written, a run that would fail later on its data (see the module doc)."""
    if not reads_shards(stream_factory):
        return
    # lazy: heavy: webdataset, scipy (shards.labeled cuts the labeled subset with the shard writer)
    from murauer_dist.shards.labeled import check_labeled_request, labeled_dir
    shards = Path(cfg.data.shards)
    check_not_locked(shards, "data.shards", "train on them")
    _check_split(cfg, shards, "train")
    if cfg.data.val_fraction > 0:
        _check_split(cfg, shards, "val")
    if any(stream_sizes(cfg, stage).get(name, 0) > 0 for stage in plan for name in LABELED_STREAMS):
        folder = labeled_dir(shards, cfg.data.n_labeled, cfg.data.label_seed)
        if not folder.is_dir():                       # the loader cuts it at stage 2: it must be possible
            check_labeled_request(shards, cfg.data.n_labeled, cfg.data.label_seed)
        elif (folder / MANIFEST).is_file():           # the loader reads it as it is
            check_shard_sizes(folder, shards)


def last_good_checkpoint(run_dir: Path) -> str:
    """The newest readable checkpoint of `run_dir` with its step, in words."""
    try:
        path, state = ckpt.find_resumable(run_dir)
    except ckpt.CheckpointError:
        return f"none readable in {ckpt.checkpoint_dir(run_dir)}"
    if path is None:
        return "none yet (the run starts over)"
    return f"{path} (stage {state['stage']}, step {state['global_step']})"


_SHORT = ("outside of the archive", "unexpected end", "truncated", "end of file", "eof", "short read", "empty header")


def _cause_text(message: str, kind: str) -> str:
    """Why a shard read failed, in words: a file shorter than its index is named as such."""
    lowered = message.lower()
    if any(marker in lowered for marker in _SHORT):
        return "it is shorter than its index says (cut short, or rewritten while training ran)"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    detail = next((line for line in lines if ".tar" in line), lines[0] if lines else "")
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return f"{kind}: {detail}" if detail else kind


def shard_fault(err: BaseException, cfg) -> ShardReadError | None:
    """The ShardReadError for an exception raised while training read a shard of cfg.data.shards (its message,
    or one in its cause/context chain, names the tar or its index); None otherwise (then it is no data fault
    and keeps its traceback)."""
    shards = Path(cfg.data.shards)
    tars = sorted(shards.glob("**/shard-*.tar"))
    seen, item = set(), err
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        text = str(item)
        for path in tars:
            if str(path) in text or str(path.resolve()) in text:
                hint = repair_hint(shards)
                return ShardReadError(
                    f"training stopped: shard {path} could not be read: {_cause_text(text, type(item).__name__)}; "
                    f"the last good checkpoint is {last_good_checkpoint(Path(cfg.train.out))}. {hint[0].upper()}"
                    f"{hint[1:]}, then run the same train command again: it resumes from that checkpoint")
        item = item.__cause__ or item.__context__
    return None

"""A CUDA run's device mistakes, caught on a CPU: the training loop run on the `meta` device.

murauer_dist/bench/meta_audit.py explains why `meta` stands in for CUDA: it refuses CPU tensors where CUDA
does and holds no values, so every host read of a device value is counted as the sync it would be.
These run the real `train` loop there (fake in-memory streams: DALI has no meta backend) and check:
- no op mixes a CPU tensor into device work (the stage-2 crash: D's "skipped" flag made on the CPU
  and stacked with the loss terms);
- exactly one host sync per step: the ranks' agreement on "finite, and nobody asked to stop"
  (losses are read once per logging interval, the model checksum once at the end);
- a run stopped on the CPU resumes on the device (the resume crash: checkpoints mapped to the
  training device put the RNG states there, which torch.set_rng_state refuses, and Adam's step
  counters, which then cost a sync per parameter per step).
And on the CPU, with real values: a skipped (non-finite) step changes nothing, D included.
"""
from __future__ import annotations

import collections

import pytest
import torch

from murauer_dist import dist
from murauer_dist.bench.meta_audit import HostSyncCounter, OpCounter
from murauer_dist.config import load_config
from murauer_dist.batches.batch import fake_batch, stream_sizes
from murauer_dist.methods import METHODS
from murauer_dist.models import build_discriminator, build_model
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train import loop
from murauer_dist.train.engine_factory import build_engines
from murauer_dist.train.fake_stream import fake_eval_factory
from murauer_dist.train.step import train_step
from test_reliability_train import StopAt

META = dist.DistInfo(0, 1, 0, torch.device("meta"))
PER_STEP = "dist.py"                    # the agreement (dist.agree): the one sync a step may make
PER_INTERVAL = "train/loop.py"          # IntervalStats.summary and the final checksum

# Loading CPU weights into a meta model is a no-op, which torch warns about once per tensor.
pytestmark = pytest.mark.filterwarnings("ignore:.*meta parameter:UserWarning")


def _factory(cfg, stage, rank, world, device):
    return StopAt(cfg, stage, rank, device)


def _cfg(tmp_path, *extra):
    return load_config("tiny", [f"train.out={tmp_path / 'run'}", "train.pretrain_epochs=1", "train.epochs=1",
                                "train.iters_per_epoch=5", "train.log_every=1000", "train.checkpoint_every=1000",
                                "data.val_fraction=0", "logging.wandb_mode=disabled", *extra])


def _syncs_by_place(counter: HostSyncCounter) -> dict[str, int]:
    return dict(collections.Counter(place for _, place in counter.syncs))


def _assert_one_sync_per_step(counter: HostSyncCounter, steps: int, intervals: int) -> None:
    places = _syncs_by_place(counter)
    per_step = sum(n for place, n in places.items() if place.startswith(PER_STEP))
    others = {place: n for place, n in places.items() if not place.startswith((PER_STEP, PER_INTERVAL))}
    assert not others and per_step == steps, f"host syncs in {steps} steps: {places}"
    assert sum(places.values()) == steps + intervals + 1, places        # + the final checksum


@pytest.mark.parametrize("method,extra", [(name, ()) for name in METHODS]
                         + [("murauer", ("model.channels_last=true",))])
def test_training_on_a_device_mixes_no_cpu_tensor_and_syncs_once_per_step(tmp_path, method, extra):
    cfg = _cfg(tmp_path, f"train.method={method}", *extra)
    with HostSyncCounter() as counter:
        result = loop.train(cfg, META, stream_factory=_factory, eval_factory=fake_eval_factory)
    assert result["status"] == "done" and result["global_step"] == 10
    _assert_one_sync_per_step(counter, steps=10, intervals=2)          # one log line at each stage's end


def test_a_run_stopped_on_the_cpu_resumes_on_a_device(tmp_path):
    cfg = _cfg(tmp_path)
    StopAt.at = ("main", 1, 2)
    stopped = loop.train(cfg, stream_factory=_factory, eval_factory=fake_eval_factory)
    StopAt.at = ()
    assert stopped["status"] == "stopped" and stopped["global_step"] == 8
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(cfg.train.out))
    assert saved["stage"] == "main" and saved["model_engine"]["optimizer"]["state"]       # Adam has state
    with HostSyncCounter() as counter:
        resumed = loop.train(cfg, META, stream_factory=_factory, eval_factory=fake_eval_factory)
    assert resumed["status"] == "done" and resumed["global_step"] == 10
    _assert_one_sync_per_step(counter, steps=2, intervals=1)


# ---- with real values, on the CPU: what a skipped step leaves behind ---------------------------------

def _engines(cfg):
    torch.manual_seed(0)
    model, disc = build_model(cfg), build_discriminator(cfg)
    return build_engines(cfg, model, disc, 0, 1, "cpu")


def _state(engines) -> dict:
    """Every tensor a step may change: weights, BatchNorm statistics, both optimizers' state."""
    state = {}
    for name, engine in engines.items():
        state.update({f"{name}.{key}": value.clone() for key, value in engine.module.state_dict().items()})
        for index, entry in engine.optimizer.state_dict()["state"].items():
            state.update({f"{name}.adam{index}.{key}": value.clone() for key, value in entry.items()})
    return state


def _assert_equal_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, different


@pytest.mark.parametrize("poisoned", [("unlabeled_synth", "depth"), ("pairs", "real_depth")])
@pytest.mark.parametrize("at_step", [0, 2])
def test_a_skipped_step_changes_nothing_discriminator_included(poisoned, at_step):
    """NaN in D's input (D's loss and, through D, the model's) or in the model's input only (D's loss
    finite: D has stepped when the ranks agree to skip, and must be taken back). At step 0 Adam has
    no state yet; at step 2 it has."""
    cfg = load_config("tiny", ["train.method=murauer"])
    batches = [fake_batch(stream_sizes(cfg, "main"), cfg.data.crop_size, cfg.model.num_joints, seed=seed) for seed in range(4)]
    clean, skipping = _engines(cfg), _engines(cfg)
    for index, batch in enumerate(batches):
        if index == at_step:
            before = _state(skipping)
            bad = {stream: dict(values) for stream, values in batch.items()}
            bad[poisoned[0]][poisoned[1]] = bad[poisoned[0]][poisoned[1]].clone()
            bad[poisoned[0]][poisoned[1]][0, 0, 0, 0] = float("nan")
            result = train_step(skipping, bad, cfg)
            assert result["skipped"] == 1.0 and result["disc_skipped"] == 1.0
            _assert_equal_states(before, _state(skipping))
        train_step(clean, batch, cfg)
        train_step(skipping, batch, cfg)
    _assert_equal_states(_state(clean), _state(skipping))


def test_bench_step_cost_counts_the_step_on_meta(tmp_path):
    """`bench step-cost` (its table is in docs/gpu.md): positive FLOPs and kernels, the stage-2 step
    dispatching several passes per stream set, and one host sync per step."""
    import json
    from murauer_dist.bench.step_cost import main
    rows = main("tiny", "murauer", str(tmp_path / "cost.json"))
    by_stage = {row["stage"]: row for row in rows}
    assert by_stage["main"]["kernels_per_step"] > 3 * by_stage["pretrain"]["kernels_per_step"] > 0
    assert all(row["gflop_per_step"] > 0 and row["host_syncs_per_step"] == 1 for row in rows)
    assert json.loads((tmp_path / "cost.json").read_text())["rows"][1]["stage"] == "main"


# ---- the loaders, real shards: batches made for a device --------------------------------------------

@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_loader_batches_land_on_the_device_without_a_host_read(tmp_path, backend):
    """The training stream and the eval loader for a non-CPU device (the CPU pipelines, as a GPU node
    runs the reference loader and DALI's reader): every tensor arrives on the device, making a batch
    reads nothing back from it, and the device sees one copy per tensor: the labels are finished on
    the CPU, where they are, instead of as ~400 tiny device ops per batch (measured before the change:
    442 with DALI, 426 with the reference loader)."""
    from murauer_dist.batches.eval_loader import build_eval_loader
    from murauer_dist.batches.loaders import build_train_stream
    from shard_fixture import make_shard_set

    make_shard_set(tmp_path, n_train=16, n_test=4, crop_size=32, n_labeled=4, label_seed=3)
    cfg = load_config("tiny", [f"data.shards={tmp_path}", "data.crop_size=32", "data.n_labeled=4",
                               "data.label_seed=3", f"loader.backend={backend}", "loader.device=cpu",
                               "loader.num_threads=1", "loader.shuffle_buffer=4", "loader.eval_batch=4"])
    stream = build_train_stream(cfg, "main", 0, 1, "meta")
    try:
        with HostSyncCounter() as counter:
            batches = [next(stream) for _ in range(2)]
            evals = list(build_eval_loader(cfg, "test", device="meta"))
            with OpCounter("meta") as device_ops:
                one_more = next(stream)
    finally:
        stream.close()
    copies = sum(len(part) for part in one_more.values())
    assert sum(device_ops.counts.values()) == copies, device_ops.counts
    tensors = [(f"{name}.{key}", value) for batch in batches for name, part in batch.items()
               for key, value in part.items()] + [(f"eval.{key}", value) for batch in evals for key, value in batch.items()]
    assert tensors and not [name for name, value in tensors if value.device.type != "meta"]
    assert counter.syncs == []

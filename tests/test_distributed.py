"""Data-parallel training across 2 CPU processes (torchrun, gloo): DDP and DeepSpeed engines.

Every run goes through the real entry point (`murauer_dist.cli train`) under torchrun. A small
launcher script adds three things around the unchanged loop: after each stage, every rank saves its
own parameters (rank{r}-{stage}.pt; the loop itself writes from rank 0 only); with
MURAUER_TEST_FAKE_STREAM=1 the loop's default data streams are the deterministic in-memory ones
(train/fake_stream.py), so a test can rebuild exactly the batches each rank trained on; and with
MURAUER_FAULT_AT_STEP=k, rank MURAUER_FAULT_RANK (default 1) dies right after the checkpoint of
global step k, in the first attempt of the torchrun job only (TORCHELASTIC_RESTART_COUNT=0), so the
restarted group runs through.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from murauer_dist.config import load_config
from murauer_dist.batches.batch import to_device
from murauer_dist.models import build_discriminator, build_model
from murauer_dist.train import losses
from murauer_dist.train.engine import make_adam
from murauer_dist.train.fake_stream import FakeTrainStream
from murauer_dist.train.schedule import base_lr, stage_multiplier
from murauer_dist.train.step import model_requests

pytestmark = pytest.mark.dist

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shard_fixture import make_shard_set  # noqa: E402

LAUNCHER = textwrap.dedent('''
    import os
    import sys
    import torch
    from murauer_dist.train import loop
    from murauer_dist.train.fake_stream import fake_eval_factory, fake_stream_factory

    if os.environ.get("MURAUER_TEST_FAKE_STREAM") == "1":
        loop.default_stream_factory = fake_stream_factory
        loop.default_eval_factory = fake_eval_factory
    loop_write_checkpoint = loop.write_checkpoint

    def maybe_die(global_step):
        """The elastic-restart fault: one rank leaves like a killed process, once."""
        env = lambda name, default: int(os.environ.get(name, default))  # noqa: E731
        if (global_step == env("MURAUER_FAULT_AT_STEP", -1) and env("TORCHELASTIC_RESTART_COUNT", 0) == 0
                and env("RANK", 0) == env("MURAUER_FAULT_RANK", 1)):
            print(f"[fault] rank {env('RANK', 0)} exits at step {global_step} (MURAUER_FAULT_AT_STEP)",
                  file=sys.stderr, flush=True)
            os._exit(1)      # no cleanup, no collective goodbye

    def write_checkpoint(run, stage, engines, stream, position, done):
        loop_write_checkpoint(run, stage, engines, stream, position, done)
        if done:
            state = {"model": run.model.state_dict(), "disc": run.disc.state_dict(),
                     "global_step": run.counters.global_step}
            torch.save(state, run.run_dir / f"rank{run.info.rank}-{stage}.pt")
        else:
            maybe_die(run.counters.global_step)   # right after a checkpoint

    loop.write_checkpoint = write_checkpoint
    from murauer_dist.cli import main
    main()
''')

# tiny preset: 1 pre-training epoch + 1 MURAUER epoch of 3 steps each, checkpoint every 2 steps.
TINY = ["train.max_steps=3", "train.iters_per_epoch=3", "train.checkpoint_every=2", "loader.num_threads=1",
        "loader.shuffle_buffer=8", "logging.wandb_mode=disabled", "logging.progress=false"]


def torchrun(tmp_path: Path, out: Path, overrides: list[str], nproc: int = 2, max_restarts: int = 0,
             env: dict | None = None, timeout: float = 400.0) -> str:
    """`murauer-dist train tiny` under torchrun; returns the combined output, fails on a non-zero exit."""
    launcher = tmp_path / "launch_train.py"
    launcher.write_text(LAUNCHER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               f"--max-restarts={max_restarts}", "--monitor-interval=0.5", str(launcher),
               "train", "tiny", *TINY, f"train.out={out}", *overrides]
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    # no OMP_NUM_THREADS here: torchrun sets it per worker, as it does for a user
    run_env = {**os.environ, "WANDB_MODE": "disabled", "DS_ACCELERATOR": "cpu",
               "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache/torch_extensions")),
               "PYTHONPATH": python_path, **(env or {})}
    process = subprocess.Popen(command, cwd=tmp_path, env=run_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()              # torchrun passes SIGTERM on to its workers
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish within {timeout:.0f} s (a rank blocked in a collective?):\n"
                    f"{output[-6000:]}")
    assert process.returncode == 0, f"torchrun exited {process.returncode}:\n{output[-6000:]}"
    return output


def parameters(state: dict, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters of a saved state_dict (BatchNorm running statistics are per rank)."""
    names = {name for name, _ in module.named_parameters()}
    return {name: tensor for name, tensor in state.items() if name in names}


def initial_networks(cfg) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(cfg.train.seed)            # the loop's initialisation, on every rank
    return build_model(cfg), build_discriminator(cfg)


def assert_ranks_identical_and_trained(out: Path, cfg) -> None:
    model, disc = initial_networks(cfg)
    rank0, rank1 = (torch.load(out / f"rank{r}-main.pt", weights_only=True) for r in (0, 1))
    for key, network in (("model", model), ("disc", disc)):
        trained0, trained1 = parameters(rank0[key], network), parameters(rank1[key], network)
        assert trained0.keys() == dict(network.named_parameters()).keys()
        for name, value in trained0.items():
            assert torch.equal(value, trained1[name]), f"{key}.{name} differs between rank 0 and rank 1"
        moved = [name for name, p in network.named_parameters() if not torch.equal(p.detach(), trained0[name])]
        assert len(moved) > 0.9 * len(trained0), f"{key}: only {len(moved)}/{len(trained0)} tensors changed"
    assert rank0["global_step"] == rank1["global_step"] == 6


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist-shards")
    make_shard_set(folder, n_train=24, n_test=4, crop_size=32, n_labeled=6, label_seed=3)
    return [f"data.shards={folder}", "data.n_labeled=6", "data.label_seed=3"]


@pytest.mark.parametrize("engine", [["train.engine=ddp"],
                                    ["train.engine=deepspeed", "train.deepspeed_config=configs/deepspeed/zero1.json"]],
                         ids=["ddp", "deepspeed-zero1"])
def test_two_ranks_end_bit_identical_and_trained(tmp_path, shards, engine):
    """Real shards through the real loaders: model and discriminator agree bit for bit on both ranks."""
    out = tmp_path / "run"
    torchrun(tmp_path, out, [*shards, *engine])
    assert_ranks_identical_and_trained(out, load_config("tiny", TINY))
    assert (out / "checkpoints" / "final-main.pt").is_file()


@pytest.fixture(scope="module")
def fake_stream_run(tmp_path_factory):
    """2-rank DDP run on the deterministic in-memory streams (shared by the two tests below)."""
    tmp = tmp_path_factory.mktemp("dist-fake")
    torchrun(tmp, tmp / "run", [], env={"MURAUER_TEST_FAKE_STREAM": "1"})
    return tmp / "run"


def test_two_rank_ddp_equals_one_process_with_the_global_batch(fake_stream_run):
    """Pre-training stage: 2 ranks x 8 crops under DDP == one process on both ranks' crops.

    Why not simply 1 process with batch 16: BatchNorm normalises each forward batch, so a rank's
    8-crop batch and a 16-crop batch give different activations (SyncBatchNorm would make them equal,
    but it only runs on GPUs). The reference therefore runs one forward per rank's batch (per-rank
    BN statistics, as DDP has them) and steps Adam on the MEAN of the two losses: that is exactly
    what DDP promises. Weight decay stays on, so a summed instead of averaged gradient would not
    match (Adam is invariant to a common gradient scale, but not with an L2 term added).
    """
    cfg = load_config("tiny", TINY)
    model, _ = initial_networks(cfg)
    peak = base_lr(cfg, world_size=2)
    optimizer = make_adam(cfg, model, peak)
    streams = [FakeTrainStream(cfg, "pretrain", rank) for rank in (0, 1)]
    model.train()
    stage_steps = cfg.train.pretrain_epochs * cfg.train.iters_per_epoch
    for position in range(cfg.train.max_steps):
        for group in optimizer.param_groups:         # the preset's schedule, step by step as the loop sets it
            group["lr"] = peak * stage_multiplier(cfg.optim.schedule, "pretrain", 1, position, stage_steps,
                                                  cfg.optim.anneal_fraction)
        rank_losses = []
        for stream in streams:
            batch = to_device(stream.make_batch(1, position), "cpu")
            out = model(model_requests(batch, cfg, "pretrain"))
            rank_losses.append(losses.pretrain_pose_loss(out["synth"]["pose"], batch["synth"]["target"]))
        optimizer.zero_grad(set_to_none=True)
        (sum(rank_losses) / 2).backward()
        optimizer.step()
    trained = parameters(torch.load(fake_stream_run / "rank0-pretrain.pt", weights_only=True)["model"], model)
    initial, _ = initial_networks(cfg)
    for name, reference in model.named_parameters():
        moved = (reference.detach() - dict(initial.named_parameters())[name].detach()).abs().max()
        error = (trained[name] - reference.detach()).abs().max()
        assert error <= 1e-5 + 1e-3 * moved, f"{name}: 2-rank DDP differs from the reference by {error} (moved {moved})"


def test_killed_rank_restarts_and_resumes_to_the_same_result(tmp_path, fake_stream_run):
    """Rank 1 dies right after the step-4 checkpoint; torchrun restarts both ranks, which resume from
    the latest checkpoint and end exactly where the uninterrupted run ended."""
    out = tmp_path / "run"
    output = torchrun(tmp_path, out, [], max_restarts=1,
                      env={"MURAUER_TEST_FAKE_STREAM": "1", "MURAUER_FAULT_AT_STEP": "4"})
    assert "exits at step 4" in output and "resuming from" in output, output[-4000:]
    cfg = load_config("tiny", TINY)
    assert_ranks_identical_and_trained(out, cfg)
    resumed = torch.load(out / "rank0-main.pt", weights_only=True)
    straight = torch.load(fake_stream_run / "rank0-main.pt", weights_only=True)
    model, disc = initial_networks(cfg)
    for key, network in (("model", model), ("disc", disc)):
        for name, value in parameters(straight[key], network).items():
            assert torch.allclose(resumed[key][name], value, rtol=1e-5, atol=1e-7), f"{key}.{name}"

"""Losses, the training step, schedule, checkpoints, resume and stage hand-over (tiny preset, CPU)."""
import math
import signal

import pytest
import torch

from murauer_dist.config import load_config
from murauer_dist.inference.checkpoints import load_pose
from murauer_dist.batches.batch import fake_batch, stream_sizes
from murauer_dist.models import build_discriminator, build_model
from murauer_dist.train import checkpoint as ckpt
from murauer_dist.train import losses
from murauer_dist.train.engine_factory import build_engines
from murauer_dist.train.fake_stream import FakeTrainStream, fake_eval_factory
from murauer_dist.train.loop import NonFiniteLossError, train
from murauer_dist.train.schedule import base_lr, lr_multiplier
from murauer_dist.train.step import (loss_adv, loss_emb, loss_synth, loss_view, model_requests, step_floats,
                                     train_step)


def _setup(overrides=(), seed=0):
    cfg = load_config("tiny", list(overrides))
    torch.manual_seed(seed)
    model, disc = build_model(cfg), build_discriminator(cfg)
    return cfg, model, disc, build_engines(cfg, model, disc, 0, 1, "cpu")


def _batch(cfg, stage="main", seed=1, **kw):
    return fake_batch(stream_sizes(cfg, stage), cfg.data.crop_size, cfg.model.num_joints, seed=seed, **kw)


def _grads(module):
    return {name: p.grad for name, p in module.named_parameters()}


def test_loss_terms_are_zero_exactly_at_their_targets():
    x = torch.randn(5, 14, 3)
    assert losses.sse(x, x) == 0 and losses.sse(x, x + 1) == pytest.approx(5 * 42)
    assert losses.view_l1(x, x) == 0 and losses.view_l1(x, x - 2) == pytest.approx(2 * 5 * 42)
    assert losses.lsgan_sse(torch.ones(4), 1.0) == 0 and losses.lsgan_sse(torch.zeros(4), 1.0) == 4
    assert losses.pretrain_pose_loss(x, x + 1) == pytest.approx(5.0)          # MSE x batch size
    empty = torch.zeros(0, 14, 3)
    assert losses.scaled_mse(empty, empty, 11.0) == 0                          # no NaN on no samples


def test_every_term_is_positive_on_a_random_batch():
    cfg, model, disc, engines = _setup()
    batch = _batch(cfg, labeled_fraction=1.0)
    result = step_floats(train_step(engines, batch, cfg))
    for name in ("L_synth", "L_real", "L_emb", "L_view", "L_adv", "L_disc", "L_total"):
        assert result[name] > 0 and math.isfinite(result[name]), name
    weights = {"L_synth": 1, "L_real": cfg.loss.beta, "L_emb": cfg.loss.lambda_c, "L_view": cfg.loss.lambda_g,
               "L_adv": cfg.loss.lambda_m}
    assert result["L_total"] == pytest.approx(sum(w * result[k] for k, w in weights.items()), rel=1e-5)


def test_adversarial_gradient_reaches_the_mapping_only():
    cfg, model, disc, engines = _setup()
    batch = _batch(cfg)
    out = model(model_requests(batch, cfg, "main"))
    loss_adv(engines["disc"], out).backward()
    for name, grad in _grads(model).items():
        if name.startswith("mapping."):
            assert grad is not None and grad.abs().sum() > 0, name
        else:
            assert grad is None, name                                       # not f, p or g
    assert all(g is None for g in _grads(disc).values())                     # D frozen during the G loss
    assert all(p.requires_grad for p in disc.parameters())                   # and unfrozen afterwards


def test_feature_matching_target_is_detached_and_synth_loss_skips_the_mapping():
    cfg, model, disc, engines = _setup()
    batch = _batch(cfg, labeled_fraction=1.0)
    out = model(model_requests(batch, cfg, "main"))
    terms = {"L_emb": loss_emb(out, batch, cfg), "L_synth": loss_synth(out, batch, cfg)}
    synth_emb = [out["pairs_synth"]["emb"], out["views_synth"]["emb"]]
    real_emb = [out["pairs_real"]["emb"], out["views_real"]["emb"]]
    assert all(g is None for g in torch.autograd.grad(terms["L_emb"], synth_emb, retain_graph=True, allow_unused=True))
    assert all(g is not None for g in torch.autograd.grad(terms["L_emb"], real_emb, retain_graph=True))
    terms["L_synth"].backward(retain_graph=True)
    assert all(p.grad is None for p in model.mapping.parameters())
    assert all(p.grad is None for p in model.view_decoder.parameters())
    assert model.encoder.fc.weight.grad is not None
    model.zero_grad(set_to_none=True)
    loss_view(out, batch, cfg).backward()
    assert model.view_decoder.net[0].weight.grad is not None and model.pose_head.fc_pose.weight.grad is None


def test_discriminator_step_comes_first_and_moves_only_the_discriminator():
    cfg, model, disc, engines = _setup(["train.method=murauer"])
    disc_before = [p.detach().clone() for p in disc.parameters()]
    train_step(engines, _batch(cfg), cfg)
    assert all(not torch.equal(a, b) for a, b in zip(disc_before, disc.parameters()))


def test_empty_labeled_views_give_no_nan():
    cfg, model, disc, engines = _setup()
    batch = _batch(cfg)
    batch["views"]["labeled"][:] = False
    result = step_floats(train_step(engines, batch, cfg))
    assert result["skipped"] == 0 and all(math.isfinite(v) for v in result.values())
    assert result["labeled_views"] == 0


@pytest.mark.parametrize("method,expected", [
    ("synth_only", {"L_synth"}), ("real_only", {"L_real"}),
    ("real_synth", {"L_synth", "L_real", "L_emb"}),
    ("murauer", {"L_synth", "L_real", "L_emb", "L_view", "L_adv"})])
def test_methods_use_only_their_terms(method, expected):
    cfg, model, disc, engines = _setup([f"train.method={method}"])
    result = train_step(engines, _batch(cfg), cfg)
    assert {k for k in result if k.startswith("L_") and k not in ("L_total", "L_disc")} == expected


@pytest.mark.parametrize("stage", ["pretrain", "main"])
def test_a_few_steps_reduce_the_loss(stage):
    cfg, model, disc, engines = _setup(["optim.lr=3e-3"])
    batch = _batch(cfg, stage)
    first = float(train_step(engines, batch, cfg, stage)["L_total"])
    for _ in range(12):
        last = float(train_step(engines, batch, cfg, stage)["L_total"])
    assert last < 0.9 * first


def test_schedule_matches_the_method_table():
    table = {1: 0.1089, 2: 0.33, 3: 0.33, 4: 0.852, 5: 0.819, 10: 0.670, 20: 0.449, 50: 0.135, 100: 0.0183}
    for epoch, value in table.items():
        assert lr_multiplier(epoch) == pytest.approx(value, abs=6e-4)
    cfg = load_config("tiny", ["optim.lr_scaling=sqrt"])
    assert base_lr(cfg, 4) == pytest.approx(2 * cfg.optim.lr)


# ---- the loop: resume, hand-over, non-finite steps, checkpoints ------------------------------

class _ScriptedStream(FakeTrainStream):
    """FakeTrainStream that sends itself SIGTERM or yields NaN depth at chosen (stage, epoch, position)."""

    events: dict = {}

    def __init__(self, cfg, stage, rank=0, device="cpu"):
        super().__init__(cfg, stage, rank, device)
        self.stage = stage

    def make_batch(self, epoch, position):
        batch = super().make_batch(epoch, position)
        event = self.events.get((self.stage, epoch, position))
        if event == "sigterm":
            signal.raise_signal(signal.SIGTERM)
        elif event == "nan":
            for stream in batch.values():
                for key in ("depth", "real_depth"):
                    if key in stream:
                        stream[key][0, 0, 0, 0] = float("nan")
        return batch


def _run(cfg, events=None):
    _ScriptedStream.events = events or {}
    factory = lambda c, stage, rank, world, device: _ScriptedStream(c, stage, rank, device)  # noqa: E731
    return train(cfg, stream_factory=factory, eval_factory=fake_eval_factory)


def _loop_cfg(tmp_path, name, *extra):
    return load_config("tiny", [f"train.out={tmp_path / name}", "train.epochs=2", "train.checkpoint_every=4",
                                "logging.wandb_mode=disabled", *extra])


def _final(tmp_path, name, stage="main"):
    return ckpt.load_checkpoint(tmp_path / name / "checkpoints" / f"final-{stage}.pt")


def _assert_same_state(a, b):
    for part in ("model", "disc"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    opt_a, opt_b = a["model_engine"]["optimizer"]["state"], b["model_engine"]["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted run: (its directory's parent, its summary)."""
    root = tmp_path_factory.mktemp("reference")
    return root, _run(_loop_cfg(root, "full"))


@pytest.mark.parametrize("where", [("pretrain", 1, 1), ("main", 2, 0)])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, reference_run, where):
    root, reference = reference_run
    assert reference == {**reference, "status": "done", "global_step": 9}
    stopped = _run(_loop_cfg(tmp_path, "cut"), {where: "sigterm"})
    assert stopped["status"] == "stopped" and stopped["global_step"] < 9
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL                # handlers restored
    resumed = _run(_loop_cfg(tmp_path, "cut"))
    assert resumed["status"] == "done" and resumed["global_step"] == 9
    _assert_same_state(_final(root, "full"), _final(tmp_path, "cut"))
    assert resumed["val_mean_error_mm"] == pytest.approx(reference["val_mean_error_mm"], rel=1e-6)


def test_stage_two_starts_from_stage_one(tmp_path, reference_run):
    root, _ = reference_run
    pretrain = root / "full" / "checkpoints" / "final-pretrain.pt"
    assert not ckpt.checkpoint_uses_mapping(ckpt.load_checkpoint(pretrain))  # stage 1 never trains m
    handed = _loop_cfg(tmp_path, "handed", "train.pretrain_epochs=0", f"train.init_checkpoint={pretrain}")
    assert _run(handed)["global_step"] == 6
    _assert_same_state(_final(root, "full"), _final(tmp_path, "handed"))
    fresh = _loop_cfg(tmp_path, "fresh", "train.pretrain_epochs=0")
    _run(fresh)
    assert not torch.equal(_final(tmp_path, "fresh")["model"]["encoder.fc.weight"],
                           _final(root, "full")["model"]["encoder.fc.weight"])


def test_non_finite_step_is_skipped_counted_and_harmless(tmp_path):
    result = _run(_loop_cfg(tmp_path, "nan"), {("main", 1, 1): "nan"})
    assert result["status"] == "done" and result["skipped_total"] == 1
    final = _final(tmp_path, "nan")
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
    assert math.isfinite(result["val_mean_error_mm"])                      # BN statistics not poisoned


def test_too_many_non_finite_steps_abort(tmp_path):
    cfg = _loop_cfg(tmp_path, "abort", "train.max_nonfinite_in_a_row=1")
    with pytest.raises(NonFiniteLossError, match="max_nonfinite_in_a_row=1"):
        _run(cfg, {("pretrain", 1, 0): "nan", ("pretrain", 1, 1): "nan"})


def test_checkpoints_rotate_and_load_for_inference(tmp_path):
    cfg = _loop_cfg(tmp_path, "rot", "train.checkpoint_every=1", "train.keep_checkpoints=2")
    _run(cfg)
    names = sorted(p.name for p in (tmp_path / "rot" / "checkpoints").iterdir())
    assert names == ["ckpt-000000008.pt", "ckpt-000000009.pt", "final-main.pt", "final-pretrain.pt"]
    state = ckpt.load_checkpoint(tmp_path / "rot" / "checkpoints" / "ckpt-000000008.pt")
    assert (state["stage"], state["epoch"], state["iteration"], state["data"][0]) == ("main", 2, 2,
                                                                                     {"epoch": 2, "position": 2})
    loaded = load_pose(tmp_path / "rot", "cpu")
    model, loaded_cfg, mapped = loaded.model, loaded.config, loaded.mapped
    assert loaded_cfg.to_dict() == cfg.to_dict() and mapped and not model.training
    depth = torch.rand(2, 1, 32, 32)
    again = load_pose(tmp_path / "rot" / "checkpoints" / "final-main.pt").model
    assert torch.equal(model.predict(depth, mapped), again.predict(depth, mapped))


_DDP_WORKER = '''
import json, sys, torch
from murauer_dist import dist
from murauer_dist.config import load_config
from murauer_dist.train.fake_stream import fake_stream_factory, fake_eval_factory
from murauer_dist.train.loop import train
out = sys.argv[1]
cfg = load_config("tiny", [f"train.out={out}", "logging.wandb_mode=disabled", "train.checkpoint_every=100"])
info = dist.init_distributed("cpu")
summary = train(cfg, info, stream_factory=fake_stream_factory, eval_factory=fake_eval_factory)
from murauer_dist.train.run_state import gather_objects
checksums = gather_objects(summary["model_checksum"])
if info.is_main:
    from murauer_dist.train import checkpoint as ckpt
    final = ckpt.load_checkpoint(out + "/checkpoints/final-main.pt")
    json.dump({"summary": summary, "world": info.world_size, "data": final["data"], "checksums": checksums},
              open(out + "/ddp.json", "w"))
dist.clean_exit(0)
'''


@pytest.mark.dist
def test_two_rank_ddp_run_keeps_ranks_in_sync(tmp_path):
    """torchrun, gloo: ranks draw different batches, end with equal weights; both data states saved."""
    import json
    import subprocess
    import sys
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(out)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "ddp.json").read_text())
    assert report["world"] == 2 and report["summary"]["status"] == "done" and len(report["data"]) == 2
    assert math.isfinite(report["summary"]["val_mean_error_mm"])
    assert report["checksums"][0] == report["checksums"][1]                  # gradients all-reduced


# ---- the method table and the compile switch ---------------------------------------------------

def test_every_method_entry_is_complete_and_drives_the_config():
    import dataclasses

    from murauer_dist.config import CHOICES, LossConfig
    from murauer_dist.batches.batch import STREAMS
    from murauer_dist.methods import METHODS, PRETRAIN, uses_mapping
    from murauer_dist.train.step import TERMS
    assert CHOICES["train.method"] == tuple(METHODS)
    loss_fields = {f.name for f in dataclasses.fields(LossConfig)}
    for method in (*METHODS.values(), PRETRAIN):
        assert method.streams and set(method.streams) <= set(STREAMS), method.name
        assert set(method.terms) <= set(TERMS) | {"L_adv"}, method.name
        assert all(weight in loss_fields for weight in method.terms.values() if isinstance(weight, str)), method.name
    assert len({method.label for method in METHODS.values()}) == len(METHODS)
    # the README's evaluation paths: real -> f -> m -> p unless m was never trained
    assert {name: uses_mapping(name, "main") for name in METHODS} == {
        "murauer": True, "real_synth": True, "dm_only": True, "view_only": True, "real_only": True,
        "synth_only": False}
    assert not any(uses_mapping(name, "pretrain") for name in METHODS)
    murauer_main = {"stage": "main", "config": {"train": {"method": "murauer"}}}
    assert ckpt.checkpoint_uses_mapping(murauer_main)
    assert not ckpt.checkpoint_uses_mapping({**murauer_main, "eval_mapped": False})    # written before the table


def test_model_compile_is_wired_and_changes_no_number(tmp_path, monkeypatch):
    """model.compile=true compiles f, m, p and g (here with dynamo's "eager" backend: inductor needs
    over a minute per shape on a CPU) with the same parameter names and the same losses."""
    from murauer_dist.models import compile_networks
    from murauer_dist.models import murauer as murauer_module
    from murauer_dist.train import loop
    monkeypatch.setattr(murauer_module, "COMPILE_BACKEND", "eager")
    cfg, plain_model, _, plain_engines = _setup()
    _, model, _, engines = _setup()
    names = list(model.state_dict())
    compile_networks(model)
    assert list(model.state_dict()) == names
    batch = _batch(cfg, labeled_fraction=0.5)
    assert step_floats(train_step(engines, batch, cfg)) == step_floats(train_step(plain_engines, batch, cfg))
    compiled = []
    monkeypatch.setattr(loop, "compile_networks", lambda m: compiled.append(m) or compile_networks(m))
    result = _run(_loop_cfg(tmp_path, "compiled", "model.compile=true", "train.pretrain_epochs=0", "train.max_steps=1"))
    assert result["status"] == "done" and len(compiled) == 1

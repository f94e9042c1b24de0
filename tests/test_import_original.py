"""`murauer-dist import-original`: a state dict in the original code's layout becomes a checkpoint.

The original layout is written out here from the network description (docs/method.md §3: one
network with conv1, layer1-4 of bottlenecks with `downsample` projections, bn_res, fc1, the two
`mappinglayer` blocks, fc2, the two output layers fc3_h0/fc3_h1 and the `preview` decoder), and a
plain functional forward over those names gives the pose the original network computes, so the test
checks what every name means, not only that names were renamed.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from murauer_dist.config import load_config
from murauer_dist.errors import UserError
from murauer_dist.import_original import import_original, import_original_command
from murauer_dist.models import build_model
from murauer_dist.inference.checkpoints import load_pose
from murauer_dist.train.checkpoint import load_checkpoint

BN_EPS = 1e-5


def _bn(state: dict, prefix: str, channels: int, generator, zeros: bool) -> None:
    make = (lambda *shape: torch.zeros(shape)) if zeros else (lambda *shape: torch.randn(*shape, generator=generator) * 0.2)
    state[f"{prefix}.weight"] = make(channels) + 1.0
    state[f"{prefix}.bias"] = make(channels)
    state[f"{prefix}.running_mean"] = make(channels)
    state[f"{prefix}.running_var"] = (torch.zeros(channels) if zeros else torch.rand(channels, generator=generator)) + 0.5
    state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)


def original_layout(cfg, seed: int = 0, zeros: bool = False) -> dict:
    """A state dict named and shaped as the original code's ResNet_Map_PreView for `cfg`'s sizes."""
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape, scale=None):
        if zeros:
            return torch.zeros(shape)
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        return torch.randn(*shape, generator=generator) * (scale or 1.0 / math.sqrt(fan_in))

    m, crop = cfg.model, cfg.data.crop_size
    embed, joints = m.embed_dim, m.num_joints
    state = {"conv1.weight": tensor(m.in_features, 1, 5, 5)}
    channels = m.in_features
    for s, width in enumerate(m.stage_widths, start=1):
        inner = width // 4
        for b in range(m.blocks_per_stage):
            p = f"layer{s}.{b}"
            state[f"{p}.conv1.weight"] = tensor(inner, channels, 1, 1)
            _bn(state, f"{p}.bn1", inner, generator, zeros)
            state[f"{p}.conv2.weight"] = tensor(inner, inner, 3, 3)
            _bn(state, f"{p}.bn2", inner, generator, zeros)
            state[f"{p}.conv3.weight"] = tensor(width, inner, 1, 1)
            _bn(state, f"{p}.bn3", width, generator, zeros)
            if b == 0:
                state[f"{p}.downsample.0.weight"] = tensor(width, channels, 1, 1)
                _bn(state, f"{p}.downsample.1", width, generator, zeros)
            channels = width
    _bn(state, "bn_res", channels, generator, zeros)
    side = crop // 2
    for _ in m.stage_widths:
        side = math.ceil(side / 2)
    state["fc1.weight"], state["fc1.bias"] = tensor(embed, channels * side * side), tensor(embed, scale=0.1)
    for k in range(2):
        for fc in ("fc1", "fc2"):
            state[f"mappinglayer.{k}.{fc}.weight"] = tensor(embed, embed, scale=0.3 / math.sqrt(embed))
            state[f"mappinglayer.{k}.{fc}.bias"] = tensor(embed, scale=0.1)
    state["fc2.weight"], state["fc2.bias"] = tensor(embed, embed), tensor(embed, scale=0.1)
    for head in ("fc3_h0", "fc3_h1"):
        state[f"{head}.weight"], state[f"{head}.bias"] = tensor(3 * joints, embed), tensor(3 * joints, scale=0.1)
    ups = int(math.log2(crop // 8))                        # 4x4 -> crop/2 by stride-2 layers
    widths = [m.decoder_features * 2 ** (ups - 1 - i) for i in range(ups)] + [1]
    state["preview.convt1.weight"] = tensor(embed + 3, widths[0], 4, 4)
    for i in range(ups):
        _bn(state, f"preview.bn{i + 1}_d", widths[i], generator, zeros)
        state[f"preview.convt{i + 2}.weight"] = tensor(widths[i], widths[i + 1], 4, 4)
    return state


def original_pose(state: dict, cfg, depth: torch.Tensor, mapped: bool = True) -> torch.Tensor:
    """The original network's pose output (eval mode) computed from its own names; released affine m."""
    def bn(x, p):
        return F.batch_norm(x, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], training=False, eps=BN_EPS)

    x = F.max_pool2d(F.conv2d(depth, state["conv1.weight"], padding=2), 2, 2)
    for s in range(1, len(cfg.model.stage_widths) + 1):
        for b in range(cfg.model.blocks_per_stage):
            p, stride = f"layer{s}.{b}", 2 if b == 0 else 1
            out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
            out = bn(F.conv2d(out, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            skip = bn(F.conv2d(x, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1") \
                if b == 0 else x
            x = F.relu(out + skip)
    x = F.relu(bn(x, "bn_res")).flatten(1)
    emb = F.linear(x, state["fc1.weight"], state["fc1.bias"])
    if mapped:
        for k in range(2):                                    # released block: fc2(x) + x (fc1's output unused)
            emb = F.linear(emb, state[f"mappinglayer.{k}.fc2.weight"], state[f"mappinglayer.{k}.fc2.bias"]) + emb
    hidden = F.relu(F.linear(F.relu(emb), state["fc2.weight"], state["fc2.bias"]))
    return F.linear(hidden, state["fc3_h0.weight"], state["fc3_h0.bias"]).view(len(depth), -1, 3)


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny")


@pytest.mark.parametrize("wrap", ["plain", "module_prefix", "under_state_dict", "legacy_format"])
def test_original_state_dict_imports_and_predicts_as_the_original(tmp_path, tiny, wrap):
    state = original_layout(tiny, seed=1)
    saved, kwargs = state, {}
    if wrap == "module_prefix":                               # saved from nn.DataParallel
        saved = {f"module.{key}": value for key, value in state.items()}
    elif wrap == "under_state_dict":
        saved = {"state_dict": state, "epoch": 120}
    elif wrap == "legacy_format":                             # torch < 1.6 files (as torch 0.4.1 under Python 2)
        kwargs = {"_use_new_zipfile_serialization": False, "pickle_protocol": 2}
    source, out = tmp_path / "model_full.mdl", tmp_path / "imported.pt"
    torch.save(saved, source, **kwargs)
    summary = import_original(source, out, preset="tiny")
    assert summary["mapped"] is True and summary["dropped"] == ["fc3_h1.bias", "fc3_h1.weight"]
    pose = load_pose(out)
    model, cfg, mapped = pose.model, pose.config, pose.mapped
    assert mapped is True and cfg.model.released_affine_blocks is True and cfg.train.method == "murauer"
    assert all(block.affine for block in model.mapping.blocks)
    depth = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    expected = original_pose(state, cfg, depth)
    torch.testing.assert_close(model.predict(depth, mapped=True), expected, atol=1e-5, rtol=1e-4)
    assert load_checkpoint(out)["imported_from"]["file"] == "model_full.mdl"


def test_synth_only_model_runs_unmapped(tmp_path, tiny):
    state = original_layout(tiny, seed=4)
    torch.save(state, tmp_path / "model_synth_only.mdl_pretrain")
    import_original(tmp_path / "model_synth_only.mdl_pretrain", tmp_path / "synth.pt", preset="tiny",
                    method="synth_only")
    pose = load_pose(tmp_path / "synth.pt")
    model, mapped = pose.model, pose.mapped
    depth = torch.rand(3, 1, 32, 32) * 2 - 1
    assert mapped is False
    torch.testing.assert_close(model.predict(depth, mapped=False), original_pose(state, tiny, depth, mapped=False),
                               atol=1e-5, rtol=1e-4)


def test_file_without_num_batches_tracked_gets_zero(tmp_path, tiny):
    state = {k: v for k, v in original_layout(tiny).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.mdl")
    summary = import_original(tmp_path / "old.mdl", tmp_path / "old.pt", preset="tiny")
    assert summary["filled"] and all(name.endswith("num_batches_tracked") for name in summary["filled"])


def test_the_nyu_preset_takes_the_released_shapes(tmp_path):
    """The full-size network (128x128 crops, fc1 4096 -> 1024, decoder 1027 -> 512 ... -> 1)."""
    cfg = load_config("nyu")
    state = original_layout(cfg, zeros=True)
    assert state["fc1.weight"].shape == (1024, 4096) and state["preview.convt1.weight"].shape == (1027, 512, 4, 4)
    assert state["preview.convt5.weight"].shape == (64, 1, 4, 4) and state["fc3_h0.weight"].shape == (42, 1024)
    torch.save(state, tmp_path / "model_full_n73k.mdl")
    summary = import_original(tmp_path / "model_full_n73k.mdl", tmp_path / "nyu.pt")     # default preset: nyu
    assert summary["tensors"] == len(build_model(cfg).state_dict())
    assert len(state) == summary["tensors"] + 2                                 # + the unused fc3_h1


def _message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_refusals_are_one_line_and_name_the_problem(tmp_path, tiny):
    out = tmp_path / "out.pt"
    (tmp_path / "notes.txt").write_text("not a model\n")
    with pytest.raises(UserError) as err:
        import_original(tmp_path / "notes.txt", out, preset="tiny")
    assert "notes.txt is not a torch file" in _message(err)
    with pytest.raises(UserError, match="does not exist"):
        import_original(tmp_path / "absent.mdl", out, preset="tiny")

    whole = tmp_path / "whole.mdl"                      # a pickled model object (a class, not tensors)
    torch.save(torch.nn.Linear(2, 2), whole)
    with pytest.raises(UserError) as err:
        import_original(whole, out, preset="tiny")
    assert "pickled Python objects" in _message(err) and "state_dict()" in _message(err)

    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "nothing.mdl")
    with pytest.raises(UserError) as err:
        import_original(tmp_path / "nothing.mdl", out, preset="tiny")
    assert "no state dict of tensors (found: epoch, optimizer)" in _message(err)

    state = original_layout(tiny)
    del state["fc2.weight"], state["mappinglayer.1.fc1.bias"]
    state["extra.head.weight"] = torch.zeros(3)
    state["fc1.weight"] = torch.zeros(32, 7)
    torch.save(state, tmp_path / "odd.mdl")
    with pytest.raises(UserError) as err:
        import_original(tmp_path / "odd.mdl", out, preset="tiny")
    text = _message(err)
    assert "2 missing (fc2.weight, mappinglayer.1.fc1.bias)" in text
    assert "1 unexpected (extra.head.weight)" in text
    assert "fc1.weight (32, 7) (this preset: (32, 16))" in text and "--preset" in text

    torch.save({f"other.{i}.weight": torch.zeros(2) for i in range(9)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError) as err:
        import_original(tmp_path / "foreign.pt", out, preset="tiny")
    assert "not a model of the original MURAUER code" in _message(err) and "and 5 more" in _message(err)
    assert not out.exists()
    with pytest.raises(UserError, match="--method must be one of"):
        import_original(tmp_path / "odd.mdl", out, preset="tiny", method="magic")


def test_imported_checkpoint_evaluates(tmp_path, tiny, capsys):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from shard_fixture import make_shard_set
    from murauer_dist.eval.evaluate import evaluate_command

    shards = tmp_path / "shards"
    make_shard_set(shards, n_train=8, n_test=6, crop_size=32)
    torch.save(original_layout(tiny, seed=5), tmp_path / "model.mdl")
    import_original_command(str(tmp_path / "model.mdl"), str(tmp_path / "model.pt"), preset="tiny",
                            overrides=("loader.backend=reference", "loader.num_threads=1", "loader.eval_batch=4"))
    assert "murauer-dist evaluate" in capsys.readouterr().out
    metrics = evaluate_command(str(tmp_path / "model.pt"), str(shards / "test"), out=str(tmp_path / "eval"))
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["frames"] == 6 and saved["mapped"] is True
    assert len((tmp_path / "eval" / "results_uvd.txt").read_text().splitlines()) == 6

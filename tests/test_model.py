"""The MURAUER networks: shapes, parameter counts (analytic, docs/method.md §3.6), block semantics, init."""
import math

import pytest
import torch

from murauer_dist.config import load_config
from murauer_dist.models import build_discriminator, build_model, count_parameters
from murauer_dist.models.mapping import Mapping
from murauer_dist.models.view_decoder import ViewDecoder


def _bottleneck_params(c_in, c_out, projection):
    width = c_out // 4
    params = c_in * width + 9 * width * width + width * c_out + 2 * (width + width + c_out)
    return params + (c_in * c_out + 2 * c_out if projection else 0)


def _trunk_params(in_features, widths, blocks):
    total, channels = 25 * in_features, in_features
    for width in widths:
        total += _bottleneck_params(channels, width, True) + (blocks - 1) * _bottleneck_params(width, width, False)
        channels = width
    return total + 2 * channels            # bn after the last stage


@pytest.fixture(scope="module")
def nyu_parts():
    cfg = load_config("nyu")
    return cfg, build_model(cfg), build_discriminator(cfg)


def test_full_size_parameter_counts(nyu_parts):
    cfg, model, disc = nyu_parts
    fc = model.encoder.fc
    assert count_parameters(fc) == 4096 * 1024 + 1024                      # fc1 4.20 M
    trunk = count_parameters(model.encoder) - count_parameters(fc)
    assert trunk == _trunk_params(32, [64, 128, 256, 256], 5)
    assert round(trunk / 1e6, 2) == 0.92                                   # conv trunk 0.92 M
    assert count_parameters(model.mapping) == 2 * 2 * (1024 * 1024 + 1024)  # 4.20 M incl. fc1s
    assert count_parameters(model.pose_head.fc_hidden) == 1024 * 1024 + 1024  # fc2 1.05 M
    assert count_parameters(model.pose_head.fc_pose) == 1024 * 42 + 42        # 43 k
    convt = 16 * (1027 * 512 + 512 * 256 + 256 * 128 + 128 * 64 + 64 * 1)
    assert count_parameters(model.view_decoder) == convt + 2 * (512 + 256 + 128 + 64)   # 11.17 M
    assert round(count_parameters(model.view_decoder) / 1e6, 2) == 11.17
    assert count_parameters(disc) == 2 * 2 * (1024 * 1024 + 1024) + 1025     # 4.20 M
    # docs/method.md §3.6: ~21.6 M with the unused second pose head (43 k) that is not built here
    assert abs(count_parameters(model) + 43050 - 21.6e6) < 0.05e6


def test_full_size_forward_shapes(nyu_parts):
    cfg, model, disc = nyu_parts
    model.eval()
    with torch.no_grad():
        out = model.run(torch.zeros(2, 1, 128, 128), mapped=True, cond=torch.zeros(2, 3))
    assert out["z"].shape == (2, 1024) and out["emb"].shape == (2, 1024) and out["hidden"].shape == (2, 1024)
    assert out["pose"].shape == (2, 14, 3) and out["view"].shape == (2, 1, 128, 128)
    assert disc(out["emb"]).shape == (2,)


@pytest.mark.parametrize("crop", [32, 64, 128])
def test_small_networks_for_every_crop_size(crop):
    cfg = load_config("tiny", [f"data.crop_size={crop}"])
    model = build_model(cfg)
    depth = torch.rand(3, 1, crop, crop) * 2 - 1
    out = model({"a": {"depth": depth, "mapped": True, "cond": torch.zeros(3, 3)},
                 "b": {"depth": depth, "mapped": False, "pose": False}})
    assert out["a"]["view"].shape == (3, 1, crop, crop)
    assert out["a"]["view"].abs().max() <= 1.0                             # tanh
    assert out["a"]["pose"].shape == (3, 14, 3)
    assert set(out["b"]) == {"z", "emb"}                                  # no pose requested
    assert (out["a"]["emb"] >= 0).all() and (out["b"]["emb"] >= 0).all()  # emb = relu(...)
    assert model.encoder.flat_features == 16 * max(1, crop // 32) ** 2


def test_decoder_uses_fewer_layers_for_smaller_crops():
    def convts(crop):
        return sum(isinstance(m, torch.nn.ConvTranspose2d) for m in ViewDecoder(crop, 8, 4).modules())
    assert (convts(128), convts(64), convts(32)) == (5, 4, 3)
    with pytest.raises(ValueError, match="crop_size"):
        ViewDecoder(48, 8, 4)


def test_released_blocks_are_affine_and_paper_blocks_are_not():
    torch.manual_seed(0)
    x, y = torch.randn(4, 16), torch.randn(4, 16)
    affine, paper = Mapping(16, affine=True), Mapping(16, affine=False)
    mix = 0.3 * x + 0.7 * y
    assert torch.allclose(affine(mix), 0.3 * affine(x) + 0.7 * affine(y), atol=1e-5)
    assert not torch.allclose(paper(mix), 0.3 * paper(x) + 0.7 * paper(y), atol=1e-3)
    affine(x).sum().backward()
    assert all(block.fc1.weight.grad is None for block in affine.blocks)   # fc1 is dead in the released code
    assert all(block.fc2.weight.grad is not None for block in affine.blocks)


def test_initialisation_follows_the_method():
    torch.manual_seed(0)
    model = build_model(load_config("nyu"))
    conv = model.encoder.stages[2][0].conv2                                # 3x3, 64 out channels
    expected = math.sqrt(2.0 / (9 * 64))
    assert abs(conv.weight.std().item() / expected - 1) < 0.05
    bn = model.encoder.stages[0][0].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_predict_uses_the_mapping_switch():
    torch.manual_seed(0)
    model = build_model(load_config("tiny")).eval()
    depth = torch.rand(2, 1, 32, 32)
    mapped = model.predict(depth, mapped=True)
    unmapped = model.predict(depth, mapped=False)
    assert not torch.allclose(mapped, unmapped)
    assert torch.allclose(unmapped, model.pose(model.embed(depth, mapped=False)["emb"])["pose"])

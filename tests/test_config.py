import pytest

from murauer_dist.config import CONFIG_DIR, ConfigError, config_from_dict, load_config


def test_presets_load_and_overrides_are_typed():
    cfg = load_config("tiny", ["optim.lr=3e-4", "model.released_affine_blocks=true", "model.stage_widths=8,8,8,8"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.model.released_affine_blocks is True
    assert cfg.model.stage_widths == [8, 8, 8, 8]
    assert cfg.data.crop_size == 32            # tiny overrides its base
    assert cfg.loader.backend == "dali"        # inherited from demo-cpu
    for preset in CONFIG_DIR.glob("*.yaml"):
        load_config(preset.stem)


def test_unknown_key_names_key_and_choices():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*optim.lr"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'optimm.lr'.*optim"):
        load_config(None, ["optimm.lr=1"])


def test_wrong_type_and_bad_choice_are_rejected():
    with pytest.raises(ConfigError, match=r"'train.epochs'.*'many'.*int"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"'train.engine'.*'horovod'.*ddp"):
        load_config(None, ["train.engine=horovod"])
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["optim=3"])


def test_bad_preset_file_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.epochz"):
        load_config(bad)


def test_round_trip_through_dict():
    cfg = load_config("demo-cpu", ["loss.lambda_m=0.5"])
    assert config_from_dict(cfg.to_dict()) == cfg

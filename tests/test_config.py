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


def test_nyu_rules_left_the_config_and_old_configs_still_load(tmp_path, capsys):
    """data.second_actor_cube_mm, data.second_actor_from and data.swap_side_cameras_before are the dataset
    spec's now: an old preset or a checkpoint's config that holds them loads with a one-line note; a
    command-line override of one is an error that says where the rule went."""
    old = tmp_path / "old.yaml"
    old.write_text("base: tiny\ndata:\n  second_actor_from: -1\n  swap_side_cameras_before: 29116\n")
    cfg = load_config(str(old))
    assert not hasattr(cfg.data, "second_actor_from") and cfg.model.num_joints == 14
    notes = capsys.readouterr().err.splitlines()
    assert notes == [f"note: preset {old}: data.second_actor_from, data.swap_side_cameras_before moved into the "
                     f"dataset spec (configs/datasets/*.yaml, docs/datasets.md); the value(s) here are ignored"]
    saved = {**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "second_actor_cube_mm": 249.9}}
    assert config_from_dict(saved).data == cfg.data
    assert "a saved run config: data.second_actor_cube_mm moved into the dataset spec" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"'data.second_actor_from' is now the dataset spec's second_actor_from.*"
                                          r"data.dataset=PATH"):
        load_config("tiny", ["data.second_actor_from=2441"])


def test_dataset_may_be_a_spec_file_and_joints_follow_it(tmp_path):
    spec = tmp_path / "five.yaml"
    spec.write_text("base: nyu\nname: nyu-five\njoints:\n  evaluated: [0, 3, 6, 9, 32]\n  center: 4\n"
                    "  labels: [P, R, M, I, C]\n  bones: []\n")
    cfg = load_config("tiny", [f"data.dataset={spec}"])
    assert cfg.data.dataset == str(spec.resolve()) and cfg.model.num_joints == 5
    with pytest.raises(ConfigError, match=r"'data.dataset': dataset spec file .*missing.yaml does not exist"):
        load_config("tiny", [f"data.dataset={tmp_path / 'missing.yaml'}"])
    spec.write_text("base: nyu\nname: nyu\ndescription: my own\n")
    with pytest.raises(ConfigError, match=r"key 'name': 'nyu' is a built-in dataset; give the spec another name"):
        load_config("tiny", [f"data.dataset={spec}"])

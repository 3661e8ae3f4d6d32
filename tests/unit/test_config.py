"""Typed config: YAML round trip, checked overrides, errors that name the key and the fix."""

import pytest

from yingshe.config import RunConfig, apply_overrides, load_config, save_yaml
from yingshe.errors import YingsheError


def test_yaml_round_trip_reproduces_every_field(tmp_path):
    cfg = RunConfig()
    apply_overrides(cfg, ["optim.lr=0.05", "model.kwargs={width: 32}", "data.limit_train=100"])
    path = tmp_path / "config.yaml"
    path.write_text(save_yaml(cfg))
    assert load_config(path) == cfg


def test_overrides_parse_types_and_accept_unique_bare_names():
    cfg = RunConfig()
    apply_overrides(cfg, ["lr=1e-3", "epochs=3", "hflip=false", "grad_clip=null", "image_size=64"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3
    assert cfg.augment.hflip is False
    assert cfg.optim.grad_clip is None
    assert cfg.data.image_size == 64


def test_int_is_accepted_for_float_but_not_the_reverse():
    cfg = RunConfig()
    apply_overrides(cfg, ["optim.lr=1"])
    assert cfg.optim.lr == 1.0
    with pytest.raises(YingsheError, match="train.batch_size must be int"):
        apply_overrides(cfg, ["train.batch_size=2.5"])
    apply_overrides(cfg, ["train.epochs=2.5"])  # epochs may be a fraction (int | float)
    assert cfg.train.epochs == 2.5


def test_unknown_key_suggests_close_matches():
    with pytest.raises(YingsheError, match="did you mean 'optim.lr'"):
        apply_overrides(RunConfig(), ["optim.lrr=0.1"])


def test_wrong_type_names_the_key():
    with pytest.raises(YingsheError, match="train.batch_size must be int, got 'big'"):
        apply_overrides(RunConfig(), ["train.batch_size=big"])


def test_override_without_equals_is_an_error():
    with pytest.raises(YingsheError, match="not key=value"):
        apply_overrides(RunConfig(), ["epochs"])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(YingsheError, match="bad.yaml is not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("trian:\n  epochs: 2\n")
    with pytest.raises(YingsheError, match="did you mean 'train'"):
        load_config(wrong)
    with pytest.raises(YingsheError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")

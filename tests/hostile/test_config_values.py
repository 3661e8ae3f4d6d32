"""Bad config values end as `error:`/`fix:` with exit 2, naming the value and the allowed range,
before any run folder exists (issue 10)."""

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yingshe.cli import main
from yingshe.config import RunConfig, apply_overrides, leaf_keys, validate
from yingshe.errors import YingsheError

CASES = [
    (["--limit-train", "-5"], "data.limit_train must be >= 1; got -5"),
    (["--epochs", "0"], "train.epochs must be > 0; got 0"),
    (["--batch-size", "0"], "train.batch_size must be >= 1; got 0"),
    (["--workers", "-3"], "data.workers must be >= 0; got -3"),
    (["--lr", "-1"], "optim.lr must be > 0; got -1.0"),
    (["--lr", "nan"], "optim.lr must be > 0; got nan"),
    (["--image-size", "-8"], "data.image_size must be >= 1; got -8"),
    (["--patience", "0"], "train.patience must be >= 1; got 0"),
    (["train.monitor=ece"], "train.monitor must be one of val_loss, val_accuracy, val_ece"),
    (["train.amp=fp8"], "train.amp must be one of auto, bf16, fp16, off; got 'fp8'"),
    (["augment.policy=autoaugment"], "augment.policy must be one of none, randaugment"),
    (["optim.schedule=exponential"], "optim.schedule must be one of onecycle"),
    (["data.prepared=maybe"], "data.prepared must be one of auto, always, off"),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], "val_fraction + data.test_fraction must be < 1"),
    (["optim.muon_momentum=1"], "optim.muon_momentum must be >= 0 and < 1; got 1"),
    (["--optimizer", "muon", "model.pretrained=true"], "optim.name=muon does not train pretrained weights"),
    (["augment.crop_resize=pil"], "augment.crop_resize must be one of auto, torch, opencv"),
    (["train.val_every=-1"], "train.val_every must be >= 0; got -1"),
]


@pytest.mark.parametrize(("args", "message"), CASES)
def test_a_bad_value_is_refused_with_its_range_and_no_folder(args, message, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "fix:" in err and "Traceback" not in err
    assert not run.exists()


def test_evaluate_limit_and_top_k_are_checked_by_the_parser(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--limit", "-1"]) == 2
    assert "--limit: must be >= 1; got -1" in capsys.readouterr().err
    assert main(["explain", str(tmp_path), "x.png", "--out", str(tmp_path / "o"), "--top-k", "0"]) == 2
    assert "--top-k: must be >= 1; got 0" in capsys.readouterr().err


def test_image_size_too_small_for_the_model_is_an_error_before_the_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", "digits", "--model", "resnet20", "--image-size", "3", "--out", str(run)]
    assert main([*args, "--epochs", "1", "--limit-train", "100"]) == 2
    err = capsys.readouterr().err
    assert "image size 3 px is too small for model resnet20" in err and "at least 4 px" in err
    assert not run.exists()


def test_documented_words_are_kept_as_written():
    cfg = RunConfig()
    apply_overrides(cfg, ["data.prepared=off", "data.spec=0123", "train.out=2024-05-01", "train.amp=off"])
    assert cfg.data.prepared == "off" and cfg.data.spec == "0123" and cfg.train.out == "2024-05-01"
    assert cfg.train.amp == "off"
    apply_overrides(cfg, ["train.out=null", "data.channels=3"])
    assert cfg.train.out is None and cfg.data.channels == 3
    apply_overrides(cfg, ['data.prepared="always"', "data.spec='0456'"])  # YAML's quoting, as written
    assert cfg.data.prepared == "always" and cfg.data.spec == "0456"


def test_a_config_built_in_code_is_validated_too():
    cfg = RunConfig()
    cfg.train.batch_size = 0
    with pytest.raises(YingsheError, match="train.batch_size must be >= 1; got 0"):
        validate(cfg)
    cfg = RunConfig()
    cfg.data.channels = True  # a bool is never the int choice 1
    with pytest.raises(YingsheError, match="data.channels must be one of 1, 3"):
        validate(cfg)


def test_asking_for_opencv_without_it_names_the_package(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "cv2" else find_spec(name))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "augment.crop_resize=opencv"]) == 2
    err = capsys.readouterr().err
    assert "augment.crop_resize=opencv needs OpenCV" in err and "pip install opencv-python-headless" in err
    assert not run.exists()


def test_the_real_command_refuses_a_negative_limit_in_a_subprocess(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "yingshe", "train", "--out", str(run), "--limit-train", "-5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "error: --limit-train: data.limit_train must be >= 1; got -5" in result.stderr
    assert "Traceback" not in result.stderr and not run.exists()


VALUES = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "null", "off", "on", "yes", "true", "[1, 2]", "{a: 1}", "{", "'", ":", "- x"]),
    st.text(max_size=12),
)
KEYS = st.one_of(
    st.sampled_from(leaf_keys(RunConfig())),
    st.sampled_from(["lr", "epochs", "name", "nope", "data.", ".x", "", "data.spec.x"]),
    st.text(max_size=10),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(KEYS, VALUES), max_size=4))
def test_random_overrides_give_a_valid_config_or_a_yingshe_error(pairs):
    cfg = RunConfig()
    try:
        apply_overrides(cfg, [f"{key}={value}" for key, value in pairs])
    except YingsheError as err:
        assert err.problem
        return
    validate(cfg)  # whatever was accepted is a config that passes every check
    assert math.isfinite(cfg.optim.lr) and cfg.optim.lr > 0

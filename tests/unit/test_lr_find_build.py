"""The range test builds model and batches as `train` does: the same input-size check and loss."""

import math

import pytest

from yingshe.config import RunConfig, apply_overrides
from yingshe.errors import YingsheError
from yingshe.tune.lr_find import lr_find


def digits(*overrides: str) -> RunConfig:
    config = RunConfig()
    base = ["data.spec=digits", "model.name=resnet20", "data.limit_train=64", "train.batch_size=16"]
    apply_overrides(config, [*base, "train.device=cpu", *overrides])
    return config


def test_an_image_size_too_small_for_the_model_is_refused_like_train():
    with pytest.raises(YingsheError, match="too small for model resnet20"):
        lr_find(digits("data.image_size=3"), steps=10)


def test_balanced_sampling_and_loss_run_through_the_range_test():
    found = lr_find(digits("train.balance=sampler", "data.image_size=8"), start=1e-4, end=1.0, steps=10)
    assert found.lrs and all(math.isfinite(x) for x in found.losses)

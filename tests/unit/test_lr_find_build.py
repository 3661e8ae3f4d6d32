"""The range test builds model and batches as `train` does: the same input-size check and loss."""

import math

import pytest
import torch

from yingshe.config import OptimConfig, RunConfig, apply_overrides
from yingshe.errors import YingsheError
from yingshe.train.optim import build_optimizer
from yingshe.tune.lr_find import lr_find, sweep


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


def test_the_sweep_moves_optim_lr_and_holds_muons_filters_at_their_rate():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 2, (8,))
    model(x)  # materialise the lazy head
    optimizer = build_optimizer(model, OptimConfig(name="muon", lr=0.1, muon_lr=0.24, bias_lr_scale=2.0))

    class OneBatch:
        def set_epoch(self, epoch: int) -> None:
            pass

        def __iter__(self):
            yield x, y, None

    lrs, _ = sweep(model, optimizer, OneBatch(), 1e-4, 1e-2, 5, torch.nn.functional.cross_entropy)
    for group in optimizer.param_groups:  # muon_lr for the filters, the sweep's rate × scale elsewhere
        expected = 0.24 if group["muon"] else lrs[-1] * group["lr_scale"]
        assert group["lr"] == pytest.approx(expected)
    assert sorted(g["muon"] for g in optimizer.param_groups) == [False, False, True]

"""Recipes resolve to the expected plain config and yield to --config files key by key; the
weight EMA, flip TTA and the whitening stem do what they claim."""

import argparse

import pytest
import torch
from torch import nn

from yingshe.cli import build_train_config, parser
from yingshe.config import RunConfig, save_yaml
from yingshe.evaluate.metrics import predict_batches
from yingshe.models import create_model
from yingshe.recipes import FAMILIES, RECIPES, apply_recipe, family_for, recipe_config
from yingshe.train.ema import WeightEMA


@pytest.mark.parametrize("name", RECIPES.names())
@pytest.mark.parametrize("family", FAMILIES)
def test_every_recipe_resolves_for_every_family(name, family):
    cfg = apply_recipe(RunConfig(), f"{name}:{family}")
    assert cfg.train.recipe == f"{name}:{family}"
    assert cfg.optim.name in ("sgd", "muon") and cfg.train.tta_flip
    assert RunConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # config.yaml reproduces it


def test_fast_recipe_for_fashion_mnist_is_the_airbench_bundle():
    cfg = recipe_config("fast", data="fashion-mnist")
    assert cfg.train.recipe == "fast:grey-28"
    assert cfg.model.name == "airbench"
    assert cfg.model.kwargs == {"widths": [24, 64, 128], "whiten_bias_epochs": 1}
    assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.label_smoothing) == ("muon", 0.85, 0.1)
    assert (cfg.optim.muon_lr, cfg.augment.crop_padding, cfg.train.epochs, cfg.train.val_every) == (
        0.16,
        0,
        2.5,
        0,
    )
    assert cfg.train.channels_last is True and cfg.train.tta_flip is True
    cifar = recipe_config("fast", data="cifar10")
    assert cifar.train.recipe == "fast:colour-32" and cifar.optim.name == "muon"
    assert (
        family_for(3, 224) == "large" and family_for(1, 28) == "grey-28" and family_for(3, 32) == "colour-32"
    )


def test_config_file_and_flags_override_the_recipe_key_by_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim:\n  lr: 0.05\ntrain:\n  epochs: 3\n")
    args = parser().parse_args(
        ["train", "--data", "fashion-mnist", "--recipe", "fast", "--config", str(path), "--batch-size", "100"]
    )
    cfg = build_train_config(args)
    assert (cfg.optim.lr, cfg.train.epochs, cfg.train.batch_size) == (0.05, 3, 100)  # file, then flag
    assert cfg.model.name == "airbench" and cfg.optim.label_smoothing == 0.1  # the rest from the recipe
    # a run's config.yaml, given back as --config, gives the same config (the recipe is a no-op on it)
    saved = tmp_path / "config.yaml"
    saved.write_text(save_yaml(cfg))
    again = build_train_config(parser().parse_args(["train", "--config", str(saved)]))
    assert again.to_dict() == cfg.to_dict()


def test_no_recipe_keeps_the_defaults():
    args = parser().parse_args(["train", "--data", "digits"])
    assert isinstance(args, argparse.Namespace)
    cfg = build_train_config(args)
    assert cfg.train.recipe is None and cfg.model.name == RunConfig().model.name


def test_flip_tta_is_the_mean_of_the_logits_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = create_model("airbench", 10, 3, 32, widths=(8, 8, 8)).eval()
    x = torch.randn(6, 3, 32, 32)
    batches = [(x, None, torch.zeros(6, dtype=torch.long))]
    tta = predict_batches(model, batches, tta_flip=True).logits
    with torch.no_grad():
        expected = (model(x) + model(x.flip(-1))) / 2
    torch.testing.assert_close(tta, expected)
    assert not torch.allclose(tta, predict_batches(model, batches).logits)


def test_weight_ema_averages_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = WeightEMA(model, decay=0.5)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(8, 4))  # moves the BN running statistics
    ema.update()  # warm-up decay min(0.5, 2/11) = 2/11
    d = 2 / 11
    torch.testing.assert_close(ema.module[0].weight, d * start + (1 - d) * (start + 1))
    assert not torch.equal(ema.module[0].weight, model[0].weight)
    assert not torch.equal(ema.module[1].running_mean, torch.zeros(3))
    assert int(ema.module[1].num_batches_tracked) == 1  # integer buffers are copied
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_whitening_stem_decorrelates_training_patches():
    torch.manual_seed(0)
    model = create_model("airbench", 10, 3, 32, widths=(8, 8, 8))
    mixing = torch.randn(3, 3)  # correlated channels
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(200, 3, 32, 32))
    model.init_from_data(images, eps=1e-6)
    out = model.whiten(images)[:, :12]  # the + half: (N, 12, 31, 31)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(flat.T)
    torch.testing.assert_close(cov, torch.eye(12), atol=0.05, rtol=0)
    assert not model.whiten.weight.requires_grad

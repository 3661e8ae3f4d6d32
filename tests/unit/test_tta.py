"""Flip TTA: one decision and one forward, shared by training, evaluation and prediction."""

import torch
from torch import nn

from yingshe.models.tta import flip_tta_applies, tta_forward


def test_flip_tta_applies_only_when_asked_and_the_data_is_mirror_invariant():
    assert flip_tta_applies(True, True)
    assert not flip_tta_applies(True, False)  # digits: a mirror image is another class
    assert not flip_tta_applies(False, True)


def test_tta_forward_is_the_mean_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(4, 1, 6, 6)
    model(x)
    torch.testing.assert_close(tta_forward(model, x, False), model(x))
    torch.testing.assert_close(tta_forward(model, x, True), (model(x) + model(x.flip(-1))) / 2)
    assert not torch.allclose(tta_forward(model, x, True), model(x))  # the mirror counts

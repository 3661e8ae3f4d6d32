"""Flip TTA: one decision and one forward, shared by training, evaluation and prediction."""

import torch
from torch import nn

from yingshe.models.tta import flip_tta_applies, tta_forward, tta_views


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


def test_translate_tta_gives_half_the_weight_to_two_shifted_copies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(4, 1, 6, 6)
    model(x)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :6, :6], padded[..., 2:8, 2:8]

    def mirrored(v):
        return (model(v) + model(v.flip(-1))) / 2

    expected = (mirrored(x) + (mirrored(up_left) + mirrored(down_right)) / 2) / 2
    torch.testing.assert_close(tta_forward(model, x, True, translate=1), expected)
    shifted = (model(x) + (model(up_left) + model(down_right)) / 2) / 2
    torch.testing.assert_close(tta_forward(model, x, False, translate=1), shifted)
    assert [tta_views(f, t) for f, t in ((False, 0), (True, 0), (False, 1), (True, 2))] == [1, 2, 3, 6]

"""Every registered model builds for grey and colour inputs of the sizes yingshe meets, learns
(gradients reach every parameter), and the zoo adapters follow the dataset's shape."""

import pytest
import torch

from yingshe.errors import YingsheError
from yingshe.models import MODELS, count_parameters, create_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_forward_backward_shapes(name, channels, size):
    model = create_model(name, num_classes=7, in_chans=channels, image_size=size)
    x = torch.randn(3, channels, size, size)
    logits = model(x)
    assert logits.shape == (3, 7)
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing[:3]}"


@pytest.mark.parametrize("name", MODELS.names())
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    model = create_model(name, 5, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    reference = model(x)
    fast = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)


def test_resnet18_uses_imagenet_stem_for_large_images():
    small, large = create_model("resnet18", 10, 3, 32), create_model("resnet18", 10, 3, 128)
    assert small.stem[0].stride == (1, 1)
    assert large.stem[0][0].stride == (2, 2)
    assert create_model("resnet18", 10, 3, 128)(torch.randn(1, 3, 128, 128)).shape == (1, 10)


def test_parameter_counts_are_those_of_the_papers():
    assert count_parameters(create_model("resnet20", 10, 3, 32)) == pytest.approx(0.27e6, rel=0.03)
    assert count_parameters(create_model("resnet56", 10, 3, 32)) == pytest.approx(0.85e6, rel=0.03)
    assert count_parameters(create_model("resnet18", 10, 3, 32)) == pytest.approx(11.17e6, rel=0.01)


def test_zoo_models_follow_classes_and_channels():
    tv = create_model("torchvision:resnet18", num_classes=4, in_chans=1)
    assert tv(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    tm = create_model("timm:resnet10t", num_classes=4, in_chans=1)
    assert tm(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_unknown_names_suggest_close_matches():
    with pytest.raises(YingsheError, match="did you mean 'resnet20'"):
        create_model("resnet21", 10)
    with pytest.raises(YingsheError, match="torchvision has no classification model"):
        create_model("torchvision:resnet19", 10)
    with pytest.raises(YingsheError, match="bad arguments"):
        create_model("seed-cnn", 10, nonsense=3)

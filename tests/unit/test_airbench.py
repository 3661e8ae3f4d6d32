"""The airbench net matches airbench94 where yingshe claims it does."""

import torch
import torch.nn.functional as F

from yingshe.config import OptimConfig
from yingshe.models import create_model
from yingshe.models.airbench import BatchNorm
from yingshe.train.optim import build_optimizer
from yingshe.train.trainer import init_from_data


def small(**kwargs):
    torch.manual_seed(0)
    return create_model("airbench", 4, 3, 16, widths=[8, 16, 16], **kwargs)


def test_batchnorm_momentum_is_airbench94s_one_minus_0_6():
    norms = [m for m in small().modules() if isinstance(m, BatchNorm)]
    assert norms and all(m.momentum == 1 - 0.6 for m in norms)  # torch: weight of the new batch
    norm = norms[0].train()
    x = torch.randn(32, norm.num_features, 4, 4) + 3.0
    norm(x)
    expected = 0.4 * x.mean((0, 2, 3))  # running mean starts at 0
    torch.testing.assert_close(norm.running_mean, expected)


def one_step(model, optimizer) -> None:
    x, y = torch.randn(16, 3, 16, 16), torch.arange(16) % 4
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_the_whitening_bias_trains_for_three_epochs_then_freezes():
    model = small()
    init_from_data(model, [(torch.randn(64, 3, 16, 16), None, None)])
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))
    weight = model.whiten.weight.detach().clone()
    for epoch in (1, 2, 3):
        model.set_epoch(epoch)
        bias = model.whiten.bias.detach().clone()
        one_step(model, optimizer)
        assert not torch.equal(model.whiten.bias, bias), f"the bias should train in epoch {epoch}"
    model.set_epoch(4)
    bias = model.whiten.bias.detach().clone()
    one_step(model, optimizer)
    torch.testing.assert_close(model.whiten.bias, bias, rtol=0, atol=0)
    torch.testing.assert_close(model.whiten.weight, weight, rtol=0, atol=0)  # whitened: frozen throughout


def test_whiten_false_neither_whitens_nor_freezes_the_stem():
    model = small(whiten=False)
    before = model.whiten.weight.detach().clone()
    init_from_data(model, [(torch.randn(64, 3, 16, 16) * 5, None, None)])
    torch.testing.assert_close(model.whiten.weight, before, rtol=0, atol=0)
    whitened = small()
    init_from_data(whitened, [(torch.randn(64, 3, 16, 16) * 5, None, None)])
    assert not torch.allclose(whitened.whiten.weight, before)  # the default does whiten
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))
    model.set_epoch(10)
    bias = model.whiten.bias.detach().clone()
    one_step(model, optimizer)
    assert not torch.equal(model.whiten.weight, before) and not torch.equal(model.whiten.bias, bias)


def test_the_fidelity_switches_are_model_kwargs_for_ablations():
    model = small(bn_momentum=0.6, whiten_bias_epochs=0)
    assert all(m.momentum == 0.6 for m in model.modules() if isinstance(m, BatchNorm))
    model.set_epoch(1)
    assert not model.whiten.bias.requires_grad  # the bias frozen from the start, as before


def test_a_3x3_stem_whitens_its_patches_as_the_2x2_one_does():
    """`stem_kernel=3` (9 filters a channel, each with both signs): on correlated images the
    stem's outputs are decorrelated, and 28-px grey images still end in 3-px maps."""
    torch.manual_seed(0)
    images = F.avg_pool2d(torch.randn(256, 1, 30, 30), 3, stride=1)  # (256, 1, 28, 28), neighbours correlated
    for k in (2, 3):
        model = create_model("airbench", 10, 1, 28, widths=[8, 16, 16], stem_kernel=k)
        assert model.whiten.weight.shape == (2 * k * k, 1, k, k)
        init_from_data(model, [(images, None, None)])
        out = F.conv2d(images, model.whiten.weight[: k * k])  # the + half; the bias is zero
        flat = out.permute(0, 2, 3, 1).reshape(-1, k * k)
        cov = torch.cov(flat.T)
        off = cov - torch.diag(cov.diag())
        assert off.abs().max() < 0.02, f"{k}×{k}: patches not decorrelated"
        assert cov.diag().min() > 0.5, f"{k}×{k}: whitened variances should be ~1"
        assert model.forward_features(images[:2]).shape[-2:] == (3, 3)


def test_gelu_on_channels_last_maps_takes_the_contiguous_view_and_keeps_the_layout(monkeypatch):
    """The channels-last map reaches F.gelu as a contiguous NHWC view (oneDNN's path); values,
    gradients and layout match ATen's own GELU on the channels-last map."""
    from yingshe.models.layers import GELU

    torch.manual_seed(0)
    x = torch.randn(6, 24, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    reference = x.detach().clone().requires_grad_()  # channels-last too: ATen's loop
    expected = F.gelu(reference)
    seen = []
    gelu = F.gelu

    def spy(tensor, approximate="none"):
        seen.append(tensor.is_contiguous())
        return gelu(tensor, approximate=approximate)

    monkeypatch.setattr(F, "gelu", spy)
    out = GELU()(x)
    assert seen == [True], "the channels-last map did not reach F.gelu as a contiguous view"
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(expected)  # channels-last, as the gradient from the next layer is
    assert grad.is_contiguous(memory_format=torch.channels_last)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, reference.grad, atol=1e-5, rtol=1e-5)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    GELU(approximate="tanh")(x)  # oneDNN's path is the exact GELU's only: tanh stays as it was
    assert seen == [True, False]
    assert all(isinstance(m, GELU) for m in small().modules() if isinstance(m, torch.nn.GELU))

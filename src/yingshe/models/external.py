"""Adapters for the model zoos: `timm:<name>` and `torchvision:<name>`."""

from __future__ import annotations

from torch import Tensor, nn

from yingshe.errors import YingsheError


def timm_model(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise YingsheError("timm models need the timm package", "pip install 'yingshe[timm]'") from err
    if name not in timm.list_models(pretrained=False):
        from yingshe.errors import close_matches

        raise YingsheError(
            f"timm has no model {name!r}", close_matches(name, timm.list_models(f"*{name[:4]}*"))
        )
    try:
        return timm.create_model(
            name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except (OSError, RuntimeError) as err:
        raise YingsheError(
            f"could not build timm:{name} (pretrained={pretrained}): {err}",
            "pretrained weights need the hub or a local cache; train from scratch with pretrained=false",
        ) from err


class RepeatChannels(nn.Module):
    """Feed grey images to a zoo model built for RGB by repeating the channel."""

    def __init__(self, model: nn.Module, times: int):
        super().__init__()
        self.model, self.times = model, times

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.repeat(1, self.times, 1, 1))


def torchvision_model(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs) -> nn.Module:
    from torchvision import models

    available = models.list_models(module=models)
    if name not in available:
        from yingshe.errors import close_matches

        raise YingsheError(
            f"torchvision has no classification model {name!r}", close_matches(name, available)
        )
    if pretrained:
        raise YingsheError(
            f"pretrained torchvision:{name} needs its weights from the internet",
            "train from scratch (pretrained=false) or use a timm model with cached weights",
        )
    model = models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return RepeatChannels(model, 3) if in_chans == 1 else model

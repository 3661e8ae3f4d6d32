"""Adapters for the model zoos: `timm:<name>` and `torchvision:<name>`."""

from __future__ import annotations

import difflib

from torch import Tensor, nn

from yingshe.errors import YingsheError


def timm_model(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise YingsheError("timm models need the timm package", "pip install 'yingshe[timm]'") from err
    known = timm.list_models(pretrained=False)
    if name not in known:
        raise YingsheError(f"timm has no model {name!r}", zoo_hint(name, known, "timm"))
    try:
        return timm.create_model(
            name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except (OSError, RuntimeError) as err:
        raise YingsheError(
            f"could not build timm:{name} (pretrained={pretrained}): {err}",
            "pretrained weights need the hub or a local cache; train from scratch with pretrained=false",
        ) from err


def zoo_hint(name: str, known: list[str], zoo: str) -> str:
    """Close names from the zoo's own list (a zoo lists over a thousand, too many to print), else
    how to see them."""
    starts = [k for k in known if k.lower().startswith(name.lower())]
    near = list(dict.fromkeys(starts[:3] + difflib.get_close_matches(name, known, n=5, cutoff=0.6)))[:5]
    if near:
        return "did you mean " + " or ".join(f"{zoo}:{n}" for n in near) + "?"
    example = "timm:resnet18" if zoo == "timm" else "torchvision:resnet18"
    source = "timm.list_models()" if zoo == "timm" else "torchvision.models.list_models()"
    return (
        f"{zoo} knows {len(known)} names, none close to {name!r}: list them with "
        f"python -c 'import {zoo}; print({source})' (e.g. {example}); "
        "`yingshe models` lists the built-in ones"
    )


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
        raise YingsheError(
            f"torchvision has no classification model {name!r}", zoo_hint(name, available, "torchvision")
        )
    if pretrained:
        raise YingsheError(
            f"pretrained torchvision:{name} needs its weights from the internet",
            "train from scratch (pretrained=false) or use a timm model with cached weights",
        )
    model = models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return RepeatChannels(model, 3) if in_chans == 1 else model

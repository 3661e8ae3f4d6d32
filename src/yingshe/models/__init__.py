"""Models by name: `create_model` is the one factory every caller uses (the timm habit).

Built-in names are registered below; `timm:<name>` and `torchvision:<name>` reach the zoos.
Every builder takes (num_classes, in_chans, image_size, **kwargs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from yingshe.errors import YingsheError
from yingshe.models.airbench import AirbenchNet
from yingshe.models.external import timm_model, torchvision_model
from yingshe.models.resnet import cifar_resnet, resnet18
from yingshe.models.seed_cnn import SeedCNN
from yingshe.models.vit import ViT
from yingshe.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[..., nn.Module]
    summary: str


MODELS: Registry[ModelEntry] = Registry("model")


def _register(name: str, summary: str):
    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.register(name)(ModelEntry(build, summary))
        return build

    return wrap


@_register("seed-cnn", "the seeds' 4-block conv–BN–ReLU–pool CNN")
def _seed_cnn(num_classes, in_chans, image_size, **kw):
    return SeedCNN(num_classes, in_chans, image_size, **kw)


@_register("resnet20", "CIFAR ResNet-20 (3 stages × 3 blocks, 16–64 wide)")
def _resnet20(num_classes, in_chans, image_size, **kw):
    return cifar_resnet(num_classes, in_chans, 20, **kw)


@_register("resnet56", "CIFAR ResNet-56 (3 stages × 9 blocks)")
def _resnet56(num_classes, in_chans, image_size, **kw):
    return cifar_resnet(num_classes, in_chans, 56, **kw)


@_register("se-resnet20", "ResNet-20 with squeeze-and-excitation attention in every block")
def _se_resnet20(num_classes, in_chans, image_size, **kw):
    return cifar_resnet(num_classes, in_chans, 20, se=True, **kw)


@_register("resnet18", "ResNet-18; 3×3 stem below 96 px, ImageNet stem above")
def _resnet18(num_classes, in_chans, image_size, **kw):
    return resnet18(num_classes, in_chans, image_size, **kw)


@_register("vit-tiny", "a small Vision Transformer (8×8 patches grid, 6 layers, 192 wide)")
def _vit_tiny(num_classes, in_chans, image_size, **kw):
    return ViT(num_classes, in_chans, image_size, **kw)


@_register("airbench", "airbench94-style net: whitened 2×2 stem, 3 conv–pool–BN–GELU groups (64–256)")
def _airbench(num_classes, in_chans, image_size, **kw):
    return AirbenchNet(num_classes, in_chans, image_size, **kw)


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    image_size: int = 32,
    pretrained: bool = False,
    **kwargs,
) -> nn.Module:
    """Build a model by name; input channels and classes follow the dataset."""
    zoo, sep, zoo_name = name.partition(":")
    if sep and zoo == "timm":
        return timm_model(zoo_name, num_classes, in_chans, pretrained, **kwargs)
    if sep and zoo == "torchvision":
        return torchvision_model(zoo_name, num_classes, in_chans, pretrained, **kwargs)
    if pretrained:
        raise YingsheError(f"built-in model {name!r} has no pretrained weights", "use a timm: model")
    try:
        return MODELS.get(name).build(num_classes, in_chans, image_size, **kwargs)
    except (TypeError, ValueError) as err:
        raise YingsheError(f"bad arguments for model {name!r}: {err}", "check model.kwargs") from err


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def list_models() -> list[tuple[str, str]]:
    return [(name, MODELS.get(name).summary) for name in MODELS.names()]

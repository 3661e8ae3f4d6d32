"""Adapters for the model zoos: `timm:<name>` and `torchvision:<name>`.

timm models already answer the feature/head interface (`forward_features`, `forward_head`,
`num_features`, `reset_classifier`); torchvision's heads differ per family, so `TorchvisionNet`
wraps one and implements the interface for the families in `TORCHVISION_FAMILIES`. The wrapped
model sits at `net`, so torchvision's own weight files load into `model.net` unchanged.
"""

from __future__ import annotations

import difflib

import torch
from torch import Tensor, nn

from yingshe.errors import YingsheError
from yingshe.models.layers import FeaturesHead, child_stages

TORCHVISION_FAMILIES = (
    "resnet/resnext/wide_resnet",
    "regnet",
    "shufflenet_v2",
    "mobilenet_v2/v3",
    "efficientnet/efficientnet_v2",
    "mnasnet",
    "convnext",
    "densenet",
    "vgg/alexnet",
    "vit",
    "swin",
)


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
            "pretrained weights need the hub or a local cache: use `yingshe finetune timm:NAME`, "
            "which finds them offline, or train from scratch with pretrained=false",
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


def _last_linear(seq: nn.Sequential) -> tuple[nn.Sequential, int]:
    """The index of the last nn.Linear of a classifier Sequential."""
    for i in range(len(seq) - 1, -1, -1):
        if isinstance(seq[i], nn.Linear):
            return seq, i
    raise ValueError("no linear layer in the classifier")


class TorchvisionNet(FeaturesHead):
    """A torchvision classifier with the feature/head interface; grey inputs are repeated to RGB."""

    def __init__(self, net: nn.Module, name: str, in_chans: int = 3):
        super().__init__()
        self.net, self.name, self.repeat = net, name, 3 if in_chans == 1 else 1
        self.family = torchvision_family(net, name)
        self.num_features = self.get_classifier().in_features

    # -- where each family keeps its head ----------------------------------------------------
    def _head_slot(self) -> tuple[nn.Module, str]:
        net, family = self.net, self.family
        if family in ("resnet", "regnet", "shufflenet"):
            return net, "fc"
        if family == "densenet":
            return net, "classifier"
        if family == "vit":
            return net.heads, str(len(net.heads) - 1)
        if family == "swin":
            return net, "head"
        seq, i = _last_linear(net.classifier)
        return seq, str(i)

    def get_classifier(self) -> nn.Module:
        parent, attr = self._head_slot()
        return getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]

    def reset_classifier(self, num_classes: int) -> None:
        parent, attr = self._head_slot()
        linear = nn.Linear(self.num_features, num_classes)
        if attr.isdigit():
            parent[int(attr)] = linear
        else:
            setattr(parent, attr, linear)

    # -- the body -----------------------------------------------------------------------------
    def forward_features(self, x: Tensor) -> Tensor:
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        net, family = self.net, self.family
        if family == "resnet":
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            return net.layer4(net.layer3(net.layer2(net.layer1(x))))
        if family == "regnet":
            return net.trunk_output(net.stem(x))
        if family == "shufflenet":
            x = net.stage4(net.stage3(net.stage2(net.maxpool(net.conv1(x)))))
            return net.conv5(x)
        if family == "mnasnet":
            return net.layers(x)
        if family == "densenet":
            return torch.relu(net.features(x))
        if family == "vit":
            x = net._process_input(x)
            x = torch.cat([net.class_token.expand(x.shape[0], -1, -1), x], dim=1)
            return net.encoder(x)  # (B, 1 + N, D)
        if family == "swin":
            return net.permute(net.norm(net.features(x)))
        return net.features(x)  # mobilenet, efficientnet, convnext, vgg, alexnet

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        net, family = self.net, self.family
        if family == "vit":
            x = net.heads[:-1](x[:, 0])
        elif family in ("resnet", "regnet", "swin"):
            x = net.avgpool(x).flatten(1)
        elif family == "densenet":
            x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        elif family in ("shufflenet", "mnasnet"):
            x = x.mean((2, 3))
            if family == "mnasnet":
                x = net.classifier[:-1](x)
        elif family == "convnext":
            x = net.classifier[:-1](net.avgpool(x))  # LayerNorm2d, Flatten
        else:
            pool = getattr(net, "avgpool", None) or nn.AdaptiveAvgPool2d(1)
            seq, i = _last_linear(net.classifier)
            x = seq[:i](pool(x).flatten(1))
        return x if pre_logits else self.get_classifier()(x)

    def stages(self) -> list[tuple[str, tuple[str, ...]]]:
        return self._body_stages() + self._pre_logits_stage()

    def _pre_logits_stage(self) -> list[tuple[str, tuple[str, ...]]]:
        """Layers between the pooled features and the classifier (ConvNeXt's norm, MobileNetV3's
        and VGG's hidden linears): the top stage of the body."""
        parent, attr = self._head_slot()
        if not attr.isdigit() or not isinstance(parent, nn.Sequential):
            return []
        prefix = next(name for name, module in self.named_modules() if module is parent)
        layers = [f"{prefix}.{j}" for j in range(int(attr)) if any(True for _ in parent[j].parameters())]
        return [(f"{prefix}.pre_logits", tuple(layers))] if layers else []

    def _body_stages(self) -> list[tuple[str, tuple[str, ...]]]:
        net, family = self.net, self.family
        if family == "resnet":
            layers = [(f"net.layer{i}", (f"net.layer{i}",)) for i in range(1, 5)]
            return [("net.stem", ("net.conv1", "net.bn1")), *layers]
        if family == "regnet":
            return [("net.stem", ("net.stem",)), *child_stages("net.trunk_output", net.trunk_output)]
        if family == "shufflenet":
            return [(f"net.{n}", (f"net.{n}",)) for n in ("conv1", "stage2", "stage3", "stage4", "conv5")]
        if family == "mnasnet":
            return child_stages("net.layers", net.layers)
        if family == "vit":
            embed = ("net.embed", ("net.conv_proj", "net.class_token", "net.encoder.pos_embedding"))
            layers = child_stages("net.encoder.layers", net.encoder.layers)
            return [embed, *layers, ("net.encoder.ln", ("net.encoder.ln",))]
        if family == "swin":
            return [*child_stages("net.features", net.features), ("net.norm", ("net.norm",))]
        return child_stages("net.features", net.features)


def torchvision_family(net: nn.Module, name: str) -> str:
    """Which head layout `net` has, from its class; an unhandled one is a clear error."""
    from torchvision import models

    kinds = [
        (models.ResNet, "resnet"),
        (models.RegNet, "regnet"),
        (models.ShuffleNetV2, "shufflenet"),
        (models.MNASNet, "mnasnet"),
        (models.DenseNet, "densenet"),
        (models.VisionTransformer, "vit"),
        (models.SwinTransformer, "swin"),
        (models.ConvNeXt, "convnext"),
        (models.MobileNetV2, "features"),
        (models.MobileNetV3, "features"),
        (models.EfficientNet, "features"),
        (models.VGG, "features"),
        (models.AlexNet, "features"),
    ]
    for cls, family in kinds:
        if isinstance(net, cls):
            return family
    raise YingsheError(
        f"torchvision:{name} ({type(net).__name__}) has a head layout yingshe does not adapt",
        "use one of the families " + ", ".join(TORCHVISION_FAMILIES) + ", or a timm: model",
    )


def torchvision_model(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs) -> nn.Module:
    from torchvision import models

    available = models.list_models(module=models)
    if name not in available:
        raise YingsheError(
            f"torchvision has no classification model {name!r}", zoo_hint(name, available, "torchvision")
        )
    if pretrained:
        raise YingsheError(
            f"model.pretrained=true does not load torchvision:{name}'s weights",
            f"use `yingshe finetune torchvision:{name}` (it finds the weights in the torch hub cache "
            "or takes --weights FILE)",
        )
    net = models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return TorchvisionNet(net, name, in_chans)

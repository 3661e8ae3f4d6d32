"""ResNets: CIFAR-style (He et al. 2016, §4.2) for small images, and ResNet-18 whose stem adapts
to the image size (3×3 stride 1 below 96 px, the ImageNet 7×7 stride 2 + max-pool above)."""

from __future__ import annotations

from torch import Tensor, nn

from yingshe.models.layers import ClassifierHead, ConvBNAct, PooledClassifierNet, SqueezeExcite, child_stages


class BasicBlock(nn.Module):
    """Two 3×3 convs with an identity (or 1×1 projection) shortcut; optional SE attention."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, se: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(c_in, c_out, 3, stride),
            ConvBNAct(c_out, c_out, 3, 1, act=False),
            SqueezeExcite(c_out) if se else nn.Identity(),
        )
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out else ConvBNAct(c_in, c_out, 1, stride, act=False)
        )
        self.act = nn.ReLU(inplace=True)
        nn.init.zeros_(self.body[1][1].weight)  # zero-init the last BN: each block starts as identity

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(PooledClassifierNet):
    """stem → stages of BasicBlocks (stride 2 between stages) → pooled linear head."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        stem: nn.Module,
        se: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.stem = stem
        stages, c_in = [], widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = [
                BasicBlock(c_in if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1, se)
                for j in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.features = nn.Sequential(*stages)
        self.head = ClassifierHead(c_in, num_classes, dropout)
        self.num_features = c_in

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(self.stem(x))

    def stages(self) -> list[tuple[str, tuple[str, ...]]]:
        return [("stem", ("stem",)), *child_stages("features", self.features)]


def cifar_resnet(
    num_classes: int, in_chans: int, depth: int, width: int = 16, se: bool = False, **kwargs
) -> ResNet:
    """depth = 6n + 2: three stages of n blocks with widths (w, 2w, 4w)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return ResNet(
        num_classes,
        in_chans,
        (width, 2 * width, 4 * width),
        (n, n, n),
        ConvBNAct(in_chans, width),
        se=se,
        **kwargs,
    )


def resnet18(num_classes: int, in_chans: int, image_size: int = 32, width: int = 64, **kwargs) -> ResNet:
    widths = (width, 2 * width, 4 * width, 8 * width)
    if image_size >= 96:
        stem = nn.Sequential(ConvBNAct(in_chans, width, 7, 2), nn.MaxPool2d(3, 2, 1))
    else:
        stem = ConvBNAct(in_chans, width)
    return ResNet(num_classes, in_chans, widths, (2, 2, 2, 2), stem, **kwargs)

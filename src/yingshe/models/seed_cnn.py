"""The seeds' plain CNN: four conv–BN–ReLU blocks with max-pooling, then a linear classifier."""

from __future__ import annotations

import math

from torch import Tensor, nn

from yingshe.models.layers import ClassifierHead, ConvBNAct, PooledClassifierNet, child_stages


class SeedCNN(PooledClassifierNet):
    """Four blocks of (conv–BN–ReLU ×2, 2×2 max-pool); pooling stops once the map is 2×2, so the
    same net runs on 8×8 digits, 28×28 Fashion-MNIST and 32×32 CIFAR."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        image_size: int = 32,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        dropout: float = 0.25,
    ):
        super().__init__()
        pools = max(0, min(len(widths), int(math.log2(max(image_size, 1))) - 1))
        blocks: list[nn.Module] = []
        c_in = in_chans
        for i, width in enumerate(widths):
            blocks += [ConvBNAct(c_in, width), ConvBNAct(width, width)]
            if i < pools:
                blocks.append(nn.MaxPool2d(2))
            c_in = width
        self.features = nn.Sequential(*blocks)
        self.head = ClassifierHead(c_in, num_classes, dropout)
        self.num_features = c_in

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def stages(self) -> list[tuple[str, tuple[str, ...]]]:
        return child_stages("features", self.features)

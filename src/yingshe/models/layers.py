"""Small building blocks that stack into bodies and heads (the fastai habit)."""

from __future__ import annotations

from torch import Tensor, nn


class ConvBNAct(nn.Sequential):
    """conv → batch norm → ReLU, the unit every built-in conv net is made of."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al., 2018): reweight channels by a gate from their global mean."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class ClassifierHead(nn.Sequential):
    """Global average pool → dropout → linear: features (B, C, H, W) → logits (B, K)."""

    def __init__(self, features: int, num_classes: int, dropout: float = 0.0):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(features, num_classes),
        )

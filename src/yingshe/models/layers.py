"""Small building blocks that stack into bodies and heads (the fastai habit)."""

from __future__ import annotations

import torch
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


class GELU(nn.GELU):
    """GELU that takes PyTorch's oneDNN kernel for channels-last maps on the CPU too.

    On the CPU, exact (`approximate="none"`) `F.gelu` and its backward reach oneDNN's vectorised
    kernel only for a contiguous tensor; a channels-last map falls back to ATen's loop, 1.2–3×
    slower for the airbench maps at batch 500 (bench/channels_last_gelu.py; docs/benchmarks.md,
    session 11). A channels-last
    (B, C, H, W) map is a contiguous (B, H, W, C) one in memory, so it is handed over in that
    view, without a copy; the result is the same function up to the kernels' rounding (~1e-6).
    ONNX export keeps the plain op: the runtime's tensors are NCHW and the transposes would only
    add nodes.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.dim() == 4
            and x.device.type == "cpu"
            and self.approximate == "none"
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.onnx.is_in_onnx_export()
        ):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


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

    def pooled(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The pooled vector (pre_logits) or the logits."""
        x = self[1](self[0](x))
        return x if pre_logits else self[3](self[2](x))

    def reset(self, num_classes: int) -> None:
        self[3] = nn.Linear(self[3].in_features, num_classes)


class FeaturesHead(nn.Module):
    """The feature/head interface every yingshe model answers (timm's convention), so Grad-CAM,
    fine-tuning and embeddings never need to know a model's layout.

    `forward_features(x)` is the body's last map: (B, C, h, w) for conv nets, (B, N, D) tokens for
    transformers; `forward_head(f, pre_logits=True)` pools it into the (B, num_features) vector the
    classifier reads; `reset_classifier(k)` swaps in a fresh k-class classifier; `stages()` lists the
    body's parameter-name prefixes from input to output (what `gradual` unfreezes from the top).
    """

    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def stages(self) -> list[tuple[str, tuple[str, ...]]]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def child_stages(prefix: str, module: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """One stage per child of `module` that holds parameters, named `prefix.i`."""
    return [
        (f"{prefix}.{name}", (f"{prefix}.{name}",))
        for name, child in module.named_children()
        if any(True for _ in child.parameters())
    ]


class PooledClassifierNet(FeaturesHead):
    """A conv net whose head is a `ClassifierHead` at `self.head`: the head half of the interface,
    written once for every such model (seed CNN, ResNets)."""

    head: ClassifierHead

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head.pooled(x, pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.head[3]

    def reset_classifier(self, num_classes: int) -> None:
        self.head.reset(num_classes)

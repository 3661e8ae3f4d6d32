"""A small Vision Transformer (Dosovitskiy et al. 2021) sized for 28–64 px images on a CPU."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yingshe.models.layers import FeaturesHead, child_stages


class ViT(FeaturesHead):
    """Patch embedding → pre-norm transformer encoder → mean-pooled tokens → linear head.

    Mean pooling instead of a class token trains better on small data (Beyer et al. 2022).
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        image_size: int = 32,
        patch_size: int | None = None,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        patch = patch_size or default_patch(image_size)
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch}")
        tokens = (image_size // patch) ** 2
        self.patchify = nn.Conv2d(in_chans, dim, patch, patch)
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            int(dim * mlp_ratio),
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.num_features = dim

    def forward_features(self, x: Tensor) -> Tensor:
        tokens = self.patchify(x).flatten(2).transpose(1, 2) + self.position  # (B, N, D)
        return self.norm(self.encoder(tokens))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = x.mean(dim=1)
        return pooled if pre_logits else self.head(pooled)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)

    def stages(self) -> list[tuple[str, tuple[str, ...]]]:
        embed = ("embed", ("patchify", "position"))
        return [embed, *child_stages("encoder.layers", self.encoder.layers), ("norm", ("norm",))]


def default_patch(image_size: int, max_grid: int = 8) -> int:
    """The smallest patch that divides the image into a grid of at most 8×8 tokens."""
    return next(p for p in range(1, image_size + 1) if image_size % p == 0 and image_size // p <= max_grid)

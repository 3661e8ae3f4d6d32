"""A small Vision Transformer (Dosovitskiy et al. 2021) sized for 28–64 px images on a CPU."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ViT(nn.Module):
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
        self.feature_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patchify(x).flatten(2).transpose(1, 2) + self.position  # (B, N, D)
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))


def default_patch(image_size: int, max_grid: int = 8) -> int:
    """The smallest patch that divides the image into a grid of at most 8×8 tokens."""
    return next(p for p in range(1, image_size + 1) if image_size % p == 0 and image_size // p <= max_grid)

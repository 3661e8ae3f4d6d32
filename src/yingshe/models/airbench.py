"""An airbench-style net (Keller Jordan's airbench94): a fixed whitening stem and three
conv–pool–BN–GELU blocks, built for time to accuracy rather than for the last tenth of a percent.

The tricks, each cheap and each worth a measured gain in airbench's ablations:
- the 2×2 stem is initialised from the eigenvectors of the training patches' covariance (ZCA-like
  whitening, `init_from_data`) and its weights frozen: the first layer starts decorrelated instead
  of random. Its bias trains for the first `whiten_bias_epochs` (3, as airbench94's
  `whiten_bias_epochs`) and is then frozen too: the trainer calls `set_epoch` before each epoch;
- batch norm has a fixed scale of 1 (only the shift learns) and a fast running-stat momentum:
  airbench94's `batchnorm_momentum=0.6` is the weight of the *old* statistics, which it passes to
  torch as `momentum=1 - 0.6`, so torch's momentum (the weight of the new batch) is 0.4;
- pooling comes before batch norm in each block (4× fewer elements to normalise);
- the logits are scaled down (1/9 in airbench) so the first steps' cross-entropy stays tame.
The same net runs on 28×28 grey and 32×32 colour (2×2 valid stem → 27/31 px → three pools → 3 px →
global max) and on 8×8 digits (pooling stops at 1 px).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yingshe.models.layers import GELU, FeaturesHead, child_stages

BN_MOMENTUM = 1 - 0.6  # torch's convention (weight of the new batch), as airbench94 passes it


class BatchNorm(nn.BatchNorm2d):
    """BN whose scale is fixed at 1 (only the bias learns), with a fast running-stat momentum."""

    def __init__(self, channels: int, momentum: float = BN_MOMENTUM, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """conv → 2×2 max-pool → BN → GELU → conv → BN → GELU: (B, C_in, H, W) → (B, C_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int, pool: bool = True, bn_momentum: float = BN_MOMENTUM):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.norm1 = BatchNorm(c_out, bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = BatchNorm(c_out, bn_momentum)
        self.act = GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirbenchNet(FeaturesHead):
    """whiten (2×2 or `stem_kernel`, frozen) → 3 ConvGroups → global max-pool → linear (no bias) × scale.

    With `whiten=False` the stem is an ordinary learnt 2×2 conv: `init_from_data` leaves it as
    initialised and its weights and bias train throughout.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        image_size: int = 32,
        widths: tuple[int, ...] = (64, 256, 256),
        scale: float = 1 / 9,
        whiten: bool = True,
        whiten_bias_epochs: int = 3,
        bn_momentum: float = BN_MOMENTUM,  # torch's convention; kwargs make the ablation one flag
        stem_kernel: int = 2,
    ):
        super().__init__()
        stem_out = 2 * in_chans * stem_kernel**2  # ± each eigenvector of the k×k×C patch covariance
        self.whiten = nn.Conv2d(in_chans, stem_out, stem_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(not whiten)  # frozen once whitened; learnt otherwise
        # the bias starts trainable, so the optimiser holds it; set_epoch freezes it later
        self.whitened = whiten
        self.whiten_bias_epochs = whiten_bias_epochs
        self.stem_act = GELU()
        groups, c_in, side = [], stem_out, image_size - stem_kernel + 1
        for width in widths:  # pool while the map is at least 2 px, so 8×8 digits work too
            groups.append(ConvGroup(c_in, width, pool=side >= 2, bn_momentum=bn_momentum))
            c_in, side = width, side // 2 if side >= 2 else side
        self.features = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.scale = scale
        self.num_features = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.whiten:
                nn.init.dirac_(m.weight[: m.in_channels])  # identity-initialised where shapes allow

    def set_epoch(self, epoch: int) -> None:
        """Before epoch `epoch` (1-based): a whitened stem's bias trains for the first
        `whiten_bias_epochs` epochs and is frozen after (airbench94: 3). Frozen parameters get no
        gradient, so SGD leaves them (and their weight decay) alone."""
        if self.whitened:
            self.whiten.bias.requires_grad_(epoch <= self.whiten_bias_epochs)

    @torch.no_grad()
    def init_from_data(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the stem to whitening filters from normalised training images (N, C, H, W); a
        no-op with `whiten=False`, whose stem is learnt from its ordinary initialisation.

        The k×k patches' covariance Σ = V diag(λ) Vᵀ (k = `stem_kernel`, 2 by default) gives
        filters Vᵀ / sqrt(λ + eps), used with both signs so that the following GELU keeps the
        information of either half.
        """
        if not self.whitened:
            return
        c, k = images.shape[1], self.whiten.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H-k+1, W-k+1, k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)  # (k²C, k²C)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).view(-1, c, k, k)
        weight = torch.cat([filters, -filters]).to(self.whiten.weight)
        self.whiten.weight.copy_(weight)
        self.whiten.bias.zero_()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(self.stem_act(self.whiten(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = self.pool(x).flatten(1)
        return pooled if pre_logits else self.head(pooled) * self.scale

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes, bias=False)

    def stages(self) -> list[tuple[str, tuple[str, ...]]]:
        return [("whiten", ("whiten",)), *child_stages("features", self.features)]

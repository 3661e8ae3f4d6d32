"""Progressive resizing: train the early part of a run on smaller images, the rest at full size.

A convolution's cost scales with the pixels, so a batch at 20 px of a 28-px dataset costs about
half; the early, high-learning-rate steps learn coarse features that do not need every pixel
(fast.ai's DAWNBench ImageNet entry and FFCV's ResNet recipes ramp the side up the same way). The
side follows the learning-rate schedule's position, not the epoch count, so a resumed or extended
run resizes exactly as the uninterrupted one: linearly from `augment.progressive_min` at the start
to the full side at `augment.progressive_until` of the run, in even steps, then full size to the
end (`progressive_until` < 1, so the last steps and batch norm's running statistics are at full
size). Evaluation always sees full-size images. The first side is checked against the model
before the run starts (`models/probe.check_progressive_side`): convolutional nets with a global
pool take smaller images; a ViT's fixed position embedding does not. With `train.compile`, each
new side compiles again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def training_side(full: int, start: int | None, until: float, fraction: float) -> int:
    """The side to train at, `fraction` of the way through the run (0 → `start`, `until` → `full`)."""
    if start is None or start >= full or fraction >= until:
        return full
    side = start + (full - start) * max(fraction, 0.0) / until
    return min(full, max(start, 2 * round(side / 2)))


def resize_batch(inputs: Tensor, side: int) -> Tensor:
    """A normalised float batch (B, C, H, W) → height `side` (width in proportion), antialiased
    bilinear, keeping a channels-last layout."""
    height, width = inputs.shape[-2:]
    if height == side:
        return inputs
    size = (side, max(1, round(width * side / height)))
    out = F.interpolate(inputs, size=size, mode="bilinear", antialias=True, align_corners=False)
    channels_last = inputs.is_contiguous(memory_format=torch.channels_last) and not inputs.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out

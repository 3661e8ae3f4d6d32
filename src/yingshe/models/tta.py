"""Test-time augmentation (a mirror, shifted copies): one decision of when the mirror applies and
one forward that applies them.

Training's per-epoch validation, `evaluate` and `predict` all call these two functions, so a run
is served exactly as it was evaluated.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def flip_tta_applies(requested: bool, flip_invariant: bool) -> bool:
    """Average each image with its mirror only where the run asked for it (`train.tta_flip`) and
    a mirror image is the same class: never for digits or text, where it would be a different one."""
    return bool(requested) and bool(flip_invariant)


def tta_views(flip: bool, translate: int) -> int:
    """Forward passes an image costs under this TTA (what the time budget plans for)."""
    return (2 if flip else 1) * (3 if translate else 1)


def tta_forward(model: nn.Module, inputs: Tensor, flip: bool, translate: int = 0) -> Tensor:
    """Logits (B, K) of inputs (B, C, H, W); with `flip`, the mean of the image's and its mirror's.

    With `translate` (pixels, airbench94's TTA level 2), half the weight goes to two copies shifted
    by that many pixels up-left and down-right (reflect padding), each mirrored as well with `flip`.
    """
    logits = _mirrored(model, inputs, flip)
    if translate:
        h, w, p = inputs.shape[-2], inputs.shape[-1], translate
        padded = F.pad(inputs, (p, p, p, p), mode="reflect")
        up_left = _mirrored(model, padded[..., :h, :w], flip)
        down_right = _mirrored(model, padded[..., 2 * p : 2 * p + h, 2 * p : 2 * p + w], flip)
        logits = (logits + (up_left + down_right) / 2) / 2
    return logits


def _mirrored(model: nn.Module, inputs: Tensor, flip: bool) -> Tensor:
    logits = model(inputs)
    if flip:
        logits = (logits + model(inputs.flip(-1))) / 2
    return logits

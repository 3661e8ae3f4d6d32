"""Flip test-time augmentation: one decision of when it applies and one forward that applies it.

Training's per-epoch validation, `evaluate` and `predict` all call these two functions, so a run
is served exactly as it was evaluated.
"""

from __future__ import annotations

from torch import Tensor, nn


def flip_tta_applies(requested: bool, flip_invariant: bool) -> bool:
    """Average each image with its mirror only where the run asked for it (`train.tta_flip`) and
    a mirror image is the same class: never for digits or text, where it would be a different one."""
    return bool(requested) and bool(flip_invariant)


def tta_forward(model: nn.Module, inputs: Tensor, flip: bool) -> Tensor:
    """Logits (B, K) of inputs (B, C, H, W); with `flip`, the mean of the image's and its mirror's."""
    logits = model(inputs)
    if flip:
        logits = (logits + model(inputs.flip(-1))) / 2
    return logits

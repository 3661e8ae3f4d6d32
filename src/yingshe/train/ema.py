"""An exponential moving average of a model's weights, evaluated and checkpointed instead of them.

Hand-written rather than torch's `AveragedModel`: that one tests `n_averaged == 0` on a device
tensor every update, a host–device sync per training step on CUDA. Here an update is one
`_foreach_lerp_` over every float parameter and buffer (BN running statistics included) and a copy
of the integer buffers, with a warm-up `min(decay, (1 + n) / (10 + n))` so the early average
follows the fast-moving weights (timm's ModelEmaV3 does the same).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


class WeightEMA:
    """`module` holds the averaged weights: a copy of `model` in eval mode, never trained."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be a decay in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        pairs = list(
            zip(
                itertools.chain(self.module.parameters(), self.module.buffers()),
                itertools.chain(model.parameters(), model.buffers()),
                strict=True,
            )
        )
        self.float_pairs = [(a, m) for a, m in pairs if a.is_floating_point()]
        self.other_pairs = [(a, m) for a, m in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged = [a for a, _ in self.float_pairs]
        current = [m.detach() for _, m in self.float_pairs]
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for a, m in self.other_pairs:
            a.copy_(m)

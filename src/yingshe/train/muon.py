"""Muon for convolution filters, Nesterov SGD for the rest: airbench94_muon's optimiser.

Muon (Keller Jordan, 2024) replaces each filter bank's momentum update by its nearest
semi-orthogonal matrix (a few Newton–Schulz iterations on the (out, in·k·k) matrix), so every
direction the update spans moves by about the same amount instead of the few dominant ones. With
a batch norm after every convolution only a filter's direction matters, so airbench also rescales
each filter bank to a fixed norm before the step and uses no weight decay on it. airbench94_muon
reaches 94% on CIFAR-10 in 8 epochs where its SGD version needs 9.9.

One optimiser holds both kinds of group (`muon: True` marks the filters), so the loop's schedule,
checkpoints and resumes treat it like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)  # quintic coefficients with the largest slope at zero
NEWTON_SCHULZ_STEPS = 3  # airbench94_muon's: singular values land in ~(0.5, 1.5), which trains as well as 1


def orthogonalise(update: Tensor, steps: int = NEWTON_SCHULZ_STEPS, eps: float = 1e-7) -> Tensor:
    """≈ U Vᵀ of the (out, rest) matrix of `update` = U S Vᵀ, in `update`'s shape.

    bf16 on a GPU (as airbench); fp32 elsewhere, where bf16 matrix products are emulated and slow.
    """
    matrix = update.reshape(len(update), -1)
    x = matrix.to(torch.bfloat16 if update.is_cuda else torch.float32)
    x = x / (x.norm() + eps)  # the largest singular value ≤ 1, where the iteration converges
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    a, b, c = NEWTON_SCHULZ
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.T
    return x.reshape(update.shape).to(update.dtype)


class Muon(torch.optim.Optimizer):
    """Groups with `muon: True` take Muon steps (normalise the filters, then step along the
    orthogonalised Nesterov momentum, `muon_momentum`); the others take Nesterov SGD steps with
    L2 weight decay, exactly as `torch.optim.SGD(nesterov=True)` does."""

    def __init__(self, groups: Iterable[dict], lr: float, momentum: float, muon_momentum: float):
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": 0.0, "muon": False}
        super().__init__(list(groups), defaults)
        for group in self.param_groups:
            if group["muon"]:
                group["momentum"] = muon_momentum

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: Tensor, group: dict) -> None:
        grad = param.grad
        if group["weight_decay"] and not group["muon"]:
            grad = grad.add(param, alpha=group["weight_decay"])
        momentum = group["momentum"]
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = grad.detach().clone()
        else:
            state["momentum_buffer"].mul_(momentum).add_(grad)
        step = grad.add(state["momentum_buffer"], alpha=momentum)  # Nesterov
        if group["muon"]:
            # every filter bank back to norm √out (BN after it makes only the direction count);
            # clamped rather than tested, so a GPU never waits for the norm
            param.mul_(math.sqrt(len(param)) / param.norm().clamp_min(1e-12))
            step = orthogonalise(step)
        param.add_(step, alpha=-group["lr"])


def filter_banks(model: nn.Module) -> set[int]:
    """ids of the weights Muon steps: those of 2-D convolutions without a bias. In every built-in
    net (and in timm's and torchvision's conv nets) exactly these are followed by a batch norm,
    which makes their rescaling harmless; a conv with a bias (squeeze-excite gates, a ViT's patch
    embedding, an unwhitened airbench stem) feeds something that sees its scale, so SGD steps it."""
    return {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, nn.Conv2d) and module.bias is None and module.weight.requires_grad
    }


def split_filters(groups: Iterable[dict], lr: float, muon_lr: float, filters: set[int]) -> list[dict]:
    """Each of `groups` as two: its weights in `filters` (Muon at `muon_lr` times the group's own
    `lr_scale`, no decay) and the rest (SGD, as given)."""
    out = []
    for group in groups:
        banks = [p for p in group["params"] if id(p) in filters]
        rest = [p for p in group["params"] if id(p) not in filters]
        if rest:
            out.append({**group, "params": rest})
        if banks:
            scale = group.get("lr_scale", 1.0) * muon_lr / lr
            out.append({**group, "params": banks, "muon": True, "weight_decay": 0.0, "lr_scale": scale})
    return out

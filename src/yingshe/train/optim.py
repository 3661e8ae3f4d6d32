"""Optimisers and learning-rate schedules, each looked up by name.

Schedules are plain functions of the step (a multiplier of the peak rate) that the loop applies
itself: stateless, so resuming a run needs only the step count and its `SchedulePlan`, never a
scheduler's pickled state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from yingshe.config import OptimConfig
from yingshe.registry import Registry
from yingshe.train.muon import Muon, filter_banks, split_filters

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("schedule")


def param_groups(model: nn.Module, weight_decay: float, bias_lr_scale: float = 1.0) -> list[dict]:
    """No weight decay on biases and normalisation weights (1-D tensors): decaying them only
    shrinks the scale BN is there to learn. Their learning rate is `bias_lr_scale` times the
    others' (airbench94 trains its BN biases 64× faster: with every conv followed by BN, the
    weights' updates act on their direction only, the biases' on the activations directly)."""
    return split_decay([p for p in model.parameters() if p.requires_grad], weight_decay, bias_lr_scale)


def split_decay(params: Iterable[nn.Parameter], weight_decay: float, bias_lr_scale: float) -> list[dict]:
    """`param_groups`' two groups (weights; 1-D parameters) of `params`: the whole model's, or
    one fine-tuning stage's (transfer/freeze.py)."""
    decay, no_decay = [], []
    for param in params:
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": bias_lr_scale},
    ]


@OPTIMIZERS.register("sgd")
def _sgd(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


@OPTIMIZERS.register("muon")
def _muon(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Groups marked `muon` (build_optimizer splits the filter banks out) take Muon steps."""
    return Muon(groups, cfg.lr, cfg.momentum, cfg.muon_momentum)


@OPTIMIZERS.register("adam")
def _adam(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg.lr)


@OPTIMIZERS.register("adamw")
def _adamw(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, alpha=0.9, eps=1e-3)


@OPTIMIZERS.register("adagrad")
def _adagrad(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(groups, lr=cfg.lr)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.bias_lr_scale)
    if cfg.name == "muon":
        groups = split_filters(groups, cfg.lr, cfg.muon_lr, filter_banks(model))
    optimizer = OPTIMIZERS.get(cfg.name)(groups, cfg)
    for group in optimizer.param_groups:
        group["peak_lr"] = cfg.lr * group.get("lr_scale", 1.0)  # lr_scale stays: a resume reads it
        group["lr"] = group["peak_lr"]
    return optimizer


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@SCHEDULES.register("onecycle")
def _onecycle(total: int, warmup: int, cfg: OptimConfig) -> Callable[[int], float]:
    """Smith's one-cycle as in torch's OneCycleLR: 30% (or the warm-up) rising from 1/25 of the
    peak, then cosine down to 1/10⁴ of the start."""
    rise = warmup or max(1, int(0.3 * total))

    def factor(step: int) -> float:
        if step < rise:
            return 0.04 + 0.96 * step / rise
        progress = min(1.0, (step - rise) / max(1, total - rise))
        return 4e-6 + (1 - 4e-6) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@SCHEDULES.register("cosine")
def _cosine(total: int, warmup: int, cfg: OptimConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        progress = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        return _warmup(step, warmup) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@SCHEDULES.register("linear")
def _linear(total: int, warmup: int, cfg: OptimConfig) -> Callable[[int], float]:
    """After the warm-up, straight down to zero at the end (airbench94_muon, without warm-up)."""

    def factor(step: int) -> float:
        progress = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        return _warmup(step, warmup) * (1 - progress)

    return factor


@SCHEDULES.register("step")
def _step(total: int, warmup: int, cfg: OptimConfig, steps_per_epoch: int = 1) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return _warmup(step, warmup) * cfg.gamma ** (step // max(1, cfg.step_epochs * steps_per_epoch))

    return factor


@SCHEDULES.register("constant")
def _constant(total: int, warmup: int, cfg: OptimConfig) -> Callable[[int], float]:
    return lambda step: _warmup(step, warmup)


def build_schedule(cfg: OptimConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    builder = SCHEDULES.get(cfg.schedule)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "step":
        return builder(total_steps, warmup, cfg, steps_per_epoch)
    return builder(total_steps, warmup, cfg)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor
    return optimizer.param_groups[0]["lr"]


@dataclass(frozen=True)
class SchedulePlan:
    """Which point of the schedule each step of the run is at.

    A schedule is planned over `total` steps. A run that is extended (`--resume RUN --epochs N`
    with a larger N) keeps that plan and stretches the part of it not yet run over the steps not
    yet run: from `from_step` (where the extension began, at schedule position `from_position`)
    to `to_step`, the new last step. The learning rate is therefore continuous across the resume,
    and the run ends at the schedule's final rate, as it would have. A run that was never
    extended maps step s to position s exactly.
    """

    total: int
    from_step: int = 0
    from_position: float = 0.0
    to_step: int | None = None  # None: `total`

    def position(self, step: int) -> float:
        """The schedule position of run step `step` (equal to it unless the run was extended)."""
        end = self.total if self.to_step is None else self.to_step
        if end <= self.from_step:
            return self.from_position
        return self.from_position + (step - self.from_step) * (self.total - self.from_position) / (
            end - self.from_step
        )

    def extended(self, step: int, new_end: int) -> SchedulePlan:
        """The plan of a run resumed at `step` whose last step is now `new_end`."""
        end = self.total if self.to_step is None else self.to_step
        if new_end == end:
            return self
        return SchedulePlan(self.total, step, self.position(step), new_end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SchedulePlan:
        return cls(int(d["total"]), int(d["from_step"]), float(d["from_position"]), d.get("to_step"))

"""Which parameters train when: the body's stages, frozen or unfrozen per strategy, and the
learning rate of each stage (discriminative rates: lower towards the input).

Strategies: `linear-probe` trains the classifier only, `full` trains everything, `gradual`
(ULMFiT, Howard & Ruder 2018) starts with the classifier and unfreezes one more body stage from
the top every `period` epochs. A frozen stage's BatchNorm layers are kept in eval mode, so their
running statistics stay those of the source (a frozen body must not drift on the new data).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from yingshe.errors import YingsheError, close_matches
from yingshe.train.callbacks import Callback
from yingshe.train.optim import split_decay

if TYPE_CHECKING:
    from yingshe.train.trainer import Trainer

log = logging.getLogger(__name__)

STRATEGIES = ("linear-probe", "full", "gradual")


def classifier_names(model: nn.Module) -> set[str]:
    """Parameter names of the classifier (`get_classifier()`), as `named_parameters` spells them."""
    head = model.get_classifier()
    prefix = next(name for name, module in model.named_modules() if module is head)
    return {f"{prefix}.{name}" for name, _ in head.named_parameters()}


def _owned(names: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]


def body_stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The body's parameter names in stages from input to output (the classifier excluded).

    Built-ins and the torchvision adapter list their stages; timm models group by their own
    `group_matcher`; anything else falls back to its top-level children.
    """
    head = classifier_names(model)
    names = [n for n, _ in model.named_parameters() if n not in head]
    if hasattr(model, "stages"):
        stages = [(stage, _owned(names, prefixes)) for stage, prefixes in model.stages()]
    elif hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        groups = group_parameters(model, model.group_matcher(coarse=True))
        stages = [(f"group{i}", [n for n in group if n not in head]) for i, group in groups.items()]
    else:
        children = [name for name, _ in model.named_children()]
        stages = [(c, _owned(names, (c,))) for c in children]
    return [(stage, owned) for stage, owned in stages if owned]


@dataclass
class StagePlan:
    """The stages with their learning-rate factors and the epoch each one starts training."""

    stages: list[tuple[str, list[str]]]
    head: list[str]
    starts: list[int | None]  # per stage: first epoch it trains (None: never)
    lr_factors: list[float]
    head_lr_mult: float

    def frozen_at(self, epoch: int) -> set[str]:
        return {
            n
            for (_, names), start in zip(self.stages, self.starts, strict=True)
            if start is None or epoch < start
            for n in names
        }

    def never_trained(self) -> set[str]:
        """The body's parameters no epoch trains (linear-probe, `freeze_until`)."""
        stages = zip(self.stages, self.starts, strict=True)
        return {n for (_, names), start in stages if start is None for n in names}

    @property
    def unfreezes_later(self) -> bool:
        """Whether a stage starts training after the first epoch (gradual)."""
        return any(start is not None and start > 1 for start in self.starts)

    def unfreeze_order(self) -> list[str]:
        timed = [(start, i) for i, start in enumerate(self.starts) if start is not None]
        return [self.stages[i][0] for _, i in sorted(timed, key=lambda t: (t[0], -t[1]))]


def plan_stages(
    model: nn.Module,
    strategy: str,
    freeze_until: str | None = None,
    head_lr_mult: float = 1.0,
    lr_decay: float = 1.0,
    period: int = 1,
) -> StagePlan:
    if strategy not in STRATEGIES:
        raise YingsheError(f"unknown fine-tuning strategy {strategy!r}", "use " + ", ".join(STRATEGIES))
    if period < 1:
        raise YingsheError(f"finetune.period must be at least 1, got {period}", "set finetune.period=1")
    stages = body_stages(model)
    names = [s for s, _ in stages]
    keep_frozen = 0  # how many stages from the input never train
    if freeze_until is not None:
        if freeze_until not in names:
            raise YingsheError(
                f"--freeze-until {freeze_until!r} is not a stage of this model",
                close_matches(freeze_until, names) + "; its stages are " + ", ".join(names),
            )
        keep_frozen = names.index(freeze_until) + 1
    count = len(stages)
    starts: list[int | None] = []
    for i in range(count):
        if strategy == "linear-probe" or i < keep_frozen:
            starts.append(None)
        elif strategy == "full":
            starts.append(1)
        else:  # gradual: epoch 1 the head only, then the top stage, the next one down, ...
            starts.append(1 + period * (count - i))
    # discriminative rates under gradual: each stage further down trains slower
    factors = [lr_decay ** (count - i) if strategy == "gradual" else 1.0 for i in range(count)]
    return StagePlan(stages, sorted(classifier_names(model)), starts, factors, head_lr_mult)


def _groups(
    named: dict[str, nn.Parameter], names: list[str], lr: float, weight_decay: float, bias_lr_scale: float
) -> list[dict]:
    """A stage's weights and its 1-D parameters (no decay, `optim.bias_lr_scale` × its rate), as
    `optim.param_groups` splits a whole model."""
    groups = [g for g in split_decay((named[n] for n in names), weight_decay, bias_lr_scale) if g["params"]]
    for group in groups:
        group["lr"] = group["peak_lr"] = lr * group["lr_scale"]
    return groups


class FinetuneSchedule(Callback):
    """Installs the stage-wise optimiser at the start of fitting and (un)freezes stages per epoch."""

    def __init__(self, model: nn.Module, plan: StagePlan):
        self.model, self.plan = model, plan
        self.unfrozen_log: list[tuple[int, list[str]]] = []

    def freeze_never_trained(self) -> None:
        """Freeze the stages that never train, once, before DDP wraps the model: DDP registers only
        the parameters that require grad then, so it neither waits for their gradients nor
        all-reduces them. The stages a gradual run unfreezes later must stay trainable until then,
        or DDP would never average their gradients (`distributed.wrap`, `plan.unfreezes_later`)."""
        never = self.plan.never_trained()
        for name, param in self.model.named_parameters():
            if name in never:
                param.requires_grad_(False)

    def on_fit_start(self, trainer: Trainer) -> None:
        from yingshe.train.optim import OPTIMIZERS

        cfg = trainer.cfg.optim
        named = dict(self.model.named_parameters())
        head_lr = cfg.lr * self.plan.head_lr_mult
        groups = _groups(named, self.plan.head, head_lr, cfg.weight_decay, cfg.bias_lr_scale)
        for (_, names), start, factor in zip(
            self.plan.stages, self.plan.starts, self.plan.lr_factors, strict=True
        ):
            if start is not None:
                groups += _groups(named, names, cfg.lr * factor, cfg.weight_decay, cfg.bias_lr_scale)
        peaks = [g["peak_lr"] for g in groups]
        optimizer = OPTIMIZERS.get(cfg.name)(groups, cfg)
        if trainer.resumed_optimizer is not None:  # a resumed run: the same plan, the same groups
            try:
                optimizer.load_state_dict(trainer.resumed_optimizer)
            except ValueError as err:  # the fine-tuning config changed since: start them afresh
                note = f"the optimiser's moments restarted: the saved ones do not fit ({err})"
                log.warning(note)
                trainer.resume_notes.append(note)
            trainer.resumed_optimizer = None
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["peak_lr"] = peak
        trainer.optimizer = optimizer
        self.apply(1)

    def on_epoch_start(self, trainer: Trainer, epoch: int, steps: int) -> None:
        self.apply(epoch)

    def apply(self, epoch: int) -> None:
        """Set requires_grad for `epoch` (1-based) and put frozen BatchNorm layers in eval mode."""
        frozen = self.plan.frozen_at(epoch)
        newly = []
        for name, param in self.model.named_parameters():
            trains = name not in frozen and not getattr(param, "_yingshe_fixed", False)
            if trains and not param.requires_grad:
                newly.append(name)
            param.requires_grad_(trains)
        if newly:
            stages = [s for s, names in self.plan.stages if set(names) & set(newly)]
            self.unfrozen_log.append((epoch, stages))
        for name, module in self.model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and self.model.training:
                owned = {f"{name}.weight", f"{name}.bias"}
                if owned & frozen:
                    module.eval()


def mark_fixed_parameters(model: nn.Module) -> None:
    """Parameters a model keeps frozen by design (airbench's whitening stem, its BN scales) stay so."""
    for param in model.parameters():
        if not param.requires_grad:
            param._yingshe_fixed = True  # type: ignore[attr-defined]


def snapshot(model: nn.Module, names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Copies of the state dict entries (all, or those whose key is in `names`)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if names is None or k in names}

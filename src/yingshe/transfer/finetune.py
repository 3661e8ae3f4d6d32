"""Fine-tuning: resolve a source (a yingshe run, `timm:<name>`, `torchvision:<name>`), shape the
run after it (its normalisation, input size and channels), load its body weights, replace the head,
and train by a strategy (see freeze.py). The result is an ordinary run folder, plus
`finetune.json` recording the source, the weights file and its SHA-256, and the stage schedule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yingshe.config import RunConfig
from yingshe.errors import YingsheError
from yingshe.runs import atomic_write_json, file_sha256, load_checkpoint
from yingshe.transfer.freeze import FinetuneSchedule, mark_fixed_parameters, plan_stages
from yingshe.transfer.weights import (
    LoadReport,
    load_body_weights,
    read_weights,
    timm_weights,
    torchvision_weights,
)

log = logging.getLogger(__name__)

FINETUNE_JSON = "finetune.json"


@dataclass
class Source:
    """A pretrained starting point: which model, how its inputs looked, and its weights."""

    spec: str
    model_name: str
    kwargs: dict[str, Any]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    state: dict[str, torch.Tensor] | None
    weights_path: Path | None
    categories: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str | None:
        return file_sha256(self.weights_path) if self.weights_path else None


def resolve_source(spec: str, weights: str | None = None) -> Source:
    """The source `spec` names; `weights` (a file) replaces the weights it would bring."""
    zoo, sep, name = spec.partition(":")
    if sep and zoo in ("timm", "torchvision"):
        if weights is None:
            found = torchvision_weights(name) if zoo == "torchvision" else timm_weights(name)
        else:
            found = _zoo_preprocessing(zoo, name)
        path = Path(weights) if weights else found.path
        state = read_weights(path) if path is not None else found.state
        return Source(
            spec, spec, {}, 3, found.image_size, found.mean, found.std, state, path, found.categories
        )
    path = Path(spec)
    if not path.exists():
        raise YingsheError(
            f"fine-tuning source {spec!r} is neither a run folder, a checkpoint nor timm:/torchvision:<name>",
            "give a yingshe run folder, its best.pt, timm:<name> or torchvision:<name>",
        )
    checkpoint = load_checkpoint(path)
    meta = checkpoint.meta
    file = Path(weights) if weights else (path if path.is_file() else _checkpoint_file(path))
    state = read_weights(file) if weights else checkpoint.state_dict
    return Source(
        spec,
        meta.model.name,
        dict(meta.model.kwargs),
        int(meta.channels),
        int(meta.image_size),
        tuple(meta.mean),
        tuple(meta.std),
        state,
        file,
        list(meta.classes),
    )


def _checkpoint_file(run: Path) -> Path:
    from yingshe.runs import checkpoint_in

    return checkpoint_in(run)


def _zoo_preprocessing(zoo: str, name: str):
    """The source's normalisation and input size, without looking for its weights."""
    from yingshe.transfer.weights import ZooWeights

    if zoo == "torchvision":
        from torchvision import models

        try:
            transform = models.get_model_weights(name).DEFAULT.transforms()
            return ZooWeights(
                None, None, tuple(transform.mean), tuple(transform.std), int(transform.crop_size[0]), []
            )
        except (ValueError, KeyError):
            return ZooWeights(None, None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, [])
    import timm

    cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    return ZooWeights(None, None, tuple(cfg["mean"]), tuple(cfg["std"]), int(cfg["input_size"][-1]), [])


class FinetunePlan:
    """What `api.train` does differently for a fine-tuned run: `shape_config` before the data is
    built, `prepare` once the model exists (before the DDP wrap), and `record` (finetune.json, on
    rank 0 at the run's first start)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.source = resolve_source(cfg.finetune.source, cfg.finetune.weights)
        self.schedule: FinetuneSchedule | None = None
        self.report: LoadReport | None = None

    def shape_config(self, user_size: int | None) -> None:
        """The run becomes the source's model at the source's input size (unless the user set
        one) and channels: grey data is repeated to RGB for an RGB source, colour made grey for a
        grey one, by the data pipeline."""
        src, cfg = self.source, self.cfg
        cfg.model.name, cfg.model.kwargs, cfg.model.pretrained = src.model_name, dict(src.kwargs), False
        cfg.data.channels = src.channels
        cfg.data.image_size = user_size or src.image_size

    @property
    def stats(self) -> tuple[list[float], list[float]]:
        return list(self.source.mean), list(self.source.std)

    def prepare(self, model: nn.Module, resumed: bool) -> FinetuneSchedule:
        """Load the body weights (the head is the new task's), plan the stages, and freeze the
        stages that never train. Called before the model is wrapped for DDP (train/distributed.py
        `wrap`): DDP then leaves the never-trained stages out of its gradient all-reduce."""
        ft = self.cfg.finetune
        if not resumed and self.source.state is not None:
            self.report = load_body_weights(model, self.source.state, self.source.spec)
            model.weights_loaded = True  # a data-dependent init must not overwrite them
        mark_fixed_parameters(model)
        plan = plan_stages(model, ft.strategy, ft.freeze_until, ft.head_lr_mult, ft.lr_decay, ft.period)
        self.schedule = FinetuneSchedule(model, plan)
        self.schedule.freeze_never_trained()
        return self.schedule

    def record(self, run_root: Path) -> None:
        """finetune.json in the run folder: the source, its weights file and SHA-256, the stages."""
        assert self.schedule is not None, "prepare() plans the stages first"
        ft, plan = self.cfg.finetune, self.schedule.plan
        record = {
            "source": self.source.spec,
            "model": self.source.model_name,
            "weights": str(self.source.weights_path)
            if self.source.weights_path
            else "downloaded by the library",
            "weights_sha256": self.source.sha256,
            "source_classes": len(self.source.categories) or None,
            "strategy": ft.strategy,
            "freeze_until": ft.freeze_until,
            "head_lr_mult": ft.head_lr_mult,
            "image_size": self.cfg.data.image_size,
            "channels": self.source.channels,
            "mean": list(self.source.mean),
            "std": list(self.source.std),
            "stages": [name for name, _ in plan.stages],
            "unfreeze_order": plan.unfreeze_order(),
            "load": self.report.to_dict() if self.report else None,
        }
        atomic_write_json(run_root / FINETUNE_JSON, record)
        log.info("fine-tuning %s from %s (%s)", self.source.model_name, record["weights"], ft.strategy)


def finetune(
    source: str,
    data: str | None = None,
    strategy: str = "full",
    *,
    config: RunConfig | None = None,
    weights: str | None = None,
    freeze_until: str | None = None,
    head_lr_mult: float | None = None,
    callbacks: list | None = None,
):
    """Fine-tune `source` on `data` (a dataset spec); returns the `TrainResult` of an ordinary run."""
    from yingshe.api import train

    cfg = config or RunConfig()
    if data is not None:
        cfg.data.spec = data
    cfg.finetune.source, cfg.finetune.strategy = source, strategy
    if weights is not None:
        cfg.finetune.weights = weights
    if freeze_until is not None:
        cfg.finetune.freeze_until = freeze_until
    if head_lr_mult is not None:
        cfg.finetune.head_lr_mult = head_lr_mult
    return train(cfg, callbacks=callbacks)

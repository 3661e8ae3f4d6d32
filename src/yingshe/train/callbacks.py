"""Hooks into the loop for work that cuts across it: early stopping, TensorBoard, progress.

The library never prints: a CLI (or a notebook) installs a progress callback of its choice.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from yingshe.evaluate.metrics import monitor_metric

if TYPE_CHECKING:
    from yingshe.train.trainer import Trainer

log = logging.getLogger(__name__)


class Callback:
    """Base class: override the hooks you need. `trainer.state` holds the loop's progress."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int, steps: int) -> None: ...
    def on_step_end(self, trainer: Trainer) -> None: ...
    def on_train_progress(self, trainer: Trainer, steps_done: int, stats: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...


def improved(value: float, best: float | None, monitor: str) -> bool:
    """Whether `value` of `train.monitor` beats `best`, in the direction the metric table gives
    (`val_loss` and `val_ece` downward, accuracy upward); NaN never improves."""
    spec = monitor_metric(monitor)  # an unknown monitor is an error naming the choices
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return spec.better(value, best)


class EarlyStopping(Callback):
    """Stop once `patience` epochs have passed since the best epoch of `train.monitor`.

    Counted from the loop's saved state rather than kept here, so a resumed run stops exactly
    where an uninterrupted one would.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if not trainer.validated and trainer.cfg.train.monitor.startswith("val_"):
            return  # an epoch train.val_every skipped says nothing about the monitor
        best_epoch = trainer.state.best_epoch or 0
        if row["epoch"] - best_epoch >= self.patience:
            log.info("early stop after epoch %d: best was epoch %d", row["epoch"], best_epoch)
            trainer.state.should_stop = True
            trainer.state.stop_reason = (
                f"early stop: {trainer.cfg.train.monitor} did not improve for {self.patience} epochs"
            )


class TensorBoardLogger(Callback):
    """Per-epoch scalars to <run>/events, when the tensorboard package is installed."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: pip install 'yingshe[tensorboard]'")
            return
        self.writer = SummaryWriter(self.log_dir)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():  # an epoch train.val_every skipped has NaN val figures
            if key != "epoch" and isinstance(value, (int, float)) and not math.isnan(value):
                self.writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()

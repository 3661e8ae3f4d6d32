"""The progress the library shows by default: a tqdm bar per epoch and one logged line per epoch.

`tqdm.auto` picks the notebook widget in Jupyter and a text bar in a terminal, so
`yingshe.train(cfg)` shows the same progress in both; `progress=False` leaves it out. The epoch
summary goes through `logging` (logger `yingshe.train.progress`), which the CLI prints as plain
lines and a notebook shows once logging is configured.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from yingshe.train.callbacks import Callback

if TYPE_CHECKING:
    from yingshe.train.trainer import Trainer

log = logging.getLogger(__name__)


def epoch_label(epoch: int, epochs: int | None, width: int = 0) -> str:
    """`epoch 3/8`, or `epoch 3` while the count is not known yet (a time budget before its plan)."""
    return f"epoch {epoch:>{width}}" + ("" if epochs is None else f"/{epochs}")


def epoch_line(row: dict[str, Any], epochs: int | None, best: bool, validated: bool = True) -> str:
    """One epoch as a line: losses, accuracies, throughput, time, `*` on the best epoch."""
    val = "val skipped"  # train.val_every skipped this epoch
    if validated:
        val = f"val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%"
    return (
        f"{epoch_label(row['epoch'], epochs, 3)}  "
        f"train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%  {val}  "
        f"{row['train_images_per_second']:.0f} img/s  {row['epoch_seconds']:.1f} s" + (" *" if best else "")
    )


class ProgressBar(Callback):
    """A bar per epoch (loss, accuracy, images/s, ETA) and a logged summary line per epoch."""

    def __init__(self, file: Any = None) -> None:
        self.bar = None
        self.file = file

    def on_epoch_start(self, trainer: Trainer, epoch: int, steps: int) -> None:
        from tqdm.auto import tqdm  # the notebook widget in Jupyter, a text bar elsewhere

        self.bar = tqdm(
            total=steps,
            desc=epoch_label(epoch, trainer.planned_epochs),
            unit="step",
            leave=False,
            file=self.file or sys.stderr,
            dynamic_ncols=True,
        )

    def on_train_progress(self, trainer: Trainer, steps_done: int, stats: dict[str, float]) -> None:
        if self.bar is None:
            return
        self.bar.update(steps_done - self.bar.n)
        self.bar.set_postfix(
            loss=f"{stats['loss']:.3f}",
            acc=f"{100 * stats['accuracy']:.1f}%",
            img_s=f"{stats['images_per_second']:.0f}",
        )

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        best = trainer.state.best_epoch == row["epoch"]
        log.info("%s", epoch_line(row, trainer.planned_epochs, best, trainer.validated))


def crop_text(cfg: Any, data: Any) -> str:
    """`, random-resized-crop; evaluated on the centre of 256 px` where the run crops photos."""
    parts = ["random-resized-crop"] if getattr(cfg.augment, "random_resized_crop", False) else []
    side = getattr(data, "resize", None)
    if side:
        parts.append(f"evaluated on the centre of {side} px")
    return "; ".join([", " + parts[0], *parts[1:]]) if parts else ""


def log_header(cfg: Any, data: Any, model: Any, device: Any, run_dir: Any) -> None:
    """What a run is about to do, logged before the first batch: data and where it came from,
    classes and counts, input shape, model size, device, recipe and the run folder."""
    classes = ", ".join(data.classes[:8]) + (", …" if len(data.classes) > 8 else "")
    val = len(data.val) if data.val is not None else 0
    params = sum(p.numel() for p in model.parameters())
    for line in (
        f"data    {cfg.data.spec}: {data.description}",
        f"classes {len(data.classes)} ({classes})",
        f"images  train {len(data.train)} · val {val} · test {len(data.test)}",
        f"input   {data.image_size} px, {data.channels} channel(s){crop_text(cfg, data)}",
        f"model   {cfg.model.name}, {params:,} parameters",
        f"device  {device}",
        f"recipe  {cfg.train.recipe or 'none (defaults, config and flags)'}",
        f"run     {run_dir}",
    ):
        log.info("%s", line)

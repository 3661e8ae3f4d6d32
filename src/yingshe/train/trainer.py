"""The training loop: a plain epoch/step loop with every step visible; callbacks do the rest.

The loop owns the engine side only: device, precision, the optimiser step, the schedule and the
run folder's per-epoch files (metrics.csv, last.pt, best.pt). What is trained (the model), and
what data it sees, come in from outside.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from yingshe.config import RunConfig
from yingshe.data.loader import DeviceBatches
from yingshe.errors import YingsheError
from yingshe.evaluate import multilabel
from yingshe.evaluate.metrics import (
    EPOCH_FIGURES,
    Predictions,
    monitor_metric,
    predict_batches,
    summary_metrics,
)
from yingshe.evaluate.multilabel import batch_correct
from yingshe.models.tta import flip_tta_applies
from yingshe.runs import RunDir, save_checkpoint, write_metrics_csv
from yingshe.schema import Checkpoint, CheckpointMeta
from yingshe.train import distributed
from yingshe.train.balance import build_loss
from yingshe.train.budget import UNPLANNED_EPOCHS, plan_complete
from yingshe.train.callbacks import Callback, improved
from yingshe.train.checkpointing import (
    EpochProgress,
    capture_rng,
    check_every,
    checkpoint_due,
    restore_rng,
)
from yingshe.train.ema import WeightEMA
from yingshe.train.optim import SchedulePlan, build_optimizer, build_schedule, set_lr
from yingshe.train.progressive import resize_batch, training_side

log = logging.getLogger(__name__)

PROGRESS_EVERY = 10  # steps between host syncs for the progress display


@dataclass
class FitState:
    """Where the loop is; saved in every checkpoint so --resume continues exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    best: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    should_stop: bool = False
    stop_reason: str = ""
    schedule: dict[str, Any] | None = None  # SchedulePlan.to_dict(): where the LR schedule stands
    progress: dict[str, Any] | None = None  # EpochProgress.to_dict() of a mid-epoch checkpoint
    budget: dict[str, Any] | None = None  # TimeBudget.record_spend(): its spend and plan here
    # EpochProgress.to_dict() of the last epoch where the run's end cut it short (train.epochs=2.5)
    partial: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "should_stop": self.should_stop,  # an early stop survives a kill before the report
            "stop_reason": self.stop_reason,
            "schedule": self.schedule,
            "progress": self.progress,
            "budget": self.budget,
            "partial": self.partial,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitState:
        return cls(
            d["epoch"],
            d["step"],
            d["best"],
            d["best_epoch"],
            list(d["history"]),
            bool(d.get("should_stop", False)),
            str(d.get("stop_reason", "")),
            schedule=d.get("schedule"),
            progress=d.get("progress"),
            budget=d.get("budget"),
            partial=d.get("partial"),
        )


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it (no loss scaling needed); off on the CPU, where it is slower."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting in ("auto", "bf16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    raise ValueError(f"train.amp must be auto, bf16, fp16 or off, not {setting!r}")


def epoch_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimiser steps in `epochs` epochs (a fraction rounds to the nearest step, at least one)."""
    return max(1, round(steps_per_epoch * float(epochs)))


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under torch.compile and DDP wrappers: what checkpoints and the EMA hold."""
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    return getattr(model, "module", model)  # unwrap DDP


@torch.no_grad()
def init_from_data(model: nn.Module, batches, limit: int = 5000) -> None:
    """Data-dependent initialisation for models that have one (the airbench net's whitening
    stem): up to `limit` augmented, normalised training images (N, C, H, W) are passed to
    `model.init_from_data`, which decides what to do with them (an airbench net built with
    `whiten=False` does nothing). A resumed run overwrites the result with its checkpoint."""
    if not hasattr(model, "init_from_data") or getattr(model, "weights_loaded", False):
        return  # pretrained weights (fine-tuning) are kept
    seen, count = [], 0
    for inputs, _, _ in batches:
        seen.append(inputs.float())
        count += len(inputs)
        if count >= limit:
            break
    if seen:
        model.init_from_data(torch.cat(seen)[:limit])


def check_monitor_task(monitor: str, is_multilabel: bool) -> None:
    """`val_map` exists for multi-label runs only, `val_ece` for single-label runs only."""
    figures = multilabel.EPOCH_FIGURES if is_multilabel else EPOCH_FIGURES
    if monitor.startswith("val_") and monitor[4:] not in figures:
        kind = "multi-label" if is_multilabel else "single-label"
        raise YingsheError(
            f"train.monitor={monitor} is not measured on {kind} data",
            f"use one of {', '.join('val_' + f for f in figures)}, train_loss, train_accuracy or epoch",
        )


class Trainer:
    """Fits `model` on `train` batches, selecting the best epoch on `val` batches."""

    def __init__(
        self,
        model: nn.Module,
        cfg: RunConfig,
        train: DeviceBatches,
        val: DeviceBatches,
        device: torch.device,
        run: RunDir,
        checkpoint_meta: CheckpointMeta,
        callbacks: list[Callback] | None = None,
    ) -> None:
        self.model, self.cfg, self.train, self.val = model, cfg, train, val
        self.device, self.run, self.meta = device, run, checkpoint_meta
        self.callbacks = callbacks or []
        monitor_metric(cfg.train.monitor)  # a typo in train.monitor fails now, not after an epoch
        check_every(cfg.train.checkpoint_every)
        self.state = FitState()
        self.resume_notes: list[str] = []  # from the checkpoint restored, for the report
        # a resumed fine-tune's optimiser state, for the stage-wise optimiser built at fit start
        self.resumed_optimizer: dict | None = None
        self.val_predictions: Predictions | None = None  # the last validated epoch's
        self.val_predictions_epoch: int | None = None  # … and that epoch
        self.validated = False  # whether the epoch just ended was validated (`train.val_every`)
        self.optimizer = build_optimizer(model, cfg.optim)
        # under torchrun the ranks' shares may differ by a batch: all stop at the shortest
        self.steps_per_epoch = distributed.min_int(max(1, len(train)))
        self.total_steps = epoch_steps(cfg.train.epochs, self.steps_per_epoch)
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.plan = SchedulePlan(self.total_steps)
        self.schedule = build_schedule(cfg.optim, self.total_steps, self.steps_per_epoch)
        self.max_epochs = math.ceil(cfg.train.epochs)  # a time budget (train/budget.py) re-plans both
        # the run ends at its last step, which may fall inside an epoch: a fractional train.epochs
        # (airbench94 trains 9.9) or a resumed run extended from one (`restore`)
        self.step_limit: int | None = self.total_steps
        # progressive resizing: the full side, and the share of a full step's pixels the last step had
        self.full_side: int | None = None
        self.step_area = 1.0
        self.amp_dtype = autocast_dtype(cfg.train.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.num_classes = checkpoint_meta.model.num_classes
        self.tta_flip = flip_tta_applies(cfg.train.tta_flip, checkpoint_meta.flip_invariant)
        self.tta_translate = cfg.train.tta_translate  # a shift keeps the class, even for digits
        self.multilabel = checkpoint_meta.task == "multilabel"
        self.epoch_figures = multilabel.EPOCH_FIGURES if self.multilabel else EPOCH_FIGURES
        check_monitor_task(cfg.train.monitor, self.multilabel)
        self.loss_fn = build_loss(
            cfg.train.balance,
            train.split.labels,
            self.num_classes,
            cfg.optim.label_smoothing,
            getattr(cfg.train, "multilabel_loss", "bce"),
        )
        init_from_data(unwrap(model), train)  # before the EMA copies the weights
        distributed.broadcast_state(unwrap(model))  # each rank initialised from its own shard
        self.ema = WeightEMA(unwrap(model), cfg.train.ema) if cfg.train.ema else None

    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and saved: the EMA when it is on."""
        if self.ema is not None:
            return self.ema.module
        # DDP's forward syncs buffers: evaluate the plain model, each rank on its own share
        return unwrap(self.model) if distributed.active() else self.model

    def predict(self, batches: DeviceBatches) -> Predictions:
        """Predictions of the evaluated weights on `batches`; under torchrun each rank predicts its
        share of the split and every rank gets all of them, so every rank computes the same figures."""
        pred = predict_batches(self.eval_model(), batches, self.amp_dtype, self.tta_flip, self.tta_translate)
        if not distributed.active():
            return pred
        parts = [p for p in distributed.gather_objects((pred.logits, pred.labels)) if len(p[1])]
        if not parts:
            return pred
        return Predictions(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    # --- the loop -------------------------------------------------------------------------------

    def fit(self) -> FitState:
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.state.epoch < self.max_epochs and not self.done():
            epoch = self.state.epoch + 1
            started = time.perf_counter()
            train_stats = self.train_epoch(epoch)
            self.validated = self.validates(epoch)
            if self.validated:  # kept for callbacks that need a figure the row lacks (tuning on F1)
                self.val_predictions, self.val_predictions_epoch = self.predict(self.val), epoch
                val_stats = summary_metrics(self.val_predictions, self.num_classes)
            else:
                val_stats = dict.fromkeys(self.epoch_figures, math.nan)
            self.state.epoch = epoch
            row = {
                "epoch": epoch,
                "step": self.state.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                **{f"train_{k}": v for k, v in train_stats.items()},
                **{f"val_{k}": v for k, v in val_stats.items()},
                "epoch_seconds": round(time.perf_counter() - started, 3),
            }
            self.end_epoch(row)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self.state

    def validates(self, epoch: int) -> bool:
        """Whether epoch `epoch`, just trained, is validated: every `train.val_every` epochs, and
        always the run's last as far as the loop knows it (its epochs, `max_steps`, a time budget's
        plan, or a stop asked for during the epoch), so best.pt and the report's figures come from
        the final weights. A callback that stops the run at an epoch's end (early stopping on a
        `train_*` monitor) leaves that epoch unvalidated, its row's val figures NaN.
        Skipping the others is airbench's habit: on a fixed schedule the mid-run figures decide
        nothing, and a validation pass (with TTA) costs a tenth of a short epoch. A partial epoch
        continued by an extended run is validated too: its row replaces one that was (`record_row`)."""
        every = self.cfg.train.val_every
        if every == 1 or epoch >= self.max_epochs or self.done() or self.reopened(epoch):
            return True
        return every > 0 and epoch % every == 0

    @property
    def planned_epochs(self) -> int | None:
        """The epochs the run will train, as far as known: `train.epochs`, or a time budget's plan
        (None before the budget has timed its first steps)."""
        if self.max_epochs >= UNPLANNED_EPOCHS:
            return None
        return min(self.max_epochs, math.ceil(self.total_steps / self.steps_per_epoch))  # train.max_steps

    def done(self) -> bool:
        max_steps = self.cfg.train.max_steps
        if self.step_limit is not None and self.state.step >= self.step_limit:
            return True
        return self.state.should_stop or (max_steps is not None and self.state.step >= max_steps)

    def plan_steps(self, total: int) -> None:
        """End the run after `total` steps in all, on a complete schedule: the part of the plan not
        yet run is stretched (or shrunk) onto the steps left (`SchedulePlan.extended`)."""
        self.plan = self.plan.extended(self.state.step, total)
        self.step_limit = self.total_steps = total
        self.max_epochs = max(self.state.epoch + 1, math.ceil(total / self.steps_per_epoch))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        progress = self.epoch_progress(epoch)
        self.train.set_epoch(epoch, skip=progress.batches)  # a resumed epoch skips what it had
        set_model_epoch = getattr(unwrap(self.model), "set_epoch", None)
        if callable(set_model_epoch):  # per-epoch freezing, e.g. the airbench stem's bias
            set_model_epoch(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch, self.steps_per_epoch)
        started, resumed_seen = time.perf_counter(), progress.seen  # a resumed epoch's speed: from here
        for steps, (inputs, targets, labels) in enumerate(self.train, start=progress.batches + 1):
            if self.done() or steps > self.steps_per_epoch:
                break
            distributed.kill_hook(self.state.step + 1)
            set_lr(self.optimizer, self.schedule(self.plan.position(self.state.step)))
            loss, logits = self.train_step(self.sized_for_step(inputs), targets)
            if self.ema is not None:
                self.ema.update()
            progress.loss_sum += loss * len(labels)
            if self.multilabel:
                progress.correct += batch_correct(logits, labels)
            else:
                progress.correct += (logits.argmax(1) == labels).sum()
            progress.seen += len(labels)
            progress.batches = getattr(self.train, "position", steps)
            self.state.step += 1
            distributed.log_step_loss(self.state.step, loss)
            for cb in self.callbacks:
                cb.on_step_end(self)
            if steps % PROGRESS_EVERY == 0 or steps == self.steps_per_epoch:
                self.report_progress(steps, progress, progress.seen - resumed_seen, started)
            # the run's last step inside an epoch leaves its checkpoint to the epoch's end, which
            # follows at once: a kill between the two would resume a run already done, its last
            # epoch never closed (no row, no validation, best.pt stale)
            due = checkpoint_due(
                self.state.step, self.cfg.train.checkpoint_every, progress.batches, self.steps_per_epoch
            )
            if due and not self.done() and distributed.is_main():  # rank 0's position stands for all
                self.save_progress(progress)
            # at the run's end the next batch stays undrawn: its augmentation's random draws are
            # the generators' next ones, which an extension of the run makes
            if self.done():
                break
        # the run ended inside the epoch: its end-of-epoch last.pt keeps where, for an extension
        self.state.partial = progress.to_dict() if progress.batches < self.steps_per_epoch else None
        return self.train_figures(progress, progress.seen - resumed_seen, time.perf_counter() - started)

    def train_figures(self, progress: EpochProgress, fresh: int, elapsed: float) -> dict[str, float]:
        """The epoch's train loss and accuracy over every rank's images, and its speed over the
        `fresh` images trained in `elapsed` seconds (a resumed epoch's earlier ones took none here)."""
        loss_sum = torch.as_tensor(progress.loss_sum, device=self.device).clone()
        correct = torch.as_tensor(progress.correct, device=self.device).clone()
        counts = torch.tensor([float(progress.seen), float(fresh)], device=self.device)
        distributed.sum_tensors(loss_sum, correct, counts)
        seen, fresh_all = int(counts[0]), int(counts[1])
        if seen == 0:
            return {"loss": math.nan, "accuracy": math.nan, "images_per_second": 0.0}
        return {
            "loss": float(loss_sum) / seen,
            "accuracy": float(correct) / seen,
            "images_per_second": round(fresh_all / max(elapsed, 1e-9), 1),
        }

    def sized_for_step(self, inputs: torch.Tensor) -> torch.Tensor:
        """The batch at the side progressive resizing asks for at this step (train/progressive.py)."""
        aug = self.cfg.augment
        if aug.progressive_min is None:
            return inputs
        self.full_side = inputs.shape[-2]
        side = training_side(self.full_side, aug.progressive_min, aug.progressive_until, self.run_fraction())
        self.step_area = (side / self.full_side) ** 2
        return resize_batch(inputs, side)

    def run_fraction(self) -> float:
        """How far through its schedule the run is, at the step about to be taken."""
        return self.plan.position(self.state.step) / max(self.plan.total, 1)

    def remaining_step_area(self) -> float:
        """The mean cost of the steps not yet taken, relative to a full-size step (a step's cost
        taken as its pixels): 1 without progressive resizing. The steps left cover the schedule
        from here to its end evenly, however many a time budget plans, so one mean serves every
        total it weighs."""
        aug = self.cfg.augment
        if aug.progressive_min is None or self.full_side is None:
            return 1.0
        ahead = np.linspace(self.run_fraction(), 1.0, 1000, endpoint=False)
        sides = [training_side(self.full_side, aug.progressive_min, aug.progressive_until, f) for f in ahead]
        return float(np.mean((np.asarray(sides) / self.full_side) ** 2))

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step; returns the detached loss and logits (no host sync here)."""
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None
        ):
            logits = self.model(inputs)
            loss = self.loss_fn(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()

    def report_progress(self, steps: int, progress: EpochProgress, fresh: int, started: float) -> None:
        """The epoch's running figures so far, and its speed over the `fresh` images this process
        trained since `started` (a resumed epoch's earlier images took no time here)."""
        if not self.callbacks:
            return
        seen = max(progress.seen, 1)
        stats = {
            "loss": float(progress.loss_sum) / seen,
            "accuracy": float(progress.correct) / seen,
            "images_per_second": fresh / max(time.perf_counter() - started, 1e-9),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        for cb in self.callbacks:
            cb.on_train_progress(self, steps, stats)

    # --- checkpoints within an epoch ------------------------------------------------------------

    def epoch_progress(self, epoch: int) -> EpochProgress:
        """The resumed checkpoint's position in `epoch`, else the epoch's start."""
        saved, self.state.progress = self.state.progress, None
        if saved is not None and saved["epoch"] == epoch:
            return EpochProgress.from_dict(saved, self.device)
        return EpochProgress.start(epoch, self.device)

    def save_progress(self, progress: EpochProgress) -> None:
        """A mid-epoch last.pt (`train.checkpoint_every`): the loop's state plus the epoch's position."""
        self.state.progress = progress.to_dict()
        row = self.state.history[-1] if self.state.history else {}
        save_checkpoint(self.run.last, self.checkpoint(row), keep_previous=True)
        self.state.progress = None

    # --- per-epoch bookkeeping ------------------------------------------------------------------

    def end_epoch(self, row: dict[str, Any]) -> None:
        self.record_row(row)
        monitor = self.cfg.train.monitor
        is_best = improved(row[monitor], self.state.best, monitor)
        if is_best:
            self.state.best, self.state.best_epoch = row[monitor], row["epoch"]
        for cb in self.callbacks:  # early stopping may set should_stop: save that state too
            cb.on_epoch_end(self, row)
        self.state.should_stop = distributed.any_true(self.state.should_stop)  # all ranks stop together
        if distributed.is_main():  # only rank 0 writes the run folder; the others wait for it
            write_metrics_csv(self.run.metrics, self.state.history)
            checkpoint = self.checkpoint(row)
            if is_best:  # best.pt: the evaluated (EMA) weights only, no optimiser state
                # written before last.pt: a kill between the two redoes this epoch, and best.pt again
                save_checkpoint(self.run.best, replace(checkpoint, raw_state_dict=None, optimizer=None))
            save_checkpoint(self.run.last, checkpoint, keep_previous=True)
        distributed.barrier()

    def reopened(self, epoch: int) -> bool:
        """Whether `epoch` continues a partial epoch that already has a row (`reopen_partial_epoch`)."""
        return bool(self.state.history) and self.state.history[-1]["epoch"] == epoch

    def record_row(self, row: dict[str, Any]) -> None:
        """Add the epoch's row to the history, or let a continued partial epoch's row replace the
        partial one, so metrics.csv numbers each epoch once. Where the partial epoch was the best,
        its figure is forgotten (best and best_epoch None until the completed epoch is measured),
        so the completed epoch takes best.pt even below an earlier epoch's figure: best.pt had
        overwritten that epoch's weights with the partial one's, so they are not there to keep,
        and the partial weights no longer have a row of their own."""
        if not self.reopened(row["epoch"]):
            self.state.history.append(row)
            return
        self.state.history[-1] = row
        if self.state.best_epoch == row["epoch"]:
            self.state.best, self.state.best_epoch = None, None

    def checkpoint(self, row: dict[str, Any]) -> Checkpoint:
        model = unwrap(self.eval_model())
        raw = None
        if self.ema is not None:  # the trained weights too, so --resume continues exactly
            raw = {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()}
        self.state.schedule = self.plan.to_dict()
        return Checkpoint(
            meta=self.meta,
            state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
            config=self.cfg.to_dict(),
            fit_state=self.state.to_dict(),
            metrics=row,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=capture_rng(),
            raw_state_dict=raw,
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from a last.pt: weights, optimiser moments, scaler, loop position and the
        schedule's plan (stretched where `train.epochs` grew, see `SchedulePlan`)."""
        unwrap(self.model).load_state_dict(checkpoint.raw_state_dict or checkpoint.state_dict)
        if self.ema is not None:
            self.ema.module.load_state_dict(checkpoint.state_dict)
        # a fine-tuned run's stage-wise optimiser (transfer/freeze.FinetuneSchedule) has other
        # groups than this one: it is built at fit start and loads the moments then
        if checkpoint.optimizer and self.cfg.finetune.source:
            self.resumed_optimizer = checkpoint.optimizer
        elif checkpoint.optimizer:
            self.optimizer.load_state_dict(checkpoint.optimizer)
            for group in self.optimizer.param_groups:  # this config's lr, each group's own scale
                group["peak_lr"] = self.cfg.optim.lr * group.get("lr_scale", 1.0)
        if checkpoint.scaler:
            self.scaler.load_state_dict(checkpoint.scaler)
        if checkpoint.rng:  # augmentation draws from the global generators
            restore_rng(checkpoint.rng)
        self.state = FitState.from_dict(checkpoint.fit_state)
        self.resume_notes = list(checkpoint.notes)
        self.plan = self.saved_plan(checkpoint).extended(self.state.step, self.total_steps)
        self.schedule = build_schedule(self.cfg.optim, self.plan.total, self.steps_per_epoch)
        self.reopen_partial_epoch("partial" in checkpoint.fit_state)
        if self.max_epochs < UNPLANNED_EPOCHS:  # a time budget plans its own length
            # enough epochs for the steps left, counted from the start of the epoch the loop
            # opens next (a mid-epoch or reopened partial one included); step_limit ends the run
            # at total_steps
            left = max(0, self.total_steps - self.epoch_end_step(self.state.epoch))
            self.max_epochs = self.state.epoch + math.ceil(left / self.steps_per_epoch)
        if self.ema is not None:
            self.ema.updates = self.state.step

    def trains_on(self) -> bool:
        """Whether the restored loop will take another step: a time budget does unless its plan
        was complete (`budget.plan_complete`)."""
        if self.state.should_stop:
            return False
        if self.step_limit is None:
            return not plan_complete(self.state.budget, self.state.step)
        return self.state.step < self.step_limit

    def epoch_end_step(self, epoch: int) -> int:
        """The step epoch `epoch` ended at (its history row's), where the next one starts; 0 before
        the first."""
        rows = (row for row in reversed(self.state.history) if row["epoch"] == epoch)
        return int(next(rows, {"step": 0})["step"])

    def reopen_partial_epoch(self, saves_partial: bool) -> None:
        """Where the restored run ended inside its last epoch (a fractional `train.epochs`,
        `max_steps`, a time budget's plan) and this one trains on (`--epochs` grew), continue that
        epoch where it stopped, as a mid-epoch checkpoint does, instead of starting the next: the
        epochs keep their numbers and the rest of the epoch's order is trained. Its row then
        replaces the partial one (`record_row`). A checkpoint from before `FitState.partial` was
        saved gives the epoch's steps only (from the history's step column): its running train
        loss and accuracy start over on the remaining batches."""
        partial, self.state.partial = self.state.partial, None
        history, epoch = self.state.history, self.state.epoch
        at_epoch_end = self.state.progress is None and bool(history) and history[-1]["epoch"] == epoch
        if not at_epoch_end or not self.trains_on():
            return
        if not saves_partial:
            taken = self.state.step - self.epoch_end_step(epoch - 1)
            if taken < self.steps_per_epoch:  # one source batch a step, unless a batch was unreadable
                partial = replace(EpochProgress.start(epoch, torch.device("cpu")), batches=taken).to_dict()
        if partial is None:
            return
        self.state.epoch, self.state.progress = epoch - 1, partial

    def saved_plan(self, checkpoint: Checkpoint) -> SchedulePlan:
        """The plan the checkpoint's run followed; a checkpoint from before plans were saved
        followed its own config's epochs and max_steps unchanged."""
        if self.state.schedule:
            return SchedulePlan.from_dict(self.state.schedule)
        train = checkpoint.train_config
        total = epoch_steps(train.get("epochs", self.cfg.train.epochs), self.steps_per_epoch)
        if train.get("max_steps"):
            total = min(total, int(train["max_steps"]))
        return SchedulePlan(total)

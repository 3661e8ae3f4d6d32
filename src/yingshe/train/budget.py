"""Training to a wall-clock budget (`train.time_budget`, `--time-budget 30m`), not to an epoch count.

airbench's habit: a run is given a time, and the number of steps and the learning-rate schedule
are fitted to it, so the run still ends on a complete schedule (the final, lowest rate) and a full
evaluation inside the budget, instead of being cut off mid-schedule.

How: after a few warm-up steps the step time is measured, and the cost of evaluation is measured
on a few validation batches. The total number of steps is then the largest that fits in

    budget - spent - final evaluation (test + validation) - margin

counting one validation pass (and checkpoint) per epoch. The schedule is re-planned with
`SchedulePlan.extended`, which stretches or shrinks the part not yet run, so the rate stays
continuous. The plan is revised at every epoch start (with the measured epoch overhead, and the
step time of the epoch just ended) and every `REPLAN_EVERY` steps, because on a shared machine
the step time drifts; a run that falls behind ends early, still at the schedule's end.

Under torchrun every rank keeps its own clock, and ranks that stopped at different steps would
leave the others waiting in a gradient all-reduce. So the two decisions a clock makes are taken
together: the warm-up ends on every rank at the step it ends on any, and each revision of the
plan takes the smallest total any rank computed (the slowest rank's). Every other decision
(epoch boundaries, revisions every `REPLAN_EVERY` steps) follows the step count, which the ranks
share.

A resumed run continues on what was left of its budget: every checkpoint saves the seconds spent
so far and the plan (`FitState.budget`), and the resumed clock starts that far in (the time
between the kill and the resume is not counted). A run that had finished its plan has nothing
left to train; resuming it only evaluates and reports again, with the plan it had.

With progressive resizing a step's cost is taken as its pixels (`Trainer.step_area`). Small
steps carry the same fixed costs as full ones (the loader, the optimiser), so a full-size step
timed on them comes out dear: the first plans are cautious, and the windows timed at full size
later re-plan onto the budget.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from yingshe.errors import YingsheError
from yingshe.models.tta import tta_views
from yingshe.train import distributed
from yingshe.train.callbacks import Callback

if TYPE_CHECKING:
    from yingshe.train.trainer import Trainer

UNPLANNED_EPOCHS = 10**9  # `Trainer.max_epochs` while the budget has not yet planned the run

log = logging.getLogger(__name__)

WARMUP_STEPS = 5  # steps timed before the first plan (the first is dropped: allocation, start-up)
WARMUP_SHARE = 0.05  # ... or fewer, once they have taken this share of the budget
EVAL_PROBE_BATCHES = 3  # validation batches timed to estimate the cost of an evaluation
REPLAN_EVERY = 25  # steps between revisions of the plan
MARGIN = 0.05  # share of the budget kept free for what is not measured (report, figures, jitter)

_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value: Any, key: str = "train.time_budget") -> float | None:
    """Seconds from 90, "90", "90s", "30m", "1.5h" or "1h30m"; None stays None."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    elif re.fullmatch(r"(\d+(\.\d+)?[hms])+", text):
        seconds = sum(float(n) * _UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([hms])", text))
    else:
        raise YingsheError(
            f"{key} must be a duration such as 90s, 30m, 1h or a number of seconds; got {value!r}",
            f"write e.g. {key}=30m",
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise YingsheError(f"{key} must be more than 0 seconds; got {value!r}", f"write e.g. {key}=30m")
    return seconds


@dataclass
class BudgetPlan:
    """What the budget decided and measured; goes into report.json as `time_budget`."""

    budget_s: float
    planned_steps: int | None = None
    step_s: float | None = None  # a full-size step's (progressive resizing's smaller ones cost less)
    eval_s_per_image: float | None = None
    eval_startup_s: float = 0.0  # start-up of an evaluation pass (loader workers, first batch)
    epoch_overhead_s: float | None = None
    final_eval_reserve_s: float | None = None
    revisions: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class TimeBudget(Callback):
    """Fits the run's total steps and schedule to `seconds` of wall time counted from `started`
    (a `time.perf_counter()` value: `api.train` passes its own start, so data loading counts)."""

    def __init__(self, seconds: float, started: float, final_images: int, val_images: int) -> None:
        self.plan = BudgetPlan(seconds)
        self.started, self.final_images, self.val_images = started, final_images, val_images
        # (step, time, area) the step clock counts from; a step's area is its share of a full-size
        # step's pixels (`Trainer.step_area`: below 1 while progressive resizing shrinks the batch)
        self.window_start: tuple[int, float, float] | None = None
        self.area_done = 0.0  # the areas of the steps taken so far
        self.last_step_end: float | None = None
        self.last_plan_step = 0
        # warm-up, before the first plan: steps inside epochs are timed across epoch boundaries, so
        # a run of one or two steps an epoch plans as early as any other
        self.warm_steps, self.warm_seconds, self.warm_area = 0, 0.0, 0.0
        self.first_step_end: float | None = None
        self.epoch_started = started
        self.closed_window: tuple[int, float, float] | None = None  # the last epoch's window

    # --- hooks ------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: Trainer) -> None:
        """On a resumed run: start the clock as far in as the checkpoint had spent, follow its
        saved plan until the warm-up has re-measured the step time, and end a run that had
        reached its planned last step where it stands."""
        saved, step = trainer.state.budget, trainer.state.step
        if saved is None:
            return
        self.started -= saved["spent_s"]
        if "plan" in saved:  # what it measured and revised, for the report
            self.plan = BudgetPlan(**{**saved["plan"], "budget_s": self.plan.budget_s})
        planned, self.plan.planned_steps = saved["planned_steps"], None  # None: the warm-up re-plans
        if planned is None:  # stopped during the warm-up: it plans afresh
            return
        trainer.plan_steps(max(planned, step))
        if plan_complete(saved, step):
            self.plan.planned_steps = step

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.record_spend(trainer)  # into the epoch's checkpoint

    def record_spend(self, trainer: Trainer) -> None:
        """The spend and plan so far, into the loop's state: the next checkpoint saves them."""
        plan = dict(vars(self.plan))  # after every step: a shallow copy, written out as checkpoints are
        trainer.state.budget = {"spent_s": self.spent(), "planned_steps": plan["planned_steps"], "plan": plan}

    def on_epoch_start(self, trainer: Trainer, epoch: int, steps: int) -> None:
        # the first step of an epoch carries the loader's start-up: a new window opens after it,
        # and the one the last epoch's steps filled is measured when that step ends
        self.closed_window, self.window_start = self.window_start, None
        self.epoch_started = time.perf_counter()

    def on_step_end(self, trainer: Trainer) -> None:
        now, step = time.perf_counter(), trainer.state.step
        area = trainer.step_area
        boundary = self.window_start is None
        if boundary and self.plan.planned_steps is not None:
            self.measure_closed_window(step - 1)
        self.area_done += area
        if boundary and self.last_step_end is not None and self.plan.step_s is not None:
            gap = max(0.0, now - self.last_step_end - self.plan.step_s * area)  # validation, checkpoint
            if trainer.cfg.train.val_every not in (0, 1) and self.plan.epoch_overhead_s is not None:
                gap = max(gap, self.plan.epoch_overhead_s)  # boundaries with and without validation alternate
            self.plan.epoch_overhead_s = gap
        previous, self.last_step_end = self.last_step_end, now
        if self.plan.planned_steps is None:
            self.warm_up(trainer, now, previous, boundary, area)
        elif boundary:
            self.window_start = (step, now, self.area_done)
            self.replan(trainer, now)
        else:
            counted = step - self.window_start[0]
            if step - self.last_plan_step >= REPLAN_EVERY and counted >= 3:
                self.plan.step_s = self.full_step_s(self.window_start, now, self.area_done)
                self.replan(trainer, now)
        self.record_spend(trainer)  # for a mid-epoch checkpoint

    def measure_closed_window(self, last_step: int) -> None:
        """The step time of the epoch just ended, from its steps after the first, where there were
        at least 3: an epoch shorter than `REPLAN_EVERY` steps is otherwise never re-measured, and
        a plan kept on the first epoch's steps (dearer where a model freezes a layer after it, as
        the airbench net's whitening bias) would leave part of the budget unused."""
        window, self.closed_window = self.closed_window, None
        if window is None or self.last_step_end is None:
            return
        if last_step - window[0] >= 3:
            self.plan.step_s = self.full_step_s(window, self.last_step_end, self.area_done)

    @staticmethod
    def full_step_s(window: tuple[int, float, float], end: float, area_done: float) -> float:
        """A full-size step's seconds, from the steps after `window` opened up to `end`."""
        return (end - window[1]) / max(area_done - window[2], 1e-9)

    def warm_up(
        self, trainer: Trainer, now: float, previous: float | None, boundary: bool, area: float
    ) -> None:
        """Time steps until there are enough (or they have taken their share of the budget, or
        the loop is about to end), then make the first plan. The run's first step (allocation,
        start-up) and each epoch's first (loader start-up, validation before it) are not counted,
        unless no other step comes: then the slowest measure is the safe one."""
        step = trainer.state.step
        if self.first_step_end is None:
            self.first_step_end = now
        elif not boundary:
            self.warm_steps += 1
            self.warm_seconds += now - (previous or now)
            self.warm_area += area
        self.window_start = (step, now, self.area_done)
        slow = now - self.first_step_end >= WARMUP_SHARE * self.plan.budget_s
        ready = self.warm_steps >= WARMUP_STEPS - 1 or slow or step >= trainer.total_steps - 1
        if distributed.any_true(ready):  # under torchrun every rank plans at the same step
            if self.warm_steps:
                self.plan.step_s = self.warm_seconds / self.warm_area
            else:  # one step an epoch: the step with its loader's start-up, the safe side
                self.plan.step_s = (now - self.epoch_started) / area
            self.plan.eval_s_per_image = self.probe_eval(trainer)
            self.window_start = (step, time.perf_counter(), self.area_done)  # the probe is not step time
            self.replan(trainer, time.perf_counter())

    # --- measuring and planning -------------------------------------------------------------------

    @torch.no_grad()
    def probe_eval(self, trainer: Trainer) -> float:
        """Seconds per image of evaluation, from a few validation batches (after one warm-up)."""
        model = trainer.eval_model()
        was_training = model.training
        model.eval()
        seen, started, opened = 0, None, time.perf_counter()
        try:
            for i, (inputs, _, _) in enumerate(trainer.val):
                model(inputs)
                if i == 0:
                    started = time.perf_counter()
                    self.plan.eval_startup_s = started - opened  # paid again by every pass
                    continue
                seen += len(inputs)
                if (
                    i >= EVAL_PROBE_BATCHES
                    or time.perf_counter() - opened >= WARMUP_SHARE * self.plan.budget_s
                ):
                    break
        finally:
            model.train(was_training)
        views = tta_views(trainer.tta_flip, trainer.tta_translate)
        if started is None or seen == 0:  # one batch only: a training image's time (~3 forward passes)
            per_image = self.plan.step_s / max(1, trainer.cfg.train.batch_size) if self.plan.step_s else 0.0
            return per_image * max(1.0, views / 3)  # more where the TTA views cost more than that
        return (time.perf_counter() - started) / seen * views

    def replan(self, trainer: Trainer, now: float) -> None:
        """Choose the total steps that fit what is left, and stretch the schedule onto them."""
        plan, step, per_epoch = self.plan, trainer.state.step, trainer.steps_per_epoch
        eval_rate = plan.eval_s_per_image or 0.0
        # the final evaluation: the test and validation passes, each with its start-up
        plan.final_eval_reserve_s = eval_rate * self.final_images + 2 * plan.eval_startup_s
        if trainer.cfg.train.val_every != 1:  # the last epoch's validation pass, which boundaries
            # of epochs that skip validation do not show in `epoch_overhead_s`
            plan.final_eval_reserve_s += eval_rate * self.val_images + plan.eval_startup_s
        overhead = plan.epoch_overhead_s
        if overhead is None:  # until an epoch boundary has been measured: one validation pass
            overhead = eval_rate * self.val_images + plan.eval_startup_s
        left = plan.budget_s * (1 - MARGIN) - (now - self.started) - plan.final_eval_reserve_s
        # a step left costs a full one's time × the mean area of the steps left (progressive resizing)
        step_s = (plan.step_s or 0.0) * trainer.remaining_step_area()

        def cost(total: int) -> float:
            epochs_left = math.ceil(total / per_epoch) - trainer.state.epoch
            return (total - step) * step_s + epochs_left * overhead

        # at least one more step, unless the plan already ends here: then out of time means stop
        # (re-granting "one more" at every boundary would never end a run of one step an epoch)
        at_end = trainer.step_limit is not None and trainer.step_limit <= step  # a resumed plan's too
        low = step if at_end else step + 1
        high = step + 1 + int(max(0.0, left) / max(step_s, 1e-9))
        if trainer.cfg.train.max_steps:
            high = min(high, max(low, trainer.cfg.train.max_steps))
        while low < high:  # the largest total whose cost fits (cost grows with total)
            mid = (low + high + 1) // 2
            low, high = (mid, high) if cost(mid) <= left else (low, mid - 1)
        total = distributed.min_int(low)  # under torchrun the slowest rank's plan, on every rank
        self.last_plan_step = step
        if total == plan.planned_steps:
            return
        first = plan.planned_steps is None
        plan.planned_steps, plan.revisions = total, plan.revisions + (0 if first else 1)
        plan.history.append({"at_step": step, "total_steps": total, "step_s": round(plan.step_s or 0.0, 5)})
        trainer.plan_steps(total)
        log.info(
            "time budget: %.0f s left, %.3f s a step: %d steps in all (%d epochs)",
            left,
            plan.step_s or 0.0,
            total,
            math.ceil(total / per_epoch),
        )

    def spent(self) -> float:
        """Seconds of the budget spent so far (a resumed run's included)."""
        return time.perf_counter() - self.started

    def summary(self) -> dict[str, Any]:
        """report.json's `time_budget`: the budget, what was spent, and what it was planned on."""
        plan, spent_s = self.plan, self.spent()
        return {
            "budget_seconds": round(plan.budget_s, 2),
            "spent_seconds": round(spent_s, 2),
            "within_budget": spent_s <= plan.budget_s,
            "planned_steps": plan.planned_steps,
            "step_seconds": None if plan.step_s is None else round(plan.step_s, 5),
            "eval_seconds_per_image": None
            if plan.eval_s_per_image is None
            else round(plan.eval_s_per_image, 6),
            "epoch_overhead_seconds": None
            if plan.epoch_overhead_s is None
            else round(plan.epoch_overhead_s, 3),
            "eval_startup_seconds": round(plan.eval_startup_s, 3),
            "final_eval_reserve_seconds": None
            if plan.final_eval_reserve_s is None
            else round(plan.final_eval_reserve_s, 3),
            "revisions": plan.revisions,
        }


def plan_complete(saved: dict[str, Any] | None, step: int) -> bool:
    """Whether a checkpoint's budget (`FitState.budget`) had planned the run to end by `step`."""
    return saved is not None and saved["planned_steps"] is not None and step >= saved["planned_steps"]


def attach_budget(trainer: Trainer, seconds: float, started: float, final_images: int) -> TimeBudget:
    """Add a `TimeBudget` to `trainer`'s callbacks and let the loop run as many epochs as it plans."""
    # each rank validates its share of the split between epochs; rank 0 alone runs the final pass
    val_share = math.ceil(len(trainer.val.split) / distributed.context().world)
    budget = TimeBudget(seconds, started, final_images, val_share)
    trainer.callbacks.append(budget)
    trainer.max_epochs = UNPLANNED_EPOCHS  # the plan made within its first steps decides the length
    trainer.step_limit = None  # nor does a fractional train.epochs
    return budget


def find_budget(trainer: Trainer) -> TimeBudget | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, TimeBudget)), None)

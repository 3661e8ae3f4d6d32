"""`TimeBudget`'s step clock, driven by a scripted clock: what it measures is what the plan uses."""

from types import SimpleNamespace

import torch

from yingshe.config import RunConfig
from yingshe.train import budget as budget_module
from yingshe.train.budget import TimeBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTrainer:
    """What `TimeBudget` reads of a trainer: the step, the epoch, the loop's length and limit, the
    steps' areas and its validation batches (a probe of them costs no scripted time)."""

    def __init__(self, steps_per_epoch: int) -> None:
        self.cfg = RunConfig()
        self.cfg.train.batch_size = 8
        self.state = SimpleNamespace(step=0, epoch=0)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, 10**6
        self.val = [(torch.zeros(8, 3), None, None)] * 4
        self.tta_flip, self.tta_translate = False, False
        self.planned: list[int] = []
        self.step_limit: int | None = None
        self.step_area, self.area_ahead = 1.0, 1.0  # full-size steps unless a test shrinks them

    def eval_model(self) -> torch.nn.Module:
        return torch.nn.Identity()

    def remaining_step_area(self) -> float:
        return self.area_ahead

    def plan_steps(self, total: int) -> None:
        self.planned.append(total)
        self.step_limit = self.total_steps = total


def run_epochs(clock: Clock, trainer: FakeTrainer, budget: TimeBudget, step_times: list[float]) -> None:
    """One more epoch per entry of `step_times`: its steps each take that many seconds, plus 1 s
    between epochs (a validation pass)."""
    for seconds in step_times:
        epoch = trainer.state.epoch + 1
        budget.on_epoch_start(trainer, epoch, trainer.steps_per_epoch)
        for _ in range(trainer.steps_per_epoch):
            clock.now += seconds
            trainer.state.step += 1
            budget.on_step_end(trainer)
        trainer.state.epoch = epoch
        clock.now += 1.0


def test_epochs_shorter_than_a_replan_are_timed_again_at_each_boundary(monkeypatch):
    """10 steps an epoch (fewer than REPLAN_EVERY): the first epoch's steps take 1 s, the later
    ones 0.5 s (a layer frozen after epoch 1). The plan follows the cheaper steps, so it plans
    more of them, where it used to keep the first epoch's step time for the whole run."""
    clock = Clock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    trainer = FakeTrainer(steps_per_epoch=10)
    budget = TimeBudget(600.0, started=0.0, final_images=0, val_images=0)
    run_epochs(clock, trainer, budget, [1.0])
    assert abs(budget.plan.step_s - 1.0) < 1e-9
    first_plan = budget.plan.planned_steps
    run_epochs(clock, trainer, budget, [0.5, 0.5])
    assert abs(budget.plan.step_s - 0.5) < 1e-9  # re-measured on epoch 2's steps after its first
    assert budget.plan.planned_steps > first_plan * 1.5, (first_plan, budget.plan.planned_steps)
    assert abs(budget.plan.epoch_overhead_s - 1.0) < 1e-9  # the boundary's gap, not the steps


def test_an_epoch_of_two_timed_steps_keeps_the_step_time_it_had(monkeypatch):
    """3 steps an epoch: too few after the epoch's first to time (fewer than 3), so the plan
    keeps the step time it had."""
    clock = Clock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    trainer = FakeTrainer(steps_per_epoch=3)
    budget = TimeBudget(600.0, started=0.0, final_images=0, val_images=0)
    run_epochs(clock, trainer, budget, [1.0, 1.0, 1.0])
    measured = budget.plan.step_s
    run_epochs(clock, trainer, budget, [0.2, 0.2])
    assert budget.plan.step_s == measured


def test_steps_shrunk_by_progressive_resizing_are_costed_by_their_pixels(monkeypatch):
    """The first steps train at half the side (a quarter of the pixels) and take 0.25 s, where a
    full-size step takes 1 s. The plan keeps the full-size step time and costs the steps left at
    the mean area still ahead (0.6 here), so it plans what fits at 0.6 s a step, not the 2.4×
    as many that the first steps' 0.25 s would promise."""
    clock = Clock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    trainer = FakeTrainer(steps_per_epoch=100)
    trainer.step_area = 0.25
    trainer.area_ahead = 0.6
    budget = TimeBudget(600.0, started=0.0, final_images=0, val_images=0)
    budget.on_epoch_start(trainer, 1, trainer.steps_per_epoch)
    while budget.plan.planned_steps is None:
        clock.now += 0.25
        trainer.state.step += 1
        budget.on_step_end(trainer)
    assert abs(budget.plan.step_s - 1.0) < 1e-9
    left = 600.0 * (1 - budget_module.MARGIN) - clock.now
    assert budget.plan.planned_steps == trainer.state.step + int(left / 0.6)


def test_a_run_resumed_one_step_before_its_plan_ends_with_no_time_left_stops_there(monkeypatch):
    """Resumed at step 99 of a 100-step plan with 590 of 600 s spent: the step it takes ends the
    warm-up and the plan, which keeps its 100 steps instead of granting one more."""
    clock = Clock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    trainer = FakeTrainer(steps_per_epoch=1000)
    trainer.state.step = 99
    trainer.state.budget = {"spent_s": 590.0, "planned_steps": 100}
    budget = TimeBudget(600.0, started=0.0, final_images=0, val_images=0)
    budget.on_fit_start(trainer)
    assert trainer.step_limit == 100  # the saved plan until the warm-up re-plans
    budget.on_epoch_start(trainer, 1, trainer.steps_per_epoch)
    clock.now += 1.0
    trainer.state.step += 1
    budget.on_step_end(trainer)
    assert budget.plan.planned_steps == 100 and trainer.step_limit == 100

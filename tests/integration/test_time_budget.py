"""`train.time_budget`: steps and schedule fitted to the wall time, finished inside it."""

import json
import math
import time

import pytest

import yingshe
from yingshe.config import RunConfig, apply_overrides
from yingshe.errors import YingsheError
from yingshe.runs import load_checkpoint, read_metrics_csv
from yingshe.train.budget import parse_duration
from yingshe.train.callbacks import Callback


class RecordStepLR(Callback):
    """The learning rate each step ran at, the peak rate, and the epochs planned at each epoch's end."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.peak = 0.0
        self.planned: list[int | None] = []

    def on_epoch_end(self, trainer, row) -> None:
        self.planned.append(trainer.planned_epochs)

    def on_step_end(self, trainer) -> None:
        group = trainer.optimizer.param_groups[0]
        self.lrs.append(group["lr"])
        self.peak = group["peak_lr"]


def budget_config(out, data, budget: str) -> RunConfig:
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            f"data.spec={data}",
            f"train.out={out}",
            "train.epochs=1",  # the budget, not the epoch count, decides the length
            "train.batch_size=32",
            "train.plots=false",
            "model.kwargs={widths: [8, 8, 8, 8]}",
            "optim.schedule=onecycle",
            f"train.time_budget={budget}",
        ],
    )
    return cfg


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1h", 3600.0), ("1h30m", 5400.0)]
)
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5", "0", "10 minutes", "1d"])
def test_a_bad_budget_is_refused_before_any_work(tmp_path, cifar_folder, text):
    with pytest.raises(YingsheError, match="train.time_budget"):
        yingshe.train(budget_config(tmp_path / "run", cifar_folder, text))
    assert not (tmp_path / "run").exists()


def test_a_20_second_budget_finishes_inside_it_on_a_complete_schedule(tmp_path, cifar_folder):
    lrs = RecordStepLR()
    started = time.perf_counter()
    result = yingshe.train(budget_config(tmp_path, cifar_folder, "20s"), callbacks=[lrs], progress=False)
    wall = time.perf_counter() - started
    report = json.loads((tmp_path / "report.json").read_text())
    budget, training = report["time_budget"], report["training"]
    assert budget["budget_seconds"] == 20
    # a shared 2-core machine's step time swings within a run: the plan is revised, with a margin
    assert wall <= 20 * 1.3, f"took {wall:.1f} s on a 20 s budget"
    assert budget["spent_seconds"] <= wall and budget["within_budget"] == (budget["spent_seconds"] <= 20)
    assert training["steps"] == budget["planned_steps"] == len(lrs.lrs)
    assert training["epochs_run"] > 1  # more than train.epochs=1: the budget decided
    assert lrs.planned[-1] == training["epochs_run"]  # what the progress shows as "epoch n/N"
    assert wall >= 20 * 0.5, "the budget was used, not left idle"
    assert lrs.lrs[-1] <= 0.01 * lrs.peak  # the last step ran at the one-cycle's end
    assert max(lrs.lrs) == pytest.approx(lrs.peak, rel=0.05)  # and the peak was reached on the way
    assert "time budget: 20.0 s" in (tmp_path / "report.md").read_text()
    assert result.accuracy > 0


def test_a_run_of_one_step_an_epoch_still_plans_and_ends_inside_its_budget(tmp_path, cifar_folder):
    """Every step is an epoch's first here, so the plan cannot wait for steps inside an epoch."""
    cfg = budget_config(tmp_path, cifar_folder, "12s")
    apply_overrides(cfg, ["data.limit_train=40", "data.val_fraction=0.2", "data.limit_test=32"])
    started = time.perf_counter()
    yingshe.train(cfg, progress=False)
    wall = time.perf_counter() - started
    budget = json.loads((tmp_path / "report.json").read_text())["time_budget"]
    assert budget["planned_steps"] is not None and budget["planned_steps"] > 1
    assert wall <= 12 * 1.5, f"took {wall:.1f} s on a 12 s budget"


def test_a_budget_that_validates_only_the_last_epoch_still_ends_inside_it(tmp_path, cifar_folder):
    """With `train.val_every=0` the measured epoch boundaries hold no validation pass, so the plan
    reserves the last epoch's; the run still validates that epoch and ends in its budget."""
    cfg = budget_config(tmp_path, cifar_folder, "12s")
    apply_overrides(cfg, ["train.val_every=0"])
    started = time.perf_counter()
    result = yingshe.train(cfg, progress=False)
    wall = time.perf_counter() - started
    report = json.loads((tmp_path / "report.json").read_text())
    assert wall <= 12 * 1.3, f"took {wall:.1f} s on a 12 s budget"
    assert report["training"]["epochs_run"] > 1
    rows = [r for r in read_metrics_csv(tmp_path / "metrics.csv")]
    assert [math.isnan(r["val_accuracy"]) for r in rows] == [True] * (len(rows) - 1) + [False]
    assert result.accuracy > 0


class Interrupted(Exception):
    """Stands for a kill: the run stops at a step, its last mid-epoch checkpoint on disk."""


class InterruptAfter(Callback):
    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def on_step_end(self, trainer) -> None:
        if time.perf_counter() > self.deadline:
            raise Interrupted


def test_a_resumed_budgeted_run_continues_on_what_was_left_of_its_budget(tmp_path, cifar_folder):
    """A 20 s run stopped about half-way resumes with the seconds its checkpoint had spent already
    counted: the resumed process trains only what is left, the report counts both parts, and
    the run ends on its planned step. Resumed once more, the finished run trains nothing."""
    cfg = budget_config(tmp_path, cifar_folder, "20s")
    apply_overrides(cfg, ["train.checkpoint_every=2"])
    with pytest.raises(Interrupted):
        yingshe.train(cfg, callbacks=[InterruptAfter(10)], progress=False)
    saved = load_checkpoint(tmp_path / "last.pt").fit_state["budget"]
    assert saved["planned_steps"] is not None and 5 <= saved["spent_s"] <= 15, saved

    began = time.perf_counter()
    yingshe.train(resume=tmp_path, progress=False)
    wall = time.perf_counter() - began
    report = json.loads((tmp_path / "report.json").read_text())
    budget, training = report["time_budget"], report["training"]
    assert wall <= 20 - saved["spent_s"] + 4, f"the resumed part took {wall:.1f} s"  # not a new 20 s
    assert saved["spent_s"] + 0.5 * wall <= budget["spent_seconds"] <= 20 * 1.3, budget
    assert training["steps"] == budget["planned_steps"]
    epochs = [row["epoch"] for row in read_metrics_csv(tmp_path / "metrics.csv")]
    assert epochs == list(range(1, len(epochs) + 1))

    yingshe.train(resume=tmp_path, progress=False)
    again = json.loads((tmp_path / "report.json").read_text())
    assert (again["training"]["steps"], again["training"]["epochs_run"]) == (
        training["steps"],
        training["epochs_run"],
    )
    kept = ("planned_steps", "step_seconds", "eval_seconds_per_image", "revisions")
    assert {k: again["time_budget"][k] for k in kept} == {k: budget[k] for k in kept}  # the plan it had

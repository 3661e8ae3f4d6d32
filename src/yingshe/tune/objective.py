"""One trial = one ordinary training run (or one cross-validation) in `trial-NNNN/`.

The objective copies the study's base config, sets the trial's values, trains, and returns the
held-out figure of the best checkpoint (`report["validation"][metric]`, never the test split).
Pruning is a trainer callback: after each epoch it reports the study's own metric on the
validation split to Optuna and, when the pruner says so, stops the loop like early stopping would;
the run still writes its report, which names the pruning as its stop reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from yingshe.api import train
from yingshe.config import RunConfig, set_value
from yingshe.errors import YingsheError
from yingshe.evaluate.metrics import full_metrics
from yingshe.evaluate.metrics import metric as metric_spec
from yingshe.evaluate.report import write_report
from yingshe.train.callbacks import Callback
from yingshe.tune.space import SearchSpace, suggest

METRICS = ("accuracy", "f1_macro", "loss")
# metrics the trainer's per-epoch row carries; others are computed from its validation predictions
ROW_FIGURE = {"accuracy": "val_accuracy", "loss": "val_loss"}


def metric_direction(metric: str) -> str:
    """ "minimize" or "maximize" for a report figure, from the project's metric table."""
    if metric not in METRICS:
        raise YingsheError(f"unknown tuning metric {metric!r}", "use " + ", ".join(METRICS))
    return "maximize" if metric_spec(metric).higher_is_better else "minimize"


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / f"trial-{number:04d}"


def epoch_value(trainer, row: dict[str, Any], metric: str) -> float | None:
    """This epoch's validation `metric`: from the per-epoch row where it is there, else from the
    epoch's validation predictions, computed as the report computes it (`full_metrics`; a
    multi-label split at thresholds of 0.5, since the tuned ones exist only after training)."""
    if metric in ROW_FIGURE:
        return row[ROW_FIGURE[metric]]
    pred = trainer.val_predictions
    if pred is None or len(pred.labels) == 0:
        return None
    return full_metrics(pred, trainer.meta.classes)[metric]


class PruneOnValidation(Callback):
    """Report each epoch's validation `metric` (the study's) to the trial; stop the run when it is
    pruned."""

    def __init__(self, trial: optuna.Trial, metric: str, pruner: str) -> None:
        self.trial, self.metric, self.pruner = trial, metric, pruner
        self.figure = ROW_FIGURE.get(metric, f"val_{metric}")
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer, row: dict[str, Any]) -> None:
        if not trainer.validated:  # train.val_every skipped this epoch: nothing to report
            return
        value = epoch_value(trainer, row, self.metric)
        if value is None or math.isnan(value):
            # a diverged run is the worst
            value = math.inf if metric_direction(self.metric) == "minimize" else 0.0
        self.trial.report(value, row["epoch"])
        if self.trial.should_prune():
            self.pruned_at = row["epoch"]
            trainer.state.should_stop = True
            trainer.state.stop_reason = (
                f"pruned by the {self.pruner} pruner of the tuning study after epoch {row['epoch']} "
                f"({self.figure} {value:.4f})"
            )


def trial_config(base: RunConfig, values: dict[str, Any], out: Path) -> RunConfig:
    cfg = RunConfig.from_dict(base.to_dict())
    for key, value in values.items():
        set_value(cfg, key, value, "search space")
    cfg.train.out = str(out)
    cfg.train.plots = False  # the figures of every trial would cost more than small trials' training
    return cfg


class Objective:
    """Callable for `study.optimize`: trains the trial's run and returns its held-out figure."""

    def __init__(
        self,
        base: RunConfig,
        space: SearchSpace,
        study_dir: Path,
        metric: str,
        pruner: str,
        cv: int | None = None,
        callbacks: list[Callback] | None = None,
        duplicate_of: Callable[[optuna.Study, int], int | None] | None = None,
    ) -> None:
        self.base, self.space, self.study_dir = base, space, study_dir
        self.metric, self.pruner, self.cv = metric, pruner, cv
        self.callbacks = list(callbacks or [])
        self.duplicate_of = duplicate_of  # a grid: the earlier trial that took this trial's point

    def __call__(self, trial: optuna.Trial) -> float:
        first = self.duplicate_of(trial.study, trial.number) if self.duplicate_of else None
        if first is not None:  # two workers drew the last open grid point at once: train it once
            trial.set_user_attr("duplicate_of", first)
            raise optuna.TrialPruned(f"grid point already taken by trial {first}")
        values = {p.key: suggest(trial, p) for p in self.space.params}
        out = trial_dir(self.study_dir, trial.number)
        cfg = trial_config(self.base, values, out)
        trial.set_user_attr("run_dir", str(out))
        trial.set_user_attr("config", cfg.to_dict())
        if self.cv:
            return self.cross_validated(trial, cfg, out)
        pruning = PruneOnValidation(trial, self.metric, self.pruner)
        result = train(cfg, callbacks=[*self.callbacks, pruning])
        report = result.report
        trial.set_user_attr("epochs", report["training"]["epochs_run"])
        trial.set_user_attr("seconds", report["training"]["seconds"])
        if pruning.pruned_at is not None:
            report["tuning"] = {
                "trial": trial.number,
                "state": "pruned",
                "pruned_after_epoch": pruning.pruned_at,
            }
            write_report(result.run_dir, report)
            raise optuna.TrialPruned(report["training"]["stop_reason"])
        value = report["validation"][self.metric]
        report["tuning"] = {"trial": trial.number, "state": "complete", "value": value, "metric": self.metric}
        write_report(result.run_dir, report)
        return value

    def cross_validated(self, trial: optuna.Trial, cfg: RunConfig, out: Path) -> float:
        """The mean held-out figure over K folds; the whole trial is one value (not pruned)."""
        from yingshe.tune.cv import cross_validate

        result = cross_validate(cfg, self.cv, callbacks=self.callbacks, out=out)
        trial.set_user_attr("epochs", sum(_epochs(f.run_dir) for f in result.folds))
        trial.set_user_attr("seconds", result.report["seconds"])
        return result.score(self.metric)


def _epochs(run_dir: Path) -> int:
    import json

    return json.loads((run_dir / "report.json").read_text())["training"]["epochs_run"]

"""`yingshe.tune(...)`: an Optuna study whose trials are ordinary training runs.

The study folder holds `trial-NNNN/` run folders, the storage (`study.db` unless another is
named), `base.yaml` (the config every trial starts from) and the results (results.py). Several
workers naming the same storage and study share it: each runs `trials` trials of its own, and
Optuna hands every trial number out once.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from yingshe.config import RunConfig, save_yaml
from yingshe.errors import YingsheError
from yingshe.outputs import check_report_folder
from yingshe.runs import atomic_write_text, default_run_dir
from yingshe.train.callbacks import Callback
from yingshe.tune import study as studies
from yingshe.tune.objective import Objective, metric_direction
from yingshe.tune.results import PLOTS, write_results
from yingshe.tune.space import SearchSpace, check_sampler, default_sampler, load_space, parse_space

DEFAULT_TRIALS = 20
STUDY_NAME_FILE = "study-name.txt"  # the one study this folder's trial-NNNN/ folders belong to
STUDY_FILES = (
    "base.yaml",
    "study.db",
    "trials.csv",
    "best.yaml",
    "study.md",
    "lr_find.png",
    STUDY_NAME_FILE,
    *PLOTS,
)


@dataclass
class TuneResult:
    study_dir: Path
    study: optuna.Study
    summary: dict[str, Any]

    @property
    def best_value(self) -> float | None:
        best = self.summary["best"]
        return None if best is None else best["value"]

    @property
    def best_config(self) -> Path:
        return self.study_dir / "best.yaml"


def study_folder(config: RunConfig, out: str | Path | None) -> Path:
    if out or config.train.out:
        return Path(out or config.train.out)
    default = default_run_dir(config.data.spec, config.model.name)
    return default.with_name(f"tune-{default.name}")


def check_study_folder(folder: Path) -> None:
    """Refuse a run folder (or one a run holds locked) as `--out`, as `report --out` does; an
    earlier study folder (its base.yaml, study.db or study name) is
    reused, any other file a study writes is refused."""
    earlier = any((folder / name).is_file() for name in ("base.yaml", "study.db", STUDY_NAME_FILE))
    writes = () if earlier else STUDY_FILES
    check_report_folder(folder, writes, lambda report: False, "study")


def claim_study_name(folder: Path, name: str) -> None:
    """One study per folder: trial folders are named by trial number, so a second study's
    trials would land in the first one's `trial-NNNN/` folders and fail."""
    marker = folder / STUDY_NAME_FILE
    if marker.is_file():
        held = marker.read_text().strip()
        if held and held != name:
            raise YingsheError(
                f"{folder} holds study {held!r}; study {name!r} would write into its trial folders",
                f"give --out a new folder for study {name!r}, or use --study {held}",
            )
        return
    atomic_write_text(marker, name + "\n")


def check_base(config: RunConfig, cv: int | None) -> None:
    if cv is not None and cv < 2:
        raise YingsheError(f"--cv needs at least 2 folds, got {cv}", "use --cv 2 or more, or leave it out")
    if not cv and (config.data.val_fraction <= 0 or config.data.cv_folds):
        raise YingsheError(
            "tuning chooses on the validation split, and this config has none "
            f"(data.val_fraction={config.data.val_fraction}, data.cv_folds={config.data.cv_folds})",
            "set data.val_fraction above 0 (default 0.1), or use --cv K",
        )


def tune(
    config: RunConfig,
    space: str | Path | dict[str, Any] | SearchSpace,
    *,
    sampler: str | None = None,
    pruner: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    cv: int | None = None,
    metric: str = "accuracy",
    out: str | Path | None = None,
    heartbeat: int = 10,
    plots: bool = True,
    progress: bool = True,
    callbacks: list[Callback] | None = None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    tpe_startup: int | None = None,
    sampler_seed: int | None = None,
    pruner_options: dict[str, Any] | None = None,
) -> TuneResult:
    """Run `trials` trials of a study (this worker's share) and write the study's results.

    `space` is a YAML file, a mapping in the same format, or a parsed SearchSpace. `sampler`
    defaults to grid for a space of lists and tpe otherwise; `pruner` to asha, or none for a grid
    (a grid is the baseline that trains every point in full). `trials` defaults to the grid's size,
    else 20. `pruner_options` replace the pruner's defaults (keyword arguments of its Optuna class,
    e.g. {"min_resource": 2} for ASHA). Every check (space, metric, names, validation split,
    pruner options) happens before the first trial.
    """
    direction = metric_direction(metric)
    if isinstance(space, SearchSpace):
        parsed = space
    elif isinstance(space, dict):
        parsed = parse_space(space, "search space")
    else:
        parsed = load_space(space)
    sampler = sampler or default_sampler(parsed)
    if sampler not in studies.SAMPLERS:
        raise YingsheError(f"unknown sampler {sampler!r}", "use " + ", ".join(studies.SAMPLERS))
    check_sampler(parsed, sampler)
    pruner = pruner or ("none" if sampler == "grid" else "asha")
    if pruner not in studies.PRUNERS:
        raise YingsheError(f"unknown pruner {pruner!r}", "use " + ", ".join(studies.PRUNERS))
    if heartbeat < 1:
        raise YingsheError(f"heartbeat must be at least 1 second, got {heartbeat}")
    check_base(config, cv)
    pruner_obj = studies.make_pruner(pruner, config.train.epochs, options=pruner_options)
    if trials is None:
        trials = parsed.grid_size() if sampler == "grid" else DEFAULT_TRIALS
    study_dir = study_folder(config, out)
    check_study_folder(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    name = study_name or study_dir.resolve().name
    claim_study_name(study_dir, name)
    base = RunConfig.from_dict(config.to_dict())
    base.train.out = str(study_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage_obj, storage_text = studies.make_storage(storage, study_dir, heartbeat)
    # every worker must shuffle a grid alike (Optuna hands out grid points by trial number)
    seed = studies.sampler_seed(base.train.seed, shared=storage is not None and sampler != "grid")
    if sampler_seed is not None:  # repeat a search with other draws on the same split and inits
        seed = sampler_seed
    try:
        study = optuna.create_study(
            storage=storage_obj,
            study_name=name,
            direction=direction,
            sampler=studies.make_sampler(sampler, parsed, seed, tpe_startup),
            pruner=pruner_obj,
            load_if_exists=True,
        )
    except ValueError as err:  # e.g. an existing study with the other direction
        raise YingsheError(f"cannot open study {name!r}: {err}", "name another study with --study") from err
    if parsed.needs_lr_find():
        centre_on_lr_find(parsed, base, study)
    atomic_write_text(study_dir / "base.yaml", save_yaml(base))
    info = {
        "metric": metric,
        "sampler": sampler,
        "pruner": pruner,
        "pruner_options": dict(pruner_options or {}),
        "storage": storage_text,
        "cv": cv,
        "plots": plots,
    }
    guards = []
    if sampler == "grid":
        with warnings.catch_warnings():  # Optuna marks the heartbeat API experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's point is queued again first
        guard = GridGuard(parsed.grid())
        trials = min(trials, guard.open_points(study))
        guards.append(guard)
    duplicate_of = guards[0].duplicate_of if guards else None
    objective = Objective(base, parsed, study_dir, metric, pruner, cv, callbacks, duplicate_of)
    started = time.perf_counter()
    with TrialProgress(trials, study, metric, progress, on_trial) as bar:
        if trials > 0:
            # a trial whose values make a bad run (YingsheError) is recorded failed; the study goes on
            study.optimize(
                objective, n_trials=trials, timeout=timeout, callbacks=[bar, *guards], catch=(YingsheError,)
            )
    summary = write_results(
        study, study_dir, base, {**info, "seconds_this_worker": round(time.perf_counter() - started, 2)}
    )
    return TuneResult(study_dir, study, summary)


def centre_on_lr_find(space: SearchSpace, base: RunConfig, study: optuna.Study) -> None:
    """Resolve `around: lr-find`: the study's recorded suggestion, else run the range test once
    and record it, so every worker and every later session centres on the same value."""
    lr = study.user_attrs.get("lr_find")
    if lr is None:
        from yingshe.tune.lr_find import lr_find

        lr = lr_find(base, plot=Path(base.train.out) / "lr_find.png").suggestion
        study.set_user_attr("lr_find", lr)
    space.centre(float(lr))


class GridGuard:
    """Stop a grid worker once every point is taken (finished, running or queued for a retry).

    Optuna's GridSampler hands out points by trial number and, once none is left unvisited,
    re-runs a point another worker is still running; a worker here stops instead. Two workers
    that start trials at the same moment can still draw the same open point: the later trial
    finds the earlier one (`duplicate_of`) and is pruned before it trains, so a grid shared by
    several workers trains each point once. (Should the earlier trial then fail, its point stays
    untrained, as any failed grid point does; a dead worker's point is queued again.)"""

    def __init__(self, grid: dict[str, list[Any]]) -> None:
        self.grid = {key: list(values) for key, values in sorted(grid.items())}
        self.size = 1
        for values in grid.values():
            self.size *= len(values)

    def mine(self, trial: optuna.trial.FrozenTrial) -> bool:
        """A trial of this grid (a study may hold trials of other spaces)."""
        space = trial.system_attrs.get("search_space")
        return space is not None and {k: list(v) for k, v in space.items()} == self.grid

    def open_points(self, study: optuna.Study) -> int:
        """Points no trial has taken yet, plus retries waiting to run."""
        trials = study.get_trials(deepcopy=False)
        taken = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs and self.mine(t)}
        waiting = sum(t.state == optuna.trial.TrialState.WAITING and self.mine(t) for t in trials)
        return max(self.size - len(taken), 0) + waiting

    def duplicate_of(self, study: optuna.Study, number: int, wait: float = 2.0) -> int | None:
        """The earliest other trial of this grid that holds trial `number`'s point (running,
        finished, or a queued retry; a failed trial holds none), or None.

        Optuna creates a trial and records its grid point in separate storage calls, so an
        earlier trial may not show its point yet: this waits up to `wait` seconds for every
        earlier running trial to show one."""
        state = optuna.trial.TrialState
        deadline = time.monotonic() + wait
        while True:
            trials = study.get_trials(deepcopy=False)
            running = [t for t in trials if t.number < number and t.state == state.RUNNING]
            if all("grid_id" in t.system_attrs for t in running) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        this = next((t for t in trials if t.number == number), None)
        if this is None or "grid_id" not in this.system_attrs or not self.mine(this):
            return None
        taken = (state.RUNNING, state.WAITING, state.COMPLETE, state.PRUNED)
        earlier = [
            t.number
            for t in trials
            if t.number < number
            and t.system_attrs.get("grid_id") == this.system_attrs["grid_id"]
            and t.state in taken
            and "duplicate_of" not in t.user_attrs
            and self.mine(t)
        ]
        return min(earlier) if earlier else None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.open_points(study) == 0:
            study.stop()


class TrialProgress:
    """A tqdm bar over this worker's trials with the best value so far; an Optuna callback."""

    def __init__(self, total: int, study: optuna.Study, metric: str, enabled: bool, on_trial) -> None:
        self.total, self.study, self.metric = total, study, metric
        self.enabled, self.on_trial = enabled, on_trial
        self.bar = None

    def __enter__(self) -> TrialProgress:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total, desc="trials", unit="trial", file=sys.stderr, dynamic_ncols=True
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.bar is not None:
            self.bar.update(1)
            try:
                best = f"{study.best_value:.4f} (trial {study.best_trial.number})"
            except ValueError:  # no completed trial yet
                best = "-"
            self.bar.set_postfix_str(f"last {trial.state.name.lower()}, best {self.metric} {best}")
        if self.on_trial is not None:
            self.on_trial(study, trial)

"""`yingshe tune` on a small real slice of Fashion-MNIST: a grid trains each point once, a bad trial
is pruned after its first epoch and says so, best.yaml retrains to the same figure, lr-find."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
from pathlib import Path

import optuna
import pytest
import yaml
from support import one_thread

import yingshe
from yingshe.cli import main
from yingshe.config import RunConfig, apply_overrides, load_config
from yingshe.errors import YingsheError

GRID = {"lr": [1e-3, 3e-3, 1e-2]}


def base_config(datasets_dir: Path, epochs: int) -> RunConfig:
    """300 training and 100 validation images, a seed-cnn of three narrow blocks."""
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            "data.spec=fashion-mnist",
            f"data.data_dir={datasets_dir}",
            "data.limit_train=400",
            "data.val_fraction=0.25",
            "data.limit_test=100",
            f"train.epochs={epochs}",
            "train.batch_size=32",
            "train.device=cpu",
            "model.kwargs={widths: [8, 16, 32]}",
        ],
    )
    return cfg


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory, datasets_dir) -> yingshe.TuneResult:
    out = tmp_path_factory.mktemp("grid-study")
    with one_thread():
        return yingshe.tune(base_config(datasets_dir, 1), GRID, out=out, progress=False)


def test_a_grid_trains_every_point_exactly_once(grid_study):
    trials = grid_study.study.trials
    assert sorted(t.params["optim.lr"] for t in trials) == GRID["lr"], "each point once, nothing else"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        run = grid_study.study_dir / f"trial-{t.number:04d}"
        assert load_config(run / "config.yaml").optim.lr == t.params["optim.lr"], "the trial is a run folder"
        report = json.loads((run / "report.json").read_text())
        assert report["validation"]["accuracy"] == t.value, "the objective is the run's validation figure"
        assert report["tuning"] == {
            "trial": t.number,
            "state": "complete",
            "value": t.value,
            "metric": "accuracy",
        }
    with (grid_study.study_dir / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(r["param:optim.lr"]) for r in rows) == GRID["lr"]
    assert {r["epochs"] for r in rows} == {"1"}
    md = (grid_study.study_dir / "study.md").read_text()
    assert "3 complete" in md and "yingshe train --config best.yaml" in md
    for name in ("history.png", "parallel_coordinates.png", "intermediate_values.png"):
        assert (grid_study.study_dir / name).read_bytes()[:4] == b"\x89PNG", name
    again = yingshe.tune(
        base_config(Path(grid_study.study.trials[0].user_attrs["config"]["data"]["data_dir"]), 1),
        GRID,
        out=grid_study.study_dir,
        progress=False,
        plots=False,
    )
    assert len(again.study.trials) == 3, "a finished grid runs no point a second time"


def test_best_yaml_retrains_to_the_same_figure(grid_study, tmp_path):
    best = grid_study.study.best_trial
    cfg = yaml.safe_load(grid_study.best_config.read_text())
    assert cfg["optim"]["lr"] == best.params["optim.lr"] and cfg["train"]["out"] is None
    out = tmp_path / "retrained"
    with one_thread(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--config", str(grid_study.best_config), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["validation"]["accuracy"] == best.value, "a deterministic CPU run reproduces the trial"
    trial_report = json.loads((Path(best.user_attrs["run_dir"]) / "report.json").read_text())
    assert report["accuracy"] == trial_report["accuracy"]


def grid_with_last(values: list[float], last: float, seed: int = 0) -> list[float]:
    """The grid listed in an order that Optuna's GridSampler (shuffled by `seed`) visits `last`
    last, found by asking a throwaway in-memory study."""
    for order in itertools.permutations(values):
        study = optuna.create_study(sampler=optuna.samplers.GridSampler({"optim.lr": list(order)}, seed=seed))
        choices = list(order)
        study.optimize(lambda t, c=choices: t.suggest_categorical("optim.lr", c), n_trials=len(order))
        if study.trials[-1].params["optim.lr"] == last:
            return list(order)
    raise AssertionError("no order visits it last")


def test_a_bad_trial_is_pruned_after_its_first_epoch_and_says_so(tmp_path, datasets_dir):
    cfg = base_config(datasets_dir, 3)
    out = tmp_path / "pruned-study"
    grid = grid_with_last([3e-3, 1e-2, 1e-7], last=1e-7)
    with one_thread():  # two good trials complete first: the median pruner compares against them
        result = yingshe.tune(cfg, {"lr": grid}, pruner="median", out=out, progress=False, plots=False)
    bad = result.study.trials[-1]
    assert bad.params["optim.lr"] == 1e-7 and bad.state == optuna.trial.TrialState.PRUNED
    report = json.loads((out / f"trial-{bad.number:04d}" / "report.json").read_text())
    assert report["training"]["epochs_run"] == 1, "stopped after one of three epochs"
    assert report["tuning"]["state"] == "pruned" and report["tuning"]["pruned_after_epoch"] == 1
    assert "pruned by the median pruner" in report["training"]["stop_reason"]
    assert "pruned by the median pruner" in (out / f"trial-{bad.number:04d}" / "report.md").read_text()
    assert [t.user_attrs["epochs"] for t in result.study.trials] == [3, 3, 1]
    assert "pruned" in (out / "trials.csv").read_text()


def test_mistakes_are_errors_before_any_trial(tmp_path, datasets_dir):
    cfg = base_config(datasets_dir, 1)
    with pytest.raises(YingsheError, match="is a grid"):
        yingshe.tune(cfg, {"lr": [0.1]}, sampler="tpe", out=tmp_path / "a", progress=False)
    with pytest.raises(YingsheError, match="unknown tuning metric"):
        yingshe.tune(cfg, GRID, metric="top1", out=tmp_path / "b", progress=False)
    cfg.data.val_fraction = 0.0
    with pytest.raises(YingsheError, match="validation split"):
        yingshe.tune(cfg, GRID, out=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / "a").exists()


def test_lr_find_suggests_an_override_and_tune_centres_a_range_on_it(tmp_path, datasets_dir):
    flags = ["--data", "fashion-mnist", "--limit-train", "400", "--limit-test", "100", "--device", "cpu"]
    flags += ["--batch-size", "16"]  # the range test takes 100 steps: small ones
    extra = [f"data.data_dir={datasets_dir}", "model.kwargs={widths: [8, 16, 32]}"]
    printed = io.StringIO()
    with one_thread(), contextlib.redirect_stdout(printed):
        assert (
            main(
                [
                    "lr-find",
                    *flags,
                    "--start-lr",
                    "1e-5",
                    "--steps",
                    "50",
                    "--out",
                    str(tmp_path / "lr"),
                    *extra,
                ]
            )
            == 0
        )
    line = next(x for x in printed.getvalue().splitlines() if "optim.lr=" in x)
    suggestion = float(line.split("optim.lr=")[1])
    assert 1e-5 / 10 < suggestion < 10 / 10, "a tenth of a rate inside the swept range"
    assert (tmp_path / "lr" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"

    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: loguniform, around: lr-find, decades: 1}\n")
    argv = ["tune", *flags, "--space", str(space), "--trials", "1", "--epochs", "1"]
    argv += ["--out", str(tmp_path / "s")]
    printed = io.StringIO()
    with one_thread(), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        assert main([*argv, "--max-steps", "3", *extra]) == 0
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    centre = study.user_attrs["lr_find"]
    lr = study.trials[0].params["optim.lr"]
    assert centre / 10 <= lr <= centre * 10, "the range is one decade either side of the suggestion"
    assert "trial    0: complete" in printed.getvalue() and "study.md" in printed.getvalue()


def test_cv_makes_the_objective_the_mean_over_folds(tmp_path, datasets_dir):
    cfg = base_config(datasets_dir, 1)
    with one_thread():
        result = yingshe.tune(
            cfg, {"lr": [3e-3]}, cv=2, metric="f1_macro", out=tmp_path, progress=False, plots=False
        )
    (trial,) = result.study.trials
    report = json.loads((tmp_path / "trial-0000" / "report.json").read_text())
    folds = [f["validation"]["f1_macro"] for f in report["folds"]]
    assert len(folds) == 2 and trial.value == pytest.approx(sum(folds) / 2)
    assert trial.user_attrs["epochs"] == 2, "one epoch in each of two folds"


def test_sampler_seed_repeats_a_search_with_other_draws_on_the_same_split(tmp_path, datasets_dir):
    cfg = base_config(datasets_dir, 1)
    cfg.data.limit_train, cfg.train.max_steps = 100, 1  # one step: the draw is the point
    low, high = 1e-4, 1.0

    def first_draw(seed: int) -> float:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return study.ask().suggest_float("optim.lr", low, high, log=True)

    space = {"lr": {"type": "loguniform", "low": low, "high": high}}
    with one_thread():
        result = yingshe.tune(
            cfg,
            space,
            sampler="random",
            pruner="none",
            trials=1,
            out=tmp_path / "s",
            progress=False,
            plots=False,
            sampler_seed=7,
        )
    drawn = result.study.trials[0].params["optim.lr"]
    assert drawn == pytest.approx(first_draw(7)), "the sampler draws with sampler_seed"
    assert drawn != pytest.approx(first_draw(0)), "not with train.seed (0)"

"""The search-space file: keys resolve like overrides, and every mistake is an error before any trial."""

import optuna
import pytest

from yingshe.errors import YingsheError
from yingshe.tune.space import default_sampler, load_space, parse_space, suggest
from yingshe.tune.study import make_sampler, redact


def test_keys_resolve_like_overrides_and_lists_are_a_grid():
    space = parse_space({"lr": [1e-3, 1e-2], "train.batch_size": [32, 64], "momentum": [0.9]})
    assert [p.key for p in space.params] == ["optim.lr", "train.batch_size", "optim.momentum"]
    assert space.is_grid and space.grid_size() == 4 and default_sampler(space) == "grid"
    assert space.grid() == {"optim.lr": [1e-3, 1e-2], "train.batch_size": [32, 64], "optim.momentum": [0.9]}


def test_distributions_are_sampled_inside_their_bounds():
    space = parse_space(
        {
            "lr": {"type": "loguniform", "low": "1e-4", "high": 0.1},
            "momentum": {"type": "uniform", "low": 0.8, "high": 0.99},
            "epochs": {"type": "int", "low": 1, "high": 4},
            "optim.name": {"type": "categorical", "choices": ["sgd", "adamw"]},
        },
        sampler="tpe",
    )
    assert default_sampler(space) == "tpe"
    study = optuna.create_study(sampler=make_sampler("random", space, 0))
    for _ in range(20):
        trial = study.ask()
        values = {p.key: suggest(trial, p) for p in space.params}
        assert 1e-4 <= values["optim.lr"] <= 0.1 and 0.8 <= values["optim.momentum"] <= 0.99
        assert values["train.epochs"] in (1, 2, 3, 4) and values["optim.name"] in ("sgd", "adamw")
        study.tell(trial, 0.0)


def test_around_centres_a_log_range_and_lr_find_is_filled_later():
    space = parse_space({"lr": {"type": "loguniform", "around": 3e-3, "decades": 1}})
    assert space.params[0].low == pytest.approx(3e-4) and space.params[0].high == pytest.approx(3e-2)
    later = parse_space({"lr": {"type": "loguniform", "around": "lr-find", "decades": 0.5}})
    assert later.needs_lr_find() and later.params[0].low is None
    later.centre(1e-2)
    low, high = later.params[0].low, later.params[0].high
    assert low == pytest.approx(1e-2 / 10**0.5) and high == pytest.approx(1e-2 * 10**0.5)


@pytest.mark.parametrize(
    ("raw", "sampler", "words"),
    [
        ({"learning_rate": [0.1]}, None, "unknown config key"),
        ({"lr": {"type": "gaussian", "low": 0, "high": 1}}, None, "unknown distribution"),
        ({"lr": {"type": "loguniform", "low": 0, "high": 1}}, None, "low > 0"),
        ({"lr": {"type": "uniform", "low": 1, "high": 0.1}}, None, "must be below"),
        ({"epochs": {"type": "int", "low": 1.5, "high": 3}}, None, "whole-number"),
        ({"batch_size": ["big", 64]}, None, "batch_size must be int"),
        ({"optim.name": {"type": "categorical", "choices": []}}, None, "non-empty"),
        ({"lr": [0.1], "momentum": {"type": "uniform", "low": 0.8, "high": 0.9}}, "tpe", "is a grid"),
        ({"lr": {"type": "uniform", "low": 0.01, "high": 0.1}}, "grid", "needs a list"),
        ({"lr": {"type": "uniform", "low": 0.01, "high": 0.1, "around": 1}}, None, "replaces low/high"),
        ({"kwargs": [{"width": 8}]}, None, "not a plain value"),
        ([1, 2], None, "must be a mapping"),
    ],
)
def test_bad_spaces_are_clear_errors(raw, sampler, words):
    with pytest.raises(YingsheError, match=words):
        parse_space(raw, "space.yaml", sampler)


def test_space_file_errors_name_the_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: [0.1\n")
    with pytest.raises(YingsheError, match="space.yaml is not valid YAML"):
        load_space(path)
    with pytest.raises(YingsheError, match="does not exist"):
        load_space(tmp_path / "missing.yaml")


def test_storage_urls_are_reported_without_passwords():
    assert redact("postgresql://tuner:secret@db.example/studies") == "postgresql://tuner@db.example/studies"
    assert redact("sqlite:///tmp/study.db") == "sqlite:///tmp/study.db"


def test_a_journal_trial_without_heartbeat_ends_failed_and_is_queued_again(tmp_path):
    """Optuna's JournalStorage has no heartbeat; ours beats through Optuna's BaseHeartbeat."""
    import time

    from optuna.trial import TrialState

    from yingshe.tune.study import HEARTBEAT_ATTR, make_storage

    storage, _ = make_storage(f"journal:{tmp_path / 'journal.log'}", tmp_path, heartbeat=1)
    study = optuna.create_study(storage=storage, study_name="s")
    alive, dead = study.ask(), study.ask()
    for trial in (alive, dead):
        trial.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
    storage.record_heartbeat(alive._trial_id)
    storage.set_trial_system_attr(dead._trial_id, HEARTBEAT_ATTR, time.time() - 10)  # its worker died
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == TrialState.RUNNING and states[dead.number] == TrialState.FAIL
    (retry,) = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == dead.number and retry.params == dead.params

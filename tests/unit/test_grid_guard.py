"""A grid shared by several workers trains each point once (tune/tuner.GridGuard)."""

import optuna

from yingshe.tune.tuner import GridGuard


def test_a_point_drawn_twice_at_once_is_left_to_the_earlier_trial():
    grid = {"optim.lr": [0.01]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    first, second = study.ask(), study.ask()  # two workers asking before either has finished
    for trial in (first, second):
        trial.suggest_categorical("optim.lr", grid["optim.lr"])
    guard = GridGuard(grid)
    assert guard.duplicate_of(study, first.number) is None
    assert guard.duplicate_of(study, second.number) == first.number
    assert guard.open_points(study) == 0


def grid_trial(state, grid: dict, grid_id: int, **user_attrs) -> optuna.trial.FrozenTrial:
    lr = optuna.distributions.CategoricalDistribution(grid["optim.lr"])
    return optuna.trial.create_trial(
        state=state,
        value=0.5 if state == optuna.trial.TrialState.COMPLETE else None,
        params={"optim.lr": grid["optim.lr"][grid_id]} if state != optuna.trial.TrialState.RUNNING else {},
        distributions={"optim.lr": lr} if state != optuna.trial.TrialState.RUNNING else {},
        system_attrs={"search_space": grid, "grid_id": grid_id},
        user_attrs=user_attrs,
    )


def test_a_failed_trial_gives_its_point_back_and_other_grids_do_not_count():
    grid, other = {"optim.lr": [0.01, 0.1]}, {"optim.lr": [0.01, 0.1, 1.0]}
    state = optuna.trial.TrialState
    study = optuna.create_study()
    study.add_trial(grid_trial(state.FAIL, grid, 0))  # 0: failed, its point is open again
    study.add_trial(grid_trial(state.COMPLETE, other, 0))  # 1: another grid's point 0
    study.add_trial(grid_trial(state.RUNNING, grid, 0))  # 2: the retry
    study.add_trial(grid_trial(state.PRUNED, grid, 0, duplicate_of=2))  # 3: a duplicate, pruned
    study.add_trial(grid_trial(state.RUNNING, grid, 0))  # 4: drew it again
    guard = GridGuard(grid)
    assert guard.duplicate_of(study, 2) is None
    assert guard.duplicate_of(study, 4) == 2


def test_a_queued_retry_holds_its_point_and_duplicates_are_listed_as_such():
    from yingshe.tune.results import trial_rows

    grid = {"optim.lr": [0.01, 0.1]}
    state = optuna.trial.TrialState
    study = optuna.create_study()
    study.add_trial(grid_trial(state.WAITING, grid, 1))  # 0: a retry queued for point 1
    study.add_trial(grid_trial(state.RUNNING, grid, 1))  # 1: a fresh trial drew point 1 too
    study.add_trial(grid_trial(state.PRUNED, grid, 1, duplicate_of=0))  # 2: an earlier duplicate
    assert GridGuard(grid).duplicate_of(study, 1, wait=0) == 0
    rows = {row["number"]: row for row in trial_rows(study)}
    assert rows[2]["state"] == "duplicate" and rows[2]["duplicate_of"] == 0
    assert rows[1]["state"] == "running" and rows[1]["duplicate_of"] is None

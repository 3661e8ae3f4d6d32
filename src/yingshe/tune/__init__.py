"""Model selection on top of training: k-fold cross-validation and Optuna studies.

`cross_validate(config, folds)` returns the mean and spread of the held-out figures, never
touching the test split's numbers for the decision; `tuner.tune(config, space, ...)` runs a study
whose trials are training runs (optionally cross-validated).

This package is also callable: `yingshe.tune(config, space, ...)` is `yingshe.tune.tuner.tune`
(see yingshe/_callable.py).
"""

from yingshe._callable import make_callable
from yingshe.tune.cv import CVResult, FoldResult, cross_validate

__all__ = ["CVResult", "FoldResult", "cross_validate"]


make_callable(__name__, "yingshe.tune.tuner:tune")

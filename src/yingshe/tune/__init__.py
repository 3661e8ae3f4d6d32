"""Model selection on top of training: k-fold cross-validation (and, later, Optuna studies).

`cross_validate(config, folds)` is the objective a tuning study calls: it returns the mean and
spread of the held-out figures, never touching the test split's numbers for the decision.
"""

from yingshe.tune.cv import CVResult, FoldResult, cross_validate

__all__ = ["CVResult", "FoldResult", "cross_validate"]

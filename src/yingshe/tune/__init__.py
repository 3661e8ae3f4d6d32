"""Model selection on top of training: k-fold cross-validation and Optuna studies.

`cross_validate(config, folds)` returns the mean and spread of the held-out figures, never
touching the test split's numbers for the decision; `tuner.tune(config, space, ...)` runs a study
whose trials are training runs (optionally cross-validated).

This package is also callable: `yingshe.tune(config, space, ...)` is `yingshe.tune.tuner.tune`.
A plain function bound to the name would hide the package, so `import yingshe.tune.cv as cv`
would fail; a callable module keeps both working.
"""

import sys
import types

from yingshe.tune.cv import CVResult, FoldResult, cross_validate

__all__ = ["CVResult", "FoldResult", "cross_validate"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from yingshe.tune.tuner import tune

        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

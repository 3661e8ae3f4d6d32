"""yingshe (映射, "mapping"): image datasets → trained, evaluated, deployable classifiers.

import yingshe
result = yingshe.train(yingshe.RunConfig())          # digits, seed-cnn, 10 epochs
clf = yingshe.load(result.run_dir)
clf.predict(["cat.jpg"], top_k=3)

The names below are imported on first use (PEP 562 module `__getattr__`), so `import yingshe`
and the CLI's `--help` do not pay for torch, torchvision and matplotlib until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from yingshe._version import __version__ as __version__

# public name → the module that defines it; one table, read by __getattr__ and __dir__
_EXPORTS = {
    "TrainResult": "yingshe.api",
    "explain": "yingshe.api",
    "inspect_data": "yingshe.api",
    "load": "yingshe.api",
    "prepare_data": "yingshe.api",
    "AugmentConfig": "yingshe.config",
    "DataConfig": "yingshe.config",
    "ModelConfig": "yingshe.config",
    "OptimConfig": "yingshe.config",
    "RunConfig": "yingshe.config",
    "TrainConfig": "yingshe.config",
    "load_config": "yingshe.config",
    "YingsheError": "yingshe.errors",
    "compare_runs": "yingshe.evaluate.compare",
    "create_model": "yingshe.models",
    "list_models": "yingshe.models",
    "apply_recipe": "yingshe.recipes",
    "list_recipes": "yingshe.recipes",
    "recipe_config": "yingshe.recipes",
    "finetune": "yingshe.transfer.finetune",
    "CVResult": "yingshe.tune.cv",
    "cross_validate": "yingshe.tune.cv",
    "LRFind": "yingshe.tune.lr_find",
    "lr_find": "yingshe.tune.lr_find",
    "TuneResult": "yingshe.tune.tuner",
}
# names that are callable subpackages (yingshe/_callable.py): `yingshe.train(config)` runs
# yingshe.api.train, and `import yingshe.train.trainer as t` still finds the subpackage
_PACKAGES = ("evaluate", "export", "train", "tune")

__all__ = [
    "AugmentConfig",
    "CVResult",
    "DataConfig",
    "LRFind",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "TuneResult",
    "YingsheError",
    "apply_recipe",
    "compare_runs",
    "create_model",
    "cross_validate",
    "evaluate",
    "explain",
    "export",
    "finetune",
    "inspect_data",
    "list_models",
    "list_recipes",
    "load",
    "load_config",
    "lr_find",
    "prepare_data",
    "recipe_config",
    "train",
    "tune",
]  # the keys of _EXPORTS and the names in _PACKAGES (a test checks)


def __getattr__(name: str) -> Any:
    if name in _PACKAGES:  # importing the subpackage also binds it here
        return importlib.import_module(f"yingshe.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'yingshe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_PACKAGES))


if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from yingshe.api import TrainResult, evaluate, explain, inspect_data, load, prepare_data, train
    from yingshe.config import (
        AugmentConfig,
        DataConfig,
        ModelConfig,
        OptimConfig,
        RunConfig,
        TrainConfig,
        load_config,
    )
    from yingshe.errors import YingsheError
    from yingshe.evaluate.compare import compare_runs
    from yingshe.models import create_model, list_models
    from yingshe.recipes import apply_recipe, list_recipes, recipe_config
    from yingshe.tune.cv import CVResult, cross_validate
    from yingshe.tune.lr_find import LRFind, lr_find
    from yingshe.tune.tuner import TuneResult

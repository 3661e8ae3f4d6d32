"""yingshe (映射, "mapping"): image datasets → trained, evaluated, deployable classifiers.

import yingshe
result = yingshe.train(yingshe.RunConfig())          # digits, seed-cnn, 10 epochs
clf = yingshe.load(result.run_dir)
clf.predict(["cat.jpg"], top_k=3)
"""

import yingshe.tune as tune  # a callable package: yingshe.tune(config, space, ...)
from yingshe._version import __version__ as __version__
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
from yingshe.transfer.finetune import finetune
from yingshe.tune.cv import CVResult, cross_validate
from yingshe.tune.lr_find import LRFind, lr_find
from yingshe.tune.tuner import TuneResult

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
]

"""yingshe (映射, "mapping"): image datasets → trained, evaluated, deployable classifiers.

import yingshe
result = yingshe.train(yingshe.RunConfig())          # digits, seed-cnn, 10 epochs
clf = yingshe.load(result.run_dir)
clf.predict(["cat.jpg"], top_k=3)
"""

__version__ = "0.1.0"

from yingshe.api import TrainResult, evaluate, inspect_data, load, train
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
from yingshe.models import create_model, list_models

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "YingsheError",
    "create_model",
    "evaluate",
    "inspect_data",
    "list_models",
    "load",
    "load_config",
    "train",
]

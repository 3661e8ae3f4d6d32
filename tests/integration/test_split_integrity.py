"""A run's splits stay put: limits never move images between splits, and a source that changed
since training is refused rather than evaluated on images the model may have trained on."""

import shutil

import numpy as np
import pytest

import yingshe
from yingshe.config import DataConfig, RunConfig, apply_overrides
from yingshe.data.dataset import build_dataset
from yingshe.errors import YingsheError


def test_a_test_limit_never_moves_training_images_into_validation():
    full = build_dataset(DataConfig(spec="digits"), seed=0)
    limited = build_dataset(DataConfig(spec="digits", limit_test=100), seed=0)
    assert len(limited.test) == 100
    assert np.array_equal(limited.val.images, full.val.images)
    assert np.array_equal(limited.train.images, full.train.images)


def test_a_source_that_changed_since_training_is_refused(cifar_folder, tmp_path):
    folder = tmp_path / "photos"
    for cls in ("cat", "dog", "ship"):
        shutil.copytree(cifar_folder / "train" / cls, folder / cls)
    cfg = RunConfig()
    apply_overrides(
        cfg, [f"data.spec={folder}", f"train.out={tmp_path / 'run'}", "train.epochs=1", "train.plots=false"]
    )
    run = yingshe.train(cfg)
    assert yingshe.evaluate(run.run_dir)["num_test"] == run.report["num_test"]
    shutil.copy(folder / "cat" / "0000.jpg", folder / "cat" / "extra.jpg")
    with pytest.raises(YingsheError, match="no longer splits as it did in training"):
        yingshe.evaluate(run.run_dir)

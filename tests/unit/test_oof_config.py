"""`data check --folds` trains its folds on the source as the pool reads it: no prepared shards."""

from pathlib import Path

from yingshe.config import RunConfig
from yingshe.tune.oof import oof_fold_config


def test_fold_runs_read_the_source_without_prepared_shards(tmp_path):
    config = RunConfig()
    config.data.prepared = "always"
    cfg = oof_fold_config(config, 3, 2, tmp_path)
    assert cfg.data.prepared == "off"
    assert (cfg.data.cv_folds, cfg.data.cv_fold) == (3, 2)
    assert Path(cfg.train.out) == tmp_path / "fold-2"
    assert config.data.prepared == "always"  # the caller's config is untouched

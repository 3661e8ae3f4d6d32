"""Options that cannot apply together say so instead of being dropped silently."""

import logging

import numpy as np
import pytest

from yingshe.config import DataConfig
from yingshe.data.dataset import build_dataset
from yingshe.data.loader import make_batches
from yingshe.data.splits import Split
from yingshe.errors import YingsheError


def test_stream_with_sampler_weights_warns_and_still_batches(caplog):
    split = Split(labels=np.arange(8) % 2, images=np.zeros((8, 4, 4, 1), np.uint8))
    with caplog.at_level(logging.WARNING, logger="yingshe.data.loader"):
        batches = make_batches(split, 4, 1, 4, train=True, stream=True, weights=np.ones(8), workers=0)
    assert "data.stream is ignored" in caplog.text and "train.balance=sampler" in caplog.text
    assert sum(len(batch.labels) for batch in batches) == 8


def test_dedupe_refuses_prepared_always_and_warns_with_auto(cifar_folder, caplog):
    with pytest.raises(YingsheError, match=r"data.prepared=always cannot be combined with data.dedupe"):
        build_dataset(DataConfig(spec=str(cifar_folder), dedupe=True, prepared="always"))
    with caplog.at_level(logging.WARNING, logger="yingshe.data.dataset"):
        spec = build_dataset(DataConfig(spec=str(cifar_folder), dedupe=True, prepared="auto"))
    assert "prepared shards are not used" in caplog.text
    assert spec.classes

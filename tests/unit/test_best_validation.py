"""`api.best_validation`: the loop's last validation predictions stand for best.pt's only when
they are best.pt's (same epoch, eager model, one process)."""

from pathlib import Path
from types import SimpleNamespace

import torch

from yingshe.api import best_validation
from yingshe.evaluate.metrics import Predictions


def session(epoch_of_predictions: int | None, compile_: bool = False):
    predictions = Predictions(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    trainer = SimpleNamespace(
        val_predictions=predictions if epoch_of_predictions else None,
        val_predictions_epoch=epoch_of_predictions,
    )
    cfg = SimpleNamespace(train=SimpleNamespace(compile=compile_))
    return SimpleNamespace(trainer=trainer, cfg=cfg, run=SimpleNamespace(best=Path("run/best.pt")))


def test_predictions_of_the_best_epoch_are_reused_and_no_others():
    best = Path("run/best.pt")
    state = SimpleNamespace(best_epoch=3)
    assert best_validation(session(3), state, best) is not None
    assert best_validation(session(4), state, best) is None  # a later epoch's weights
    assert best_validation(session(None), state, best) is None  # nothing validated
    assert best_validation(session(3), state, Path("run/last.pt")) is None  # no best.pt: last.pt
    assert best_validation(session(3, compile_=True), state, best) is None  # compiled kernels

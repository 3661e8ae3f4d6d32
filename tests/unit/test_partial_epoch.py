"""`Trainer.record_row`: a continued partial epoch's row replaces the partial one, and best.pt's
bookkeeping stays with rows that exist."""

from yingshe.train.trainer import FitState, Trainer


def trainer_with(history: list[dict], best: float, best_epoch: int) -> Trainer:
    trainer = Trainer.__new__(Trainer)  # record_row reads the loop state only
    trainer.state = FitState(epoch=len(history), best=best, best_epoch=best_epoch, history=history)
    return trainer


def test_the_completed_epoch_replaces_the_partial_row_and_its_best():
    """Epoch 2 stopped at half and was the best (best.pt holds its weights, which overwrote
    epoch 1's): completed, it takes best.pt whatever its figure, since nothing else is left."""
    trainer = trainer_with([{"epoch": 1, "val_accuracy": 0.8}, {"epoch": 2, "val_accuracy": 0.9}], 0.9, 2)
    trainer.record_row({"epoch": 2, "val_accuracy": 0.7})
    assert trainer.state.history == [{"epoch": 1, "val_accuracy": 0.8}, {"epoch": 2, "val_accuracy": 0.7}]
    assert trainer.state.best is None and trainer.state.best_epoch is None  # end_epoch sets them


def test_an_earlier_best_epoch_is_kept_and_new_epochs_are_appended():
    trainer = trainer_with([{"epoch": 1, "val_accuracy": 0.95}, {"epoch": 2, "val_accuracy": 0.9}], 0.95, 1)
    trainer.record_row({"epoch": 2, "val_accuracy": 0.93})
    assert (trainer.state.best, trainer.state.best_epoch) == (0.95, 1)
    trainer.record_row({"epoch": 3, "val_accuracy": 0.96})
    assert [row["epoch"] for row in trainer.state.history] == [1, 2, 3]

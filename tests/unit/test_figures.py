"""What the report figures are drawn from: the right images behind each prediction (unreadable
files are dropped by the loader), the most confident errors, and the run's history."""

import numpy as np
import torch

from yingshe.data.splits import BlobImages, Split
from yingshe.evaluate.figures import confident_errors, evaluated_positions, run_history
from yingshe.evaluate.metrics import Predictions
from yingshe.runs import write_metrics_csv
from yingshe.schema import Checkpoint, CheckpointMeta, ModelRecord


def test_prediction_positions_skip_the_files_the_loader_dropped():
    names = [f"img{i}.jpg" for i in range(6)]
    split = Split(np.zeros(6, dtype=np.int64), files=BlobImages(names, [b""] * 6))
    assert evaluated_positions(split, {}).tolist() == [0, 1, 2, 3, 4, 5]
    skipped = {"img1.jpg": "img1.jpg: empty file", "img4.jpg": "img4.jpg: truncated"}
    assert evaluated_positions(split, skipped).tolist() == [0, 2, 3, 5]


def test_confident_errors_are_wrong_and_sorted_by_confidence():
    logits = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 9.0], [2.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])  # wrong: 1 (p≈0.73), 2 (p≈0.9999), 3 (p≈0.88)
    order, confidence = confident_errors(Predictions(logits, labels), count=2)
    assert order.tolist() == [2, 3]
    assert confidence[0] > confidence[1] > 0.5
    assert len(confident_errors(Predictions(logits[[0, 4]], labels[[0, 4]]))[0]) == 0, "no errors, no grid"


def test_history_comes_from_metrics_csv_else_the_checkpoint(tmp_path):
    rows = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4}]
    meta = CheckpointMeta(ModelRecord("seed-cnn", 2, 1, 8), ["a", "b"], 1, 8, [0.5], [0.25])
    payload = Checkpoint(meta, {}, {}, fit_state={"history": rows[:1]})
    assert run_history(tmp_path / "best.pt", payload) == rows[:1], "no metrics.csv: the checkpoint's copy"
    write_metrics_csv(tmp_path / "metrics.csv", rows)
    assert run_history(tmp_path, payload) == [
        {"epoch": 1.0, "val_loss": 0.5},
        {"epoch": 2.0, "val_loss": 0.4},
    ]
    assert run_history(tmp_path / "best.pt", payload) == run_history(tmp_path, payload)

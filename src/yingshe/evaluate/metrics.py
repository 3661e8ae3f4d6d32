"""Metrics over a whole split, computed once from all logits (never averaged per batch).

torchmetrics' functional forms are used so the same numbers come out under DDP (where the
module forms sync state) and here; tests hold them to scikit-learn's on the same predictions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


@dataclass
class Predictions:
    """Everything evaluation needs from one pass over a split."""

    logits: Tensor  # (N, K) float32 on the CPU
    labels: Tensor  # (N,) int64


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    autocast_dtype: torch.dtype | None = None,
    tta_flip: bool = False,
) -> Predictions:
    """Run the model over (inputs, targets, labels) batches and gather logits on the CPU."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for inputs, _, batch_labels in batches:
        device_type = inputs.device.type
        with torch.autocast(
            device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        ):
            out = model(inputs)
            if tta_flip:
                out = (out + model(inputs.flip(-1))) / 2
        logits.append(out.float().cpu())
        labels.append(batch_labels.cpu())
    model.train(was_training)
    if not logits:
        return Predictions(torch.empty(0, 0), torch.empty(0, dtype=torch.long))
    return Predictions(torch.cat(logits), torch.cat(labels))


def summary_metrics(pred: Predictions, num_classes: int) -> dict[str, float]:
    """The per-epoch numbers: loss and accuracy (cheap, for the training table)."""
    if len(pred.labels) == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {
        "loss": float(F.cross_entropy(pred.logits, pred.labels)),
        "accuracy": float((pred.logits.argmax(1) == pred.labels).float().mean()),
    }


def full_metrics(pred: Predictions, classes: list[str]) -> dict:
    """Everything for a report: averages, top-k, calibration, per-class table, confusion matrix."""
    k = len(classes)
    probs, labels = pred.logits.softmax(1), pred.labels
    out: dict = summary_metrics(pred, k)
    if k > 5:
        out["top5_accuracy"] = float(multiclass_accuracy(probs, labels, k, average="micro", top_k=5))
    for average in ("macro", "weighted"):
        args = dict(num_classes=k, average=average, zero_division=0)
        out[f"precision_{average}"] = float(multiclass_precision(probs, labels, **args))
        out[f"recall_{average}"] = float(multiclass_recall(probs, labels, **args))
        out[f"f1_{average}"] = float(multiclass_f1_score(probs, labels, **args))
    out["ece"] = float(multiclass_calibration_error(probs, labels, k, n_bins=15, norm="l1"))
    per = dict(num_classes=k, average="none", zero_division=0)
    precision = multiclass_precision(probs, labels, **per)
    recall = multiclass_recall(probs, labels, **per)
    f1 = multiclass_f1_score(probs, labels, **per)
    support = torch.bincount(labels, minlength=k)
    out["per_class"] = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    ]
    out["confusion_matrix"] = multiclass_confusion_matrix(probs, labels, k).tolist()
    return out

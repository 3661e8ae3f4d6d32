"""Metrics over a whole split, accumulated as torchmetrics state and computed once.

Every figure is a torchmetrics `Metric`: batches only add to its state (counts, sums, a confusion
matrix), and `compute()` turns the state of the whole split into the number, so nothing is ever
an average of per-batch averages. Under torchrun the predictions themselves are gathered (or one
rank evaluates the whole split), so the metrics never reduce their states across processes
(`LOCAL`): torchmetrics would otherwise sum every rank's copy of the same predictions. Tests hold
each figure to scikit-learn's on the same predictions of a trained model.

`METRICS` is the one table of the scalar figures: its key, title, direction and format. The
report, `yingshe report`'s comparison, cross-validation and the choice of the best epoch
(`train.monitor`) all read it; a new figure is one row here plus its computation below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from yingshe.errors import YingsheError
from yingshe.evaluate import multilabel
from yingshe.models.tta import tta_forward

ECE_BINS = 15
LOCAL: dict[str, Any] = {"sync_on_compute": False}  # predictions are whole already: no cross-rank sync


@dataclass(frozen=True)
class MetricSpec:
    """One scalar figure: how it is named, which way is better and how it is printed."""

    key: str  # the key in metrics dicts, report.json and (prefixed train_/val_) metrics.csv
    title: str  # the column or row title in every table
    higher_is_better: bool
    format: str  # "percent" (a share in [0, 1] shown as 93.48%) or "decimal" (shown as 0.2345)
    compact: bool = True  # shown in the narrow tables (run comparison, cross-validation)

    def show(self, value: float) -> str:
        return f"{100 * value:.2f}%" if self.format == "percent" else f"{value:.4f}"

    def better(self, value: float, than: float) -> bool:
        return value > than if self.higher_is_better else value < than


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("accuracy", "accuracy", True, "percent"),
    MetricSpec("top5_accuracy", "top-5 accuracy", True, "percent"),
    MetricSpec("balanced_accuracy", "balanced accuracy", True, "percent"),
    MetricSpec("f1_macro", "F1 (macro)", True, "percent"),
    MetricSpec("f1_weighted", "F1 (weighted)", True, "percent"),
    MetricSpec("precision_macro", "precision (macro)", True, "percent"),
    MetricSpec("recall_macro", "recall (macro)", True, "percent"),
    MetricSpec("precision_weighted", "precision (weighted)", True, "percent", compact=False),
    MetricSpec("recall_weighted", "recall (weighted)", True, "percent", compact=False),
    MetricSpec("ece", "expected calibration error", False, "decimal"),
    MetricSpec("loss", "mean loss", False, "decimal"),
    # multi-label splits (evaluate/multilabel.py); `accuracy` is then subset accuracy too
    MetricSpec("map", "mAP (macro average precision)", True, "percent"),
    MetricSpec("subset_accuracy", "subset accuracy (exact match)", True, "percent"),
    MetricSpec("hamming_loss", "Hamming loss", False, "decimal"),
)
METRIC_BY_KEY = {spec.key: spec for spec in METRICS}
EPOCH_FIGURES = ("loss", "accuracy", "ece")  # what `summary_metrics` measures on validation
TRAIN_FIGURES = ("loss", "accuracy")  # what the loop accumulates over the training batches
# `train.monitor=epoch`: every epoch beats the one before, so best.pt is the last epoch
# (cross-validation folds use it: the held-out fold must not also choose the epoch)
LAST_EPOCH = MetricSpec("epoch", "epoch", True, "decimal", compact=False)


def metric(key: str) -> MetricSpec:
    """The table row of `key`; an unknown key is an error that lists the known ones."""
    if key not in METRIC_BY_KEY:
        raise YingsheError(f"unknown metric {key!r}", f"use one of {', '.join(METRIC_BY_KEY)}")
    return METRIC_BY_KEY[key]


def monitor_choices() -> list[str]:
    """The values `train.monitor` accepts: a per-epoch figure of the validation or training split."""
    single = [f"val_{key}" for key in EPOCH_FIGURES]
    multi = [f"val_{key}" for key in multilabel.EPOCH_FIGURES if f"val_{key}" not in single]
    return single + multi + [f"train_{key}" for key in TRAIN_FIGURES] + ["epoch"]


def monitor_metric(monitor: str) -> MetricSpec:
    """The table row behind a `train.monitor` value such as `val_ece` (minimised)."""
    if monitor not in monitor_choices():
        raise YingsheError(
            f"train.monitor={monitor!r} is not a per-epoch figure",
            f"set train.monitor to one of {', '.join(monitor_choices())}",
        )
    return LAST_EPOCH if monitor == "epoch" else METRIC_BY_KEY[monitor.split("_", 1)[1]]


def format_value(key: str, value: float) -> str:
    """`value` as the table prints `key` (a figure not in the table is shown as a decimal)."""
    spec = METRIC_BY_KEY.get(key)
    return spec.show(value) if spec is not None else f"{value:.4f}"


@dataclass
class Predictions:
    """Everything evaluation needs from one pass over a split."""

    logits: Tensor  # (N, K) float32 on the CPU
    labels: Tensor  # (N,) int64, or (N, K) 0/1 for a multi-label split


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    autocast_dtype: torch.dtype | None = None,
    tta_flip: bool = False,
    tta_translate: int = 0,
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
            out = tta_forward(model, inputs, tta_flip, tta_translate)
        logits.append(out.float().cpu())
        labels.append(batch_labels.cpu())
    model.train(was_training)
    if not logits:
        return Predictions(torch.empty(0, 0), torch.empty(0, dtype=torch.long))
    return Predictions(torch.cat(logits), torch.cat(labels))


def summary_metrics(pred: Predictions, num_classes: int) -> dict[str, float]:
    """The per-epoch numbers (`EPOCH_FIGURES`): loss, accuracy and calibration error, each cheap.
    A multi-label split has its own (`multilabel.EPOCH_FIGURES`: loss, subset accuracy, mAP)."""
    if len(pred.labels) == 0:
        return {key: float("nan") for key in EPOCH_FIGURES}
    if multilabel.is_multilabel(pred.labels):
        return multilabel.summary(pred.logits, pred.labels)
    calibration = CalibrationBins(**LOCAL)
    calibration.update(pred.logits.float().softmax(1), pred.labels)
    return {
        "loss": float(F.cross_entropy(pred.logits, pred.labels)),
        "accuracy": float((pred.logits.argmax(1) == pred.labels).float().mean()),
        "ece": float(calibration.compute()),
    }


class CalibrationBins(Metric):
    """Expected calibration error (L1) over equal-width confidence bins (lo, hi] (Guo et al. 2017).

    State is three per-bin sums, so it is exact and O(bins) in memory.
    torchmetrics' own MulticlassCalibrationError is not used: it bins [lo, hi), puts a confidence
    of exactly 1.0 (common in float32 softmax) in a 16th bin of its own, and keeps every
    confidence of the split in memory.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, n_bins: int = ECE_BINS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_bins = n_bins
        for name in ("count", "confidence", "correct"):
            self.add_state(name, torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: Tensor, labels: Tensor) -> None:
        confidence, predicted = probs.double().max(1)
        # arange / n is correctly rounded, so a NumPy reference computes the same edges
        edges = torch.arange(self.n_bins + 1, dtype=torch.float64, device=probs.device) / self.n_bins
        index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, self.n_bins - 1)
        self.count.index_add_(0, index, torch.ones_like(confidence))
        self.confidence.index_add_(0, index, confidence)
        self.correct.index_add_(0, index, (predicted == labels).double())

    def compute(self) -> Tensor:
        total = self.count.sum().clamp_min(1)
        return (self.correct - self.confidence).abs().sum() / total  # Σ_b |acc_b − conf_b| n_b / N

    def bins(self) -> dict[str, list[float]]:
        """Per-bin count, mean confidence and accuracy, for the reliability diagram."""
        count = self.count.clamp_min(1)
        return {
            "edges": [i / self.n_bins for i in range(self.n_bins + 1)],
            "count": self.count.tolist(),
            "confidence": (self.confidence / count).tolist(),
            "accuracy": (self.correct / count).tolist(),
        }


def imbalance_figures(num_classes: int) -> dict[str, Metric]:
    """Rows for imbalanced data: balanced accuracy is the mean per-class recall over the classes
    present (scikit-learn's balanced_accuracy_score); per-class recall is `per_class[i]["recall"]`."""
    return {"balanced_accuracy": MulticlassRecall(num_classes, average="macro", zero_division=0, **LOCAL)}


class SplitMetrics:
    """All report figures for one split: `update` per batch (any device), `compute` once.

    Precision, recall and F1 give 0 where a class was never predicted (scikit-learn's
    zero_division=0); macro averages skip classes absent from both labels and predictions, as
    scikit-learn does when it is not given an explicit label list.
    """

    def __init__(self, num_classes: int) -> None:
        k = num_classes
        figures: dict[str, Metric] = {"accuracy": MulticlassAccuracy(k, average="micro", **LOCAL)}
        if k > 5:
            figures["top5_accuracy"] = MulticlassAccuracy(k, top_k=5, average="micro", **LOCAL)
        for average in ("macro", "weighted", "none"):
            suffix = "per_class" if average == "none" else average
            options = dict(average=average, zero_division=0, **LOCAL)
            figures[f"precision_{suffix}"] = MulticlassPrecision(k, **options)
            figures[f"recall_{suffix}"] = MulticlassRecall(k, **options)
            figures[f"f1_{suffix}"] = MulticlassF1Score(k, **options)
        figures["confusion_matrix"] = MulticlassConfusionMatrix(k, **LOCAL)
        figures.update(imbalance_figures(k))
        self.num_classes = k
        self.figures = MetricCollection(figures)
        self.loss = MeanMetric(**LOCAL).set_dtype(torch.float64)
        self.calibration = CalibrationBins(**LOCAL)

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: logits (B, K), integer labels (B,)."""
        logits = logits.float()
        probs = logits.softmax(1)
        self.figures.update(probs, labels)
        self.loss.update(F.cross_entropy(logits, labels, reduction="none"))
        self.calibration.update(probs, labels)

    def compute(self, classes: list[str]) -> dict[str, Any]:
        """The report's figures; per-class rows carry the class names."""
        values = self.figures.compute()
        out: dict[str, Any] = {
            "loss": float(self.loss.compute()),
            **{k: float(v) for k, v in values.items() if v.ndim == 0},
            "ece": float(self.calibration.compute()),
        }
        matrix = values["confusion_matrix"].cpu()
        support = matrix.sum(1)
        out["per_class"] = [
            {
                "class": name,
                "precision": float(values["precision_per_class"][i]),
                "recall": float(values["recall_per_class"][i]),
                "f1": float(values["f1_per_class"][i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        ]
        out["confusion_matrix"] = matrix.tolist()
        out["calibration"] = self.calibration.bins()
        return out


def full_metrics(
    pred: Predictions, classes: list[str], thresholds: list[float] | None = None
) -> dict[str, Any]:
    """Everything for a report: averages, top-5, calibration, per-class table, confusion matrix.
    A multi-label split gets `multilabel.full` at the per-label `thresholds` instead."""
    if len(pred.labels) == 0:
        raise YingsheError(
            "no image of the split could be evaluated",
            "check the images with `yingshe data inspect`; unreadable files are listed there",
        )
    if multilabel.is_multilabel(pred.labels):
        return multilabel.full(pred.logits, pred.labels, classes, thresholds)
    metrics = SplitMetrics(len(classes))
    metrics.update(pred.logits, pred.labels)
    return metrics.compute(classes)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The table's figures of a full metrics dict (no per-class tables), e.g. for a validation
    summary."""
    return {key: metrics[key] for key in METRIC_BY_KEY if isinstance(metrics.get(key), float)}

"""Multi-label figures: sigmoid scores per label, decided by per-label thresholds.

A multi-label split's `Predictions.labels` are (N, K) 0/1 rows. Scores are sigmoid(logits); an
image carries every label whose score reaches that label's threshold. Thresholds are tuned on
the validation split, one per label, to maximise that label's F1 (`tune_thresholds`), and the
checkpoint stores them, so evaluation and prediction decide as tuning did.

Figures (torchmetrics' multilabel functions, held to scikit-learn's in the tests):
- `map`: mean over labels of average precision (scikit-learn's average_precision_score, macro);
  it ignores thresholds;
- per-label precision, recall, F1 at the thresholds (0 where undefined, zero_division=0), and
  their plain means over all labels as `precision_macro`, `recall_macro`, `f1_macro`;
- per-label confusion counts at the thresholds, `tp`, `fp`, `fn`, `tn` in each `per_class` row
  (they sum to the number of images, and `tp + fn` is the label's `support`);
- `subset_accuracy`: images whose whole label set is right (also reported as `accuracy`, which
  every report carries);
- `hamming_loss`: the share of (image, label) decisions that are wrong;
- `loss`: mean binary cross-entropy over all (image, label) pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import (
    multilabel_average_precision,
    multilabel_confusion_matrix,
    multilabel_exact_match,
    multilabel_f1_score,
    multilabel_hamming_distance,
    multilabel_precision,
    multilabel_recall,
)

DEFAULT_THRESHOLD = 0.5
TASK = "multilabel"
EPOCH_FIGURES = ("loss", "accuracy", "map")  # the per-epoch validation row of a multi-label run
COUNTS = ("tp", "fp", "fn", "tn")  # the per-label confusion counts, in `confusion_counts` column order


def is_multilabel(labels: Tensor | np.ndarray) -> bool:
    return labels.ndim == 2


def decide(probs: Tensor, thresholds: list[float] | None) -> Tensor:
    """0/1 (N, K): every label whose score reaches its threshold (0.5 where none are tuned)."""
    k = probs.shape[1]
    limit = torch.tensor(thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * k, dtype=probs.dtype)
    return (probs >= limit.to(probs.device)).long()


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold that maximises F1 of `scores >= t` against 0/1 `truth`, midway between the
    lowest score predicted positive and the next lower score (so it generalises, not just fits).
    A label with no positive image keeps 0.5: no threshold can be tuned for it."""
    positives = int(truth.sum())
    if positives == 0:
        return DEFAULT_THRESHOLD
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    last = np.r_[ranked[1:] != ranked[:-1], True]  # cut only after the last of equal scores
    tp = np.cumsum(hits)[last]
    predicted = np.flatnonzero(last) + 1
    f1 = 2 * tp / (predicted + positives)
    best = int(np.argmax(f1))
    cut = predicted[best]
    low = ranked[cut - 1]
    return float(low if cut == len(ranked) else (low + ranked[cut]) / 2)


def tune_thresholds(probs: Tensor, labels: Tensor) -> list[float]:
    """One threshold per label, each maximising that label's F1 on these (validation) scores."""
    p, y = probs.double().numpy(), labels.numpy()
    return [best_f1_threshold(p[:, j], y[:, j]) for j in range(p.shape[1])]


def confusion_counts(predicted: Tensor, labels: Tensor) -> Tensor:
    """(K, 4) int64: each label's TP, FP, FN, TN (`COUNTS` order) of 0/1 decisions against 0/1 truth."""
    # (K, 2, 2): [[TN, FP], [FN, TP]], truth on the rows
    matrix = multilabel_confusion_matrix(predicted, labels, num_labels=labels.shape[1])
    return torch.stack([matrix[:, 1, 1], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 0, 0]], 1)


def summary(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """The per-epoch validation figures (`EPOCH_FIGURES`): BCE loss, subset accuracy at 0.5, mAP."""
    probs = logits.float().sigmoid()
    k = labels.shape[1]
    return {
        "loss": float(F.binary_cross_entropy_with_logits(logits.float(), labels.float())),
        "accuracy": float(multilabel_exact_match(decide(probs, None), labels, num_labels=k)),
        "map": float(multilabel_average_precision(probs, labels, num_labels=k, average="macro")),
    }


def full(
    logits: Tensor, labels: Tensor, classes: list[str], thresholds: list[float] | None
) -> dict[str, Any]:
    """The report's figures of a multi-label split, at `thresholds` (0.5 each where None)."""
    logits, labels = logits.float(), labels.long()
    probs, k = logits.sigmoid(), len(classes)
    predicted = decide(probs, thresholds)
    options = {"num_labels": k, "average": "none", "zero_division": 0}
    precision = multilabel_precision(predicted, labels, **options)
    recall = multilabel_recall(predicted, labels, **options)
    f1 = multilabel_f1_score(predicted, labels, **options)
    ap = multilabel_average_precision(probs, labels, num_labels=k, average="none")
    subset = float(multilabel_exact_match(predicted, labels, num_labels=k))
    used = thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * k
    support = labels.sum(0)
    counts = confusion_counts(predicted, labels).tolist()
    return {
        "task": TASK,
        "loss": float(F.binary_cross_entropy_with_logits(logits, labels.float())),
        "accuracy": subset,
        "subset_accuracy": subset,
        "map": float(multilabel_average_precision(probs, labels, num_labels=k, average="macro")),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "hamming_loss": float(multilabel_hamming_distance(predicted, labels, num_labels=k, average="micro")),
        "thresholds": [float(t) for t in used],
        "per_class": [
            {
                "class": name,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "average_precision": float(ap[i]),
                "threshold": float(used[i]),
                "support": int(support[i]),
                **dict(zip(COUNTS, counts[i], strict=True)),
            }
            for i, name in enumerate(classes)
        ],
    }


def batch_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """Training images whose whole label set is right at 0.5 (a logit above 0)."""
    return ((logits > 0) == (labels > 0.5)).all(1).sum()

"""Class imbalance: the training loss and the sampler a run uses (`train.balance`).

- `none`: plain cross-entropy, images in a shuffled order.
- `weights`: cross-entropy weighted by N / (K · n_c) per class (scikit-learn's "balanced"), so
  each class contributes the same total weight per epoch.
- `sampler`: images drawn with replacement with probability ∝ 1 / n_c, so each class is drawn
  equally often in expectation; the loss is plain.
- `logit-adjust`: the logit-adjusted loss of Menon et al. 2021: cross-entropy on logits + log π
  (π the training class prior), trained on the raw data; prediction uses the raw logits, which
  then estimate the balanced (prior-free) posterior.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from yingshe.errors import YingsheError, close_matches

BALANCE = ("none", "weights", "sampler", "logit-adjust")
LossFn = Callable[[Tensor, Tensor], Tensor]


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """N / (K · n_c) for present classes, 0 for absent ones."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def sample_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-image draw probabilities ∝ 1 / n_(class of the image); they sum to 1."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    weights = 1.0 / counts[np.asarray(labels, dtype=np.int64)]
    return weights / weights.sum()


def check_balance(mode: str) -> str:
    if mode not in BALANCE:
        raise YingsheError(f"train.balance {mode!r} is not known", close_matches(mode, BALANCE))
    return mode


def build_loss(mode: str, labels: np.ndarray, num_classes: int, label_smoothing: float = 0.0) -> LossFn:
    """The training loss for `mode`; targets may be class indices or soft (mixup/cutmix) rows."""
    check_balance(mode)
    if mode == "weights":
        weight = torch.tensor(class_weights(labels, num_classes), dtype=torch.float32)

        def weighted(logits: Tensor, targets: Tensor) -> Tensor:
            w = weight.to(logits.device)
            if targets.ndim == 1:  # weighted mean, as F.cross_entropy normalises by Σ w
                return F.cross_entropy(logits, targets, weight=w, label_smoothing=label_smoothing)
            per_image = F.cross_entropy(
                logits, targets, weight=w, reduction="none", label_smoothing=label_smoothing
            )
            return per_image.sum() / (targets * w).sum()

        return weighted
    if mode == "logit-adjust":
        prior = class_counts(labels, num_classes).astype(np.float64)
        log_prior = torch.tensor(np.log(np.maximum(prior, 1) / prior.sum()), dtype=torch.float32)

        def adjusted(logits: Tensor, targets: Tensor) -> Tensor:
            shifted = logits + log_prior.to(logits.device)
            return F.cross_entropy(shifted, targets, label_smoothing=label_smoothing)

        return adjusted

    def plain(logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)

    return plain

"""Class imbalance: the training loss and the sampler a run uses (`train.balance`).

- `none`: plain cross-entropy, images in a shuffled order.
- `weights`: cross-entropy weighted by N / (K · n_c) per class (scikit-learn's "balanced"), so
  each class contributes the same total weight per epoch.
- `sampler`: images drawn with replacement with probability ∝ 1 / n_c, so each class is drawn
  equally often in expectation; the loss is plain.
- `logit-adjust`: the logit-adjusted loss of Menon et al. 2021: cross-entropy on logits + log π
  (π the training class prior), trained on the raw data; prediction uses the raw logits, which
  then estimate the balanced (prior-free) posterior.

Multi-label data (labels (N, K) multi-hot) trains each label as its own yes/no with a sigmoid:
`train.multilabel_loss=bce` (binary cross-entropy on logits) or `asymmetric` (ASL, Ridnik et al.
2021: negatives' easy, confident cases are down-weighted, which suits images with few of many
labels). `weights` then weighs each label's positives by negatives/positives (`pos_weight`);
`sampler` and `logit-adjust` are per-class ideas and are refused.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from yingshe.errors import YingsheError, close_matches

BALANCE = ("none", "weights", "sampler", "logit-adjust")
MULTILABEL_LOSSES = ("bce", "asymmetric")
ASL_GAMMA_NEG, ASL_GAMMA_POS, ASL_CLIP = 4.0, 1.0, 0.05  # the paper's defaults
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


def build_loss(
    mode: str,
    labels: np.ndarray,
    num_classes: int,
    label_smoothing: float = 0.0,
    multilabel_loss: str = "bce",
) -> LossFn:
    """The training loss for `mode`; targets may be class indices or soft (mixup/cutmix) rows.
    Multi-hot `labels` (N, K) get the multi-label loss `multilabel_loss` instead."""
    check_balance(mode)
    if np.ndim(labels) == 2:
        return build_multilabel_loss(mode, labels, multilabel_loss, label_smoothing)
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


def build_multilabel_loss(mode: str, labels: np.ndarray, kind: str, label_smoothing: float = 0.0) -> LossFn:
    """Sigmoid losses for (B, K) float targets in [0, 1] (multi-hot, or mixed by mixup/cutmix)."""
    if kind not in MULTILABEL_LOSSES:
        raise YingsheError(
            f"train.multilabel_loss {kind!r} is not known", close_matches(kind, MULTILABEL_LOSSES)
        )
    if mode in ("sampler", "logit-adjust"):
        raise YingsheError(
            f"train.balance={mode} draws or shifts by one class per image; multi-label images have several",
            "use train.balance=weights (per-label positive weights) or none for multi-label data",
        )
    pos_weight = None
    if mode == "weights":
        positives = np.asarray(labels, dtype=np.float64).sum(0)
        ratio = (len(labels) - positives) / np.maximum(positives, 1)
        pos_weight = torch.tensor(np.where(positives > 0, ratio, 1.0), dtype=torch.float32)

    def smooth(targets: Tensor) -> Tensor:
        targets = targets.float()
        return targets * (1 - label_smoothing) + label_smoothing / 2 if label_smoothing else targets

    def bce(logits: Tensor, targets: Tensor) -> Tensor:
        weight = pos_weight.to(logits.device) if pos_weight is not None else None
        return F.binary_cross_entropy_with_logits(logits, smooth(targets), pos_weight=weight)

    def asymmetric(logits: Tensor, targets: Tensor) -> Tensor:
        y = smooth(targets)
        p = logits.sigmoid()
        shifted = (p - ASL_CLIP).clamp(min=0)  # probability shifting: very easy negatives count 0
        positive = y * (1 - p).pow(ASL_GAMMA_POS) * F.logsigmoid(logits)
        negative = (1 - y) * shifted.pow(ASL_GAMMA_NEG) * torch.log((1 - shifted).clamp(min=1e-8))
        if pos_weight is not None:
            positive = positive * pos_weight.to(logits.device)
        return -(positive + negative).mean()

    return asymmetric if kind == "asymmetric" else bce

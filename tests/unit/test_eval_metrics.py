"""Whole-split metrics against scikit-learn and a NumPy ECE on synthetic predictions.

The same check on a real trained model is in tests/integration/test_evaluation.py; here the
inputs are built to hit the corners: classes never predicted, confidences of exactly 1.0 and on
bin edges, and batches of uneven size.
"""

import itertools

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from yingshe.errors import YingsheError
from yingshe.evaluate.metrics import Predictions, SplitMetrics, full_metrics, headline

TOL = 1e-6


def numpy_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """L1 expected calibration error over equal-width bins (lo, hi] (Guo et al. 2017)."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = predicted == labels
    edges = np.arange(n_bins + 1) / n_bins
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        members = (confidence > lo) & (confidence <= hi)
        if lo == 0:
            members |= confidence == 0
        if members.any():
            ece += abs(correct[members].mean() - confidence[members].mean()) * members.mean()
    return float(ece)


def sklearn_figures(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    probs = logits.double().softmax(1).numpy()
    y, k = labels.numpy(), logits.shape[1]
    pred = probs.argmax(1)
    out = {"accuracy": skm.accuracy_score(y, pred), "loss": skm.log_loss(y, probs, labels=list(range(k)))}
    if k > 5:
        out["top5_accuracy"] = skm.top_k_accuracy_score(y, probs, k=5, labels=list(range(k)))
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        out |= {f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f}
    out["ece"] = numpy_ece(probs, y)
    return out


def synthetic(n: int = 700, k: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that are right about 60% of the time, and never predict the last class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g) * 2 + 3 * torch.nn.functional.one_hot(labels, k)
    logits[:, -1] -= 15  # never the top class, yet above log_loss's clipping at float64 eps
    return logits, labels


def test_every_figure_matches_sklearn():
    logits, labels = synthetic()
    ours = full_metrics(Predictions(logits, labels), [f"c{i}" for i in range(10)])
    for key, expected in sklearn_figures(logits, labels).items():
        assert ours[key] == pytest.approx(expected, abs=TOL), key
    pred = logits.argmax(1).numpy()
    matrix = skm.confusion_matrix(labels.numpy(), pred, labels=list(range(10)))
    assert ours["confusion_matrix"] == matrix.tolist()
    p, r, f, s = skm.precision_recall_fscore_support(
        labels.numpy(), pred, labels=list(range(10)), zero_division=0
    )
    for i, row in enumerate(ours["per_class"]):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]), abs=TOL)
        assert row["support"] == s[i] and row["class"] == f"c{i}"
    assert ours["per_class"][-1]["precision"] == 0.0, "a class never predicted has precision 0, not NaN"


def test_batches_add_up_to_the_whole_split_never_a_mean_of_batch_means():
    logits, labels = synthetic(n=523)
    whole = SplitMetrics(10)
    whole.update(logits, labels)
    batched = SplitMetrics(10)
    bounds = [(0, 7), (7, 300), (300, 301), (301, 523)]  # very uneven batches
    for start, stop in bounds:
        batched.update(logits[start:stop], labels[start:stop])
    classes = [str(i) for i in range(10)]
    a, b = whole.compute(classes), batched.compute(classes)
    for key, value in headline(a).items():
        assert b[key] == pytest.approx(value, abs=TOL), key
    assert a["confusion_matrix"] == b["confusion_matrix"]
    batch_means = [float((logits[i:j].argmax(1) == labels[i:j]).float().mean()) for i, j in bounds]
    assert abs(np.mean(batch_means) - b["accuracy"]) > 0.01, "these batches would expose a mean of means"


def test_ece_bins_are_half_open_and_confidence_one_joins_the_last_bin():
    # top-1 confidences 1.0 (exactly), 14/15 (a bin edge, belongs to the bin below), 0.5 and 0.2
    probs = torch.tensor(
        [[1.0, 0.0, 0.0], [14 / 15, 1 / 15, 0.0], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 1, 0, 2, 1])  # the two 1.0s: one right, one wrong
    metrics = SplitMetrics(3)
    metrics.calibration.update(probs, labels)
    expected = numpy_ece(probs.numpy(), labels.numpy())
    assert float(metrics.calibration.compute()) == pytest.approx(expected, abs=1e-12)
    bins = metrics.calibration.bins()
    assert bins["count"][-1] == 2 and bins["count"][-2] == 1, "1.0 → last bin; 14/15 → the one below"
    assert sum(bins["count"]) == 5 and len(bins["edges"]) == 16


def test_top5_only_with_more_than_five_classes():
    logits, labels = synthetic(n=50, k=5)
    assert "top5_accuracy" not in full_metrics(Predictions(logits, labels), list("abcde"))
    logits, labels = synthetic(n=50, k=6)
    assert "top5_accuracy" in full_metrics(Predictions(logits, labels), list("abcdef"))


def test_no_predictions_is_a_clear_error():
    with pytest.raises(YingsheError, match="no image"):
        full_metrics(Predictions(torch.empty(0, 3), torch.empty(0, dtype=torch.long)), list("abc"))

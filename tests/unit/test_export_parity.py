"""`export.parity.check_parity` on made-up logits: what passes and fails for each task."""

from __future__ import annotations

import numpy as np
import torch

from yingshe.export.parity import check_parity

LOGITS = np.array([[4.0, -3.0, 0.2], [-1.0, 2.5, 9.0]], np.float32)  # (N=2, K=3)
THRESHOLDS = [0.5, 0.5, 0.5]


def run(got: np.ndarray, thresholds: list[float] | None, tolerance: float = 1e-3):
    return check_parity(
        lambda images: torch.from_numpy(LOGITS), lambda images: got, LOGITS, tolerance, 2, thresholds
    )


def test_multilabel_judges_sigmoid_scores_not_logits():
    saturated = LOGITS.copy()
    saturated[1, 2] = 16.0  # a logit 7 away, a score under 2e-4 away: readers see no difference
    parity = run(saturated, THRESHOLDS)
    assert parity.passed and parity.label_agreement == 1.0 and parity.max_abs_logit_diff == 7.0
    assert not run(saturated, None).passed  # single-label keeps judging logits


def test_multilabel_fails_on_a_flipped_label_or_a_score_beyond_tolerance():
    flipped = LOGITS.copy()
    flipped[0, 2] = -0.2  # score 0.55 → 0.45: the label set changes
    parity = run(flipped, THRESHOLDS, tolerance=0.05)
    assert not parity.passed and parity.label_agreement == 0.5
    assert "label-set agreement 50.00%" in parity.line() and "FAILED" in parity.line()
    assert not run(LOGITS + 0.01, THRESHOLDS, tolerance=1e-3).passed


def test_a_label_within_tolerance_of_its_threshold_may_flip():
    near = LOGITS.copy()
    near[0, 2] = 1e-4  # score 0.500025: 2.5e-5 above the 0.5 cut, inside the 1e-3 tolerance
    got = near.copy()
    got[0, 2] = -1e-4  # a float32 graph's kind of difference, and the label drops out
    parity = check_parity(
        lambda images: torch.from_numpy(near), lambda images: got, near, 1e-3, 2, THRESHOLDS
    )
    assert parity.passed and parity.label_agreement == 0.5


def test_single_label_parity_dict_has_no_multilabel_keys():
    parity = run(LOGITS, None)
    assert parity.passed and set(parity.as_dict()) == {
        "images",
        "max_abs_logit_diff",
        "top1_agreement",
        "tolerance",
        "passed",
    }

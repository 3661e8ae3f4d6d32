"""Likely label errors by confident learning (Northcutt et al. 2021, the `cleanlab` library) on
out-of-fold probabilities, ranked most suspect first, with the label the model suggests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yingshe.errors import YingsheError
from yingshe.tune.oof import OutOfFold


@dataclass
class Suspect:
    key: str
    given: str
    suggested: str
    given_probability: float  # the held-out model's probability of the given label
    rank: int  # 1 = most suspect


def label_suspects(oof: OutOfFold) -> list[Suspect]:
    """Images whose given label confident learning doubts, ranked by self-confidence (lowest
    probability of the given label first)."""
    labels = np.asarray(oof.labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        return []
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as err:
        raise YingsheError("the label check needs cleanlab", "pip install 'yingshe[health]'") from err
    ranked = find_label_issues(labels, oof.probabilities, return_indices_ranked_by="self_confidence")
    return [
        Suspect(
            oof.keys[i],
            oof.classes[labels[i]],
            oof.classes[int(oof.probabilities[i].argmax())],
            float(oof.probabilities[i, labels[i]]),
            rank,
        )
        for rank, i in enumerate(ranked, start=1)
    ]

"""Iterative stratification of multi-label data (Sechidis, Tsoumakas & Vlahavas 2011, "On the
Stratification of Multi-Label Data"): parts of exact sizes that each hold every label in proportion.

Multi-hot rows have no one class to stratify by, and a random cut can leave a rare label out of a
validation split or a fold, where its tuned threshold and its metrics then mean nothing. The
algorithm deals out the rarest label still unassigned first, each of its rows to the part that still
wants most of that label, so rare labels are spread before the common ones fill the parts up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def iterative_parts(labels: np.ndarray, sizes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """The part (an index into `sizes`) of every row of `labels`, (N, K) 0/1 multi-hot rows.

    Part j gets exactly sizes[j] rows (they must add up to N): a part that is full takes no more,
    where the paper lets sizes drift, because callers promise the sizes they were asked for. Rows
    without any label are a label of their own, so they are spread in proportion too. Every tie
    is broken by `rng`, so the cut is seeded. Cost: O(P + K) per row for P parts and K labels,
    and O(N) per label (`bench/split_speed.py`: 0.12–0.22 s for 50,000 rows, 20 labels, 5 parts).
    """
    hot = np.asarray(labels) > 0
    hot = np.column_stack([hot, ~hot.any(axis=1)])  # (N, K + 1): the last column is "no label"
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.sum() != len(hot) or (sizes < 0).any():
        raise ValueError(f"part sizes {sizes.tolist()} do not add up to {len(hot)} rows")
    part = np.full(len(hot), -1, dtype=np.int64)
    if len(hot) == 0:
        return part
    room = sizes.tolist()  # (P,) rows each part still takes
    want = np.outer(sizes / len(hot), hot.sum(axis=0))  # (P, K + 1) rows of each label each part wants
    order = rng.permutation(len(hot))  # a label's rows are dealt in this seeded order
    tie = rng.random(len(hot))  # (N,) one draw per row picks among tied parts
    left = hot.sum(axis=0)  # (K + 1,) unassigned rows carrying each label
    while left.any():
        label = rarest(left, rng)
        rows = order[hot[order, label] & (part[order] < 0)]
        part[rows] = deal(want[:, label].tolist(), room, tie[rows].tolist())
        served = hot[rows]  # (R, K + 1): the other labels these rows carry are served too
        np.subtract.at(want, part[rows], served.astype(np.float64))
        left -= served.sum(axis=0)
    return part


def deal(want: list[float], room: list[int], draws: list[float]) -> list[int]:
    """The parts of one label's rows, in turn; `want` and `room` are updated in place.

    Only this label's wants decide here, so the caller updates the other labels' once afterwards;
    plain lists, because per row numpy's call overhead costs more than the few parts it compares.
    """
    parts = []
    for draw in draws:
        j = choose_part(want, room, draw)
        want[j] -= 1
        room[j] -= 1
        parts.append(j)
    return parts


def rarest(left: np.ndarray, rng: np.random.Generator) -> int:
    """The label with the fewest unassigned rows (but some): the hardest to spread, so dealt first."""
    ties = np.flatnonzero(left == left[left > 0].min())
    return int(ties[0]) if len(ties) == 1 else int(rng.choice(ties))


def choose_part(want: list[float], room: list[int], draw: float) -> int:
    """The part with room that still wants most of the label; ties go to the part with most room
    left (the paper's rule: the tuple's second key), then to the one `draw` (uniform in [0, 1)) picks."""
    open_ = [j for j, r in enumerate(room) if r > 0]
    top = max((want[j], room[j]) for j in open_)
    best = [j for j in open_ if want[j] == top[0] and room[j] == top[1]]
    return best[int(draw * len(best))]

"""Multi-label splits: what iterative stratification costs, and what it buys, against one shuffle.

Synthetic multi-hot labels, N rows × K labels with rates from 0.05% to 30% (log-spaced, so a few
labels sit on a few dozen rows and many rows carry no label at all), cut the three ways yingshe
cuts data (`data/splits.py`): a 10% hold-out, a subset of N/5 rows, and 5 cv folds. Each is timed
(best of `--rounds`) with iterative stratification (`data/iterstrat.py`, what multi-label data
gets) against the seeded shuffle that multi-label data got before. What it buys is measured on
the folds: the largest gap, over labels and folds, between a fold's count of a label and its
proportional share.

    nice -n 10 .venv/bin/python bench/split_speed.py [--rows 50000] [--labels 20]

Last line: split_s subset_s folds_s shuffle_folds_s folds_time_ratio strat_worst_gap
shuffle_worst_gap.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from yingshe.data.splits import stratified_folds, stratified_split, stratified_subset


def labels_matrix(rows: int, labels: int, seed: int) -> np.ndarray:
    """(rows, labels) 0/1 with log-spaced label rates from 0.05% to 30%."""
    rng = np.random.default_rng(seed)
    rates = np.geomspace(0.0005, 0.3, labels)
    return (rng.random((rows, labels)) < rates).astype(np.int64)


def best_s(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def shuffled_folds(rows: int, k: int, seed: int) -> list[np.ndarray]:
    """The old multi-label folds: one seeded shuffle dealt round-robin."""
    order = np.random.default_rng(seed).permutation(rows)
    return [np.sort(order[i::k]) for i in range(k)]


def worst_gap(labels: np.ndarray, folds: list[np.ndarray]) -> float:
    """The largest |a fold's count of a label − its proportional share|, in rows."""
    share = labels.sum(0) / len(labels)
    return float(max(np.abs(labels[f].sum(0) - share * len(f)).max() for f in folds))


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    y = labels_matrix(args.rows, args.labels, 0)
    rng = lambda: np.random.default_rng(1)  # noqa: E731  (each cut from the same seed)
    split_s = best_s(lambda: stratified_split(y, 0.1, rng()), args.rounds)
    subset_s = best_s(lambda: stratified_subset(y, args.rows // 5, rng()), args.rounds)
    folds_s = best_s(lambda: stratified_folds(y, args.folds, rng()), args.rounds)
    shuffle_s = best_s(lambda: shuffled_folds(args.rows, args.folds, 1), args.rounds)
    strat_gap = worst_gap(y, stratified_folds(y, args.folds, rng()))
    shuffle_gap = worst_gap(y, shuffled_folds(args.rows, args.folds, 1))
    unlabelled = float((y.sum(1) == 0).mean())
    share = f"{100 * unlabelled:.0f}% unlabelled"
    print(f"{args.rows:,} rows × {args.labels} labels ({share}), {args.folds} folds")
    print(f"iterative stratification: split {split_s:.2f} s, subset {subset_s:.2f} s, folds {folds_s:.2f} s")
    print(f"one shuffle's folds: {shuffle_s:.4f} s")
    print(f"worst fold-label gap: {strat_gap:.1f} rows stratified, {shuffle_gap:.1f} shuffled")
    line = {
        "split_s": f"{split_s:.3f}",
        "subset_s": f"{subset_s:.3f}",
        "folds_s": f"{folds_s:.3f}",
        "shuffle_folds_s": f"{shuffle_s:.4f}",
        "folds_time_ratio": f"{folds_s / shuffle_s:.0f}",
        "strat_worst_gap": f"{strat_gap:.1f}",
        "shuffle_worst_gap": f"{shuffle_gap:.1f}",
    }
    print(" ".join(f"{k}={v}" for k, v in line.items()))


if __name__ == "__main__":
    main()

"""Iterative stratification of multi-hot rows: hold-outs, subsets and folds hold every label, however
rare, in proportion, where the seeded shuffle that multi-label data had before left one out for the
same seed; sizes exact, parts disjoint and covering, seeded."""

import numpy as np
import pytest

from yingshe.data.iterstrat import iterative_parts
from yingshe.data.splits import stratified_folds, stratified_split, stratified_subset

RATES = [0.4, 0.25, 0.15, 0.08, 0.05, 0.03]  # about a third of the rows carry none of these
RARE = np.arange(4)  # the rows of the last, rare label: 4 of 400
SEED = 3  # a seed whose plain shuffle (the old cut) holds out none of RARE and leaves fold 1 without it


def multi_hot(n: int = 400) -> np.ndarray:
    """(n, 7) 0/1 rows: six labels drawn at RATES and a rare seventh on the rows RARE."""
    drawn = np.random.default_rng(0).random((n, len(RATES))) < RATES
    rare = np.isin(np.arange(n), RARE)[:, None]
    return np.hstack([drawn, rare]).astype(np.int64)


def old_cut(seed: int, n: int = 400) -> np.ndarray:
    """The order multi-label rows were cut along before: one stratum, so one seeded shuffle."""
    return np.random.default_rng(seed).permutation(n)


def groups(labels: np.ndarray) -> np.ndarray:
    """(N, K + 1): each label's rows and, last, the rows with no label."""
    return np.column_stack([labels > 0, labels.sum(1) == 0])


def assert_in_proportion(labels: np.ndarray, part: np.ndarray) -> None:
    """Every label within one row of its share of `part`; the label-less rows (dealt last here,
    the largest group, so they absorb the exact sizes' drift) within a tenth of theirs."""
    share = groups(labels).sum(0) * len(part) / len(labels)
    off = np.abs(groups(labels[part]).sum(0) - share)
    assert (off[:-1] <= 1).all(), off
    assert off[-1] <= 0.1 * groups(labels)[:, -1].sum(), off


def test_a_hold_out_holds_a_rare_label_the_old_shuffle_missed():
    labels = multi_hot()
    assert not np.isin(RARE, old_cut(SEED)[:100]).any(), "the old 25% hold-out of this seed had no rare row"
    kept, held = stratified_split(labels, 0.25, np.random.default_rng(SEED))
    assert len(held) == 100 and len(kept) == 300
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(400)), "disjoint and covering"
    assert labels[held, -1].sum() == 1
    assert_in_proportion(labels, held)
    assert_in_proportion(labels, kept)


def test_a_subset_holds_a_rare_label_the_old_shuffle_missed():
    labels = multi_hot()
    assert not np.isin(RARE, old_cut(SEED)[:100]).any(), "the old subset of 100 had no rare row"
    chosen = stratified_subset(labels, 100, np.random.default_rng(SEED))
    assert len(chosen) == len(np.unique(chosen)) == 100 and np.array_equal(chosen, np.sort(chosen))
    assert labels[chosen, -1].sum() == 1
    assert_in_proportion(labels, chosen)


def test_every_fold_holds_one_row_of_a_four_row_label_the_old_folds_missed():
    labels = multi_hot()
    assert not np.isin(RARE, old_cut(SEED)[0::4]).any(), "the old fold 1 had no rare row"
    folds = stratified_folds(labels, 4, np.random.default_rng(SEED))
    assert [len(f) for f in folds] == [100] * 4
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(400)), "disjoint and covering"
    assert [int(labels[f, -1].sum()) for f in folds] == [1, 1, 1, 1]
    for fold in folds:
        assert_in_proportion(labels, fold)


def test_fold_sizes_match_the_single_label_folds():
    """The first n mod k folds are one row larger, as `order[fold::k]` makes them for classes."""
    labels = multi_hot(402)
    multi = stratified_folds(labels, 4, np.random.default_rng(0))
    single = stratified_folds(np.zeros(402, dtype=np.int64), 4, np.random.default_rng(0))
    assert [len(f) for f in multi] == [len(f) for f in single] == [101, 101, 100, 100]


def test_rows_with_no_label_are_spread_as_a_group_of_their_own():
    labels = np.zeros((40, 3), dtype=np.int64)
    labels[4:, 0] = 1
    labels[4:20, 1] = 1
    labels[20:, 2] = 1  # rows 0-3 carry no label
    folds = stratified_folds(labels, 4, np.random.default_rng(1))
    assert [int(np.isin(np.arange(4), f).sum()) for f in folds] == [1, 1, 1, 1]
    _, held = stratified_split(labels, 0.5, np.random.default_rng(1))
    assert np.isin(np.arange(4), held).sum() == 2


def test_cuts_are_seeded():
    labels = multi_hot()
    for cut in (
        lambda rng: stratified_split(labels, 0.25, rng)[1],
        lambda rng: stratified_subset(labels, 50, rng),
        lambda rng: np.concatenate(stratified_folds(labels, 3, rng)),
    ):
        a, b, c = cut(np.random.default_rng(7)), cut(np.random.default_rng(7)), cut(np.random.default_rng(8))
        assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_small_hold_outs_follow_the_single_label_rule():
    """At least one row held out of two or more, none where the fraction is 0."""
    labels = np.array([[1, 0], [1, 1], [0, 1]])
    kept, held = stratified_split(labels, 0.1, np.random.default_rng(0))
    assert len(held) == 1 and len(kept) == 2
    kept, held = stratified_split(labels, 0.0, np.random.default_rng(0))
    assert kept.tolist() == [0, 1, 2] and held.tolist() == []
    assert stratified_subset(labels, 5, np.random.default_rng(0)).tolist() == [0, 1, 2]


def test_part_sizes_must_cover_the_rows():
    with pytest.raises(ValueError, match="add up"):
        iterative_parts(multi_hot(), [100, 200], np.random.default_rng(0))

"""Stratified, seeded splits: disjoint, complete, proportional, reproducible."""

import numpy as np

from yingshe.data.splits import Split, stratified_folds, stratified_split, stratified_subset


def labels():
    return np.repeat(np.arange(5), [100, 50, 20, 7, 1])


def test_split_is_disjoint_complete_and_stratified(rng):
    y = labels()
    kept, held = stratified_split(y, 0.2, rng)
    assert len(np.intersect1d(kept, held)) == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(y)))
    assert np.bincount(y[held], minlength=5).tolist() == [20, 10, 4, 1, 0]


def test_split_is_reproducible_from_the_seed():
    y = labels()
    a = stratified_split(y, 0.3, np.random.default_rng(7))
    b = stratified_split(y, 0.3, np.random.default_rng(7))
    c = stratified_split(y, 0.3, np.random.default_rng(8))
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])


def test_subset_has_the_exact_count_and_the_class_proportions(rng):
    y = labels()
    chosen = stratified_subset(y, 89, rng)
    assert len(chosen) == len(np.unique(chosen)) == 89
    counts = np.bincount(y[chosen], minlength=5)
    assert abs(counts[0] - 50) <= 1 and abs(counts[1] - 25) <= 1
    assert np.array_equal(stratified_subset(y, 1000, rng), np.arange(len(y)))


def test_split_subset_keeps_images_and_labels_aligned():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(2, 1)
    split = Split(np.arange(10) % 2, images=images)
    sub = split.subset(np.array([3, 8]))
    assert sub.images[:, 0, 0, 0].tolist() == [3, 8] and sub.labels.tolist() == [1, 0]


def test_single_label_cuts_are_pinned():
    """Values computed before multi-label data got its own cut: saved runs rely on these indices."""
    y = np.repeat(np.arange(3), [6, 4, 3])
    assert stratified_split(y, 0.3, np.random.default_rng(5))[1].tolist() == [1, 4, 6, 12]
    assert stratified_subset(y, 7, np.random.default_rng(5)).tolist() == [1, 2, 4, 6, 9, 10, 12]
    folds = stratified_folds(y, 3, np.random.default_rng(5))
    assert [f.tolist() for f in folds] == [[1, 3, 6, 7, 11], [4, 5, 9, 12], [0, 2, 8, 10]]

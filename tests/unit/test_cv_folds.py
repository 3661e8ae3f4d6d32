"""Stratified k-fold cuts of the training pool: disjoint, covering, balanced, seeded, and how a
fold becomes a run's validation split (no real data: a synthetic in-memory source)."""

import numpy as np
import pytest

from yingshe.config import DataConfig
from yingshe.data.dataset import choose_splits
from yingshe.data.splits import SourceData, Split, stratified_folds
from yingshe.errors import YingsheError
from yingshe.tune.cv import mean_std


def unbalanced_labels() -> np.ndarray:
    return np.repeat(np.arange(4), [50, 31, 12, 7])  # 100 images, class sizes not divisible by 3


def test_folds_are_disjoint_cover_the_pool_and_keep_class_shares():
    labels = unbalanced_labels()
    folds = stratified_folds(labels, 3, np.random.default_rng(0))
    joined = np.concatenate(folds)
    assert len(joined) == len(set(joined.tolist())) == len(labels), "disjoint and covering"
    assert sorted(joined.tolist()) == list(range(len(labels)))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for cls, size in enumerate([50, 31, 12, 7]):
        counts = [int((labels[f] == cls).sum()) for f in folds]
        assert max(counts) - min(counts) <= 1 and sum(counts) == size, (cls, counts)


def test_folds_are_seeded():
    labels = unbalanced_labels()
    a = stratified_folds(labels, 4, np.random.default_rng(7))
    b = stratified_folds(labels, 4, np.random.default_rng(7))
    c = stratified_folds(labels, 4, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("k", [1, 0, 101])
def test_impossible_fold_counts_are_refused(k):
    with pytest.raises(ValueError, match="folds"):
        stratified_folds(unbalanced_labels(), k, np.random.default_rng(0))


def source(n_train: int = 120, n_test: int = 40) -> SourceData:
    """Images whose single pixel value is their index, so subsets can be traced back."""
    rng = np.random.default_rng(1)
    train = np.arange(n_train, dtype=np.uint8).reshape(-1, 1, 1, 1)
    test = np.arange(n_test, dtype=np.uint8).reshape(-1, 1, 1, 1)
    return SourceData(
        "synthetic",
        ["a", "b", "c"],
        {
            "train": Split(rng.integers(0, 3, n_train), images=train),
            "test": Split(rng.integers(0, 3, n_test), images=test),
        },
    )


def ids(split: Split) -> set[int]:
    return set(split.images.ravel().tolist())


def test_a_fold_run_holds_out_its_fold_and_the_k_runs_cover_the_limited_pool():
    data = source()
    held, pools = [], []
    for fold in (1, 2, 3):
        cfg = DataConfig(limit_train=90, cv_folds=3, cv_fold=fold)
        train, val, test, notes = choose_splits(data, cfg, 0)
        assert not ids(train) & ids(val), "no image is both trained on and held out"
        assert len(val) == 30 and any("fold" in n for n in notes)
        held.append(ids(val))
        pools.append(ids(train) | ids(val))
        assert len(test) == 40, "the test split is untouched by cross-validation"
    assert pools[0] == pools[1] == pools[2] and len(pools[0]) == 90, "every fold cuts the same pool"
    assert not (held[0] & held[1] or held[0] & held[2] or held[1] & held[2]), "held-out folds are disjoint"
    assert held[0] | held[1] | held[2] == pools[0], "and together they are the pool"


@pytest.mark.parametrize(("folds", "fold"), [(3, 0), (3, 4), (1, 1), (500, 1)])
def test_a_bad_fold_choice_is_a_clear_error(folds, fold):
    with pytest.raises(YingsheError, match="fold"):
        choose_splits(source(), DataConfig(cv_folds=folds, cv_fold=fold), 0)


def test_mean_and_sample_std_over_folds():
    rows = [{"accuracy": 0.7, "loss": 1.0}, {"accuracy": 0.8, "loss": 0.5}, {"accuracy": 0.9, "loss": 0.0}]
    mean, std = mean_std(rows)
    assert mean["accuracy"] == pytest.approx(0.8) and std["accuracy"] == pytest.approx(0.1)  # ddof=1
    assert mean["loss"] == pytest.approx(0.5) and std["loss"] == pytest.approx(0.5)
    assert "top5_accuracy" not in mean, "only figures every fold has are aggregated"

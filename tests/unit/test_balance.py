"""Class imbalance: the long-tailed profile, class weights, the balanced sampler and balanced
accuracy, on the real Fashion-MNIST training labels."""

import gzip

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, recall_score

from yingshe.data.curate import long_tail, long_tail_counts
from yingshe.data.loader import EpochBatches, EpochShuffle
from yingshe.data.splits import Split
from yingshe.evaluate.metrics import Predictions, full_metrics
from yingshe.train.balance import build_loss, class_weights, sample_weights


def fashion_labels(fashion_dir) -> np.ndarray:
    with gzip.open(fashion_dir / "train-labels-idx1-ubyte.gz", "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=8).astype(np.int64)


def long_tailed(fashion_dir, ratio=100.0) -> np.ndarray:
    labels = fashion_labels(fashion_dir)
    split = Split(labels, images=np.zeros((len(labels), 1, 1, 1), dtype=np.uint8))
    return long_tail(split, 10, ratio, np.random.default_rng(0)).labels


def test_long_tail_follows_the_cifar10_lt_profile(fashion_dir):
    counts = np.bincount(long_tailed(fashion_dir), minlength=10)
    assert counts.tolist() == long_tail_counts(6000, 10, 100.0).tolist()
    assert counts[0] == 6000 and counts[-1] == 60  # ratio 100 between head and tail
    assert np.all(np.diff(counts) < 0)


def test_class_weights_give_every_class_the_same_total_weight(fashion_dir):
    labels = long_tailed(fashion_dir)
    weights = class_weights(labels, 10)
    totals = np.bincount(labels, minlength=10) * weights
    np.testing.assert_allclose(totals, len(labels) / 10)


def test_weighted_loss_is_the_class_weighted_mean(fashion_dir):
    labels = long_tailed(fashion_dir)[::50]
    logits = torch.randn(len(labels), 10, generator=torch.Generator().manual_seed(0))
    targets = torch.from_numpy(labels)
    loss = build_loss("weights", labels, 10)(logits, targets)
    w = torch.tensor(class_weights(labels, 10), dtype=torch.float32)[targets]
    per_image = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(loss, (w * per_image).sum() / w.sum())
    soft = torch.nn.functional.one_hot(targets, 10).float()  # mixup targets take the same path
    torch.testing.assert_close(build_loss("weights", labels, 10)(logits, soft), loss)


def test_sampler_draws_classes_equally_often(fashion_dir):
    labels = long_tailed(fashion_dir)
    sampler = EpochShuffle(len(labels), seed=0, weights=sample_weights(labels, 10))
    drawn = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn.append(labels[sampler.order().numpy()])
    frequencies = np.bincount(np.concatenate(drawn), minlength=10) / (3 * len(labels))
    np.testing.assert_allclose(frequencies, 0.1, atol=0.01)  # the tail is 0.3% of the data
    sampler.set_epoch(0)
    assert torch.equal(
        sampler.order(), EpochShuffle(len(labels), 0, weights=sample_weights(labels, 10)).order()
    )


def test_ranks_split_one_balanced_draw_between_them(fashion_dir):
    """Under torchrun (`rank` of `world`) each rank takes every world-th draw of the epoch's one
    sequence, as DistributedSampler does: the ranks take different draws, together exactly the
    draws of one process, batch by batch (a global batch of 64 is the ranks' batches of
    64 / world), and each rank's share is class-balanced by itself."""
    labels = long_tailed(fashion_dir)
    weights = sample_weights(labels, 10)
    one = EpochBatches(EpochShuffle(len(labels), 7, weights=weights), 64, merge_tail=True)
    for world in (2, 4):
        shuffles = [EpochShuffle(len(labels), 7, rank=r, world=world, weights=weights) for r in range(world)]
        ranks = [EpochBatches(shuffle, 64 // world, merge_tail=True) for shuffle in shuffles]
        for epoch in (1, 2):
            for batches in (one, *ranks):
                batches.sampler.set_epoch(epoch)
            shares = [b.sampler.order() for b in ranks]
            assert [len(s) for s in shares] == [len(b.sampler) for b in ranks]
            assert sum(len(s) for s in shares) == len(labels)
            assert not torch.equal(shares[0][:100], shares[1][:100])  # not the same draws twice
            steps = zip(one.batches(), *(b.batches() for b in ranks), strict=True)  # as many steps
            for whole, *parts in steps:  # each global batch is the ranks' batches together
                assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist())
            for share in shares:
                frequencies = np.bincount(labels[share.numpy()], minlength=10) / len(share)
                np.testing.assert_allclose(frequencies, 0.1, atol=0.015)  # the tail is 0.3% of the data


def test_logit_adjustment_shifts_by_the_log_prior(fashion_dir):
    labels = long_tailed(fashion_dir)
    logits = torch.zeros(4, 10)
    targets = torch.tensor([0, 3, 6, 9])
    prior = np.bincount(labels, minlength=10) / len(labels)
    expected = torch.nn.functional.cross_entropy(logits + torch.log(torch.tensor(prior)).float(), targets)
    torch.testing.assert_close(build_loss("logit-adjust", labels, 10)(logits, targets), expected)


def test_balanced_accuracy_agrees_with_scikit_learn(fashion_dir):
    labels = torch.from_numpy(long_tailed(fashion_dir)[::20])
    logits = torch.randn(len(labels), 10, generator=torch.Generator().manual_seed(1))
    logits[torch.arange(len(labels)), labels] += 1.5  # better than chance, unevenly by class
    figures = full_metrics(Predictions(logits, labels), [str(i) for i in range(10)])
    expected = balanced_accuracy_score(labels.numpy(), logits.argmax(1).numpy())
    assert abs(figures["balanced_accuracy"] - expected) < 1e-6
    per_class = recall_score(labels.numpy(), logits.argmax(1).numpy(), average=None)
    np.testing.assert_allclose([row["recall"] for row in figures["per_class"]], per_class, atol=1e-6)

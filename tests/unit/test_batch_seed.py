"""Per-batch draws in DataLoader workers (`loader.batch_seed`): a function of the run's seed, the
batch's epoch, number and images, never of the worker's own generator."""

import numpy as np
import torch

from yingshe.data.loader import IndexBatch, SplitDataset, batch_seed
from yingshe.data.splits import Split


def draws(image: torch.Tensor) -> torch.Tensor:
    """A stand-in per-image policy: its output is the generator's next draw."""
    return torch.rand(1).expand_as(image.float())


def arrays_split(count: int = 6) -> Split:
    images = np.zeros((count, 4, 4, 1), dtype=np.uint8)
    return Split(images=images, labels=np.arange(count) % 2)


def test_a_policy_draws_per_batch_from_its_seed_and_leaves_the_caller_s_generator_alone():
    dataset = SplitDataset(arrays_split(), 4, 1, transform=draws, seed=3)
    batch = IndexBatch([0, 1, 2], epoch=1, number=0)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = [item[0][0, 0, 0].item() for item in dataset.__getitems__(batch)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    torch.manual_seed(99)  # another worker's state: no effect
    assert [item[0][0, 0, 0].item() for item in dataset.__getitems__(batch)] == first
    assert len(set(first)) == 3  # each image its own draw
    for other in (IndexBatch([0, 1, 2], 2, 0), IndexBatch([0, 1, 2], 1, 1), IndexBatch([3, 4, 5], 1, 0)):
        assert [item[0][0, 0, 0].item() for item in dataset.__getitems__(other)] != first
    other_seed = SplitDataset(arrays_split(), 4, 1, transform=draws, seed=4).__getitems__(batch)
    assert [item[0][0, 0, 0].item() for item in other_seed] != first


def test_batch_seeds_take_any_run_seed_and_plain_lists():
    assert batch_seed(-3, [1, 2]) == batch_seed(2**64 - 3, [1, 2])  # a negative seed, modulo 2**64
    assert batch_seed(0, [1, 2]) == batch_seed(0, IndexBatch([1, 2], 0, 0))
    assert 0 <= batch_seed(7, [5]) < 2**64

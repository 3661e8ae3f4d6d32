"""Shards served to DataLoader workers and distributed ranks, and WebDataset shards, on real images."""

from pathlib import Path

import numpy as np
import pytest
import torch

from yingshe.config import AugmentConfig
from yingshe.data.augment import BatchAugment, Normalize
from yingshe.data.decode import decode_many
from yingshe.data.loader import DeviceBatches, make_batches
from yingshe.data.pack import prepare
from yingshe.data.sources import read_source
from yingshe.data.stream import PackedBatches, ShardStream, StreamBatches
from yingshe.data.webdataset import read_webdataset, write_webdataset

SHARD_OF_50 = 50 * 32 * 32 * 3 / 2**20


@pytest.fixture(scope="module")
def prepared_split(cifar_folder, tmp_path_factory):
    """The 400 real training images of the CIFAR slice in 8 prepared shards of 50."""
    out = tmp_path_factory.mktemp("prepared")
    prepare(read_source(cifar_folder), out, 32, 3, workers=1, shard_mb=SHARD_OF_50)
    return read_source(out).splits["train"]


@pytest.fixture(scope="module")
def wds_split(cifar_folder, tmp_path_factory):
    """The same 400 images as WebDataset tar shards of 60 samples (7 shards, the last short)."""
    out = tmp_path_factory.mktemp("wds")
    write_webdataset(read_source(cifar_folder), out, maxcount=60)
    return read_source(out).splits["train"]


def expected_images(split, index: np.ndarray) -> np.ndarray:
    if split.packed is not None:
        return split.packed.take(index)
    return decode_many([split.files.read(int(i)) for i in index], 32, 3)[0]


@pytest.mark.parametrize("kind", ["packed", "webdataset"])
def test_two_workers_and_two_ranks_see_every_sample_once_per_epoch(kind, prepared_split, wds_split):
    split = prepared_split if kind == "packed" else wds_split
    orders = []
    for epoch in (1, 2):
        seen = []
        for rank in (0, 1):
            stream = ShardStream(split, 32, 3, 32, shuffle=True, seed=7, rank=rank, world=2, buffer_images=64)
            batches = StreamBatches(stream, workers=2, merge_tail=False, train=False)
            batches.set_epoch(epoch)
            got = list(batches)
            assert len(got) == len(batches)
            for batch in got:  # each image comes with its own label and pixels
                index = batch.index.numpy()
                assert np.array_equal(batch.labels.numpy(), split.labels[index])
                assert np.array_equal(batch.images.permute(0, 2, 3, 1).numpy(), expected_images(split, index))
            seen.append(torch.cat([b.index for b in got]))
        everything = torch.cat(seen)
        assert sorted(everything.tolist()) == list(range(len(split)))  # every sample exactly once
        assert abs(len(seen[0]) - len(seen[1])) <= 2  # ranks share the work evenly
        orders.append(everything)
    assert not torch.equal(orders[0], orders[1])  # a new order each epoch


def test_training_streams_give_every_rank_the_same_number_of_steps(prepared_split):
    lengths = []
    for rank in (0, 1, 2):
        stream = ShardStream(
            prepared_split, 32, 3, 16, shuffle=True, seed=1, rank=rank, world=3, buffer_images=64
        )
        batches = StreamBatches(stream, workers=2, merge_tail=True, train=True)
        got = list(batches)
        assert len(got) == len(batches)
        lengths.append(len(got))
    assert len(set(lengths)) == 1


@pytest.mark.parametrize("window_mb", [0.2, 256])  # a window of ~2 shards, and the whole split
def test_packed_batches_split_an_epoch_across_ranks_without_overlap(prepared_split, window_mb):
    split = prepared_split.subset(np.arange(3, 397, 1))  # a view, as after a hold-out
    orders = []
    for epoch in (1, 2):
        seen = []
        for rank in (0, 1):
            batches = PackedBatches(split, 48, shuffle=True, seed=3, rank=rank, world=2, window_mb=window_mb)
            batches.set_epoch(epoch)
            got = list(batches)
            assert len(got) == len(batches)
            for batch in got:
                index = batch.index.numpy()
                assert np.array_equal(batch.labels.numpy(), split.labels[index])
                assert np.array_equal(batch.images.permute(0, 2, 3, 1).numpy(), split.packed.take(index))
            seen.append(torch.cat([b.index for b in got]))
        assert sorted(torch.cat(seen).tolist()) == list(range(len(split)))
        orders.append(torch.cat(seen))
    assert not torch.equal(orders[0], orders[1])


def test_evaluation_order_is_the_split_order(prepared_split):
    batches = make_batches(prepared_split, 32, 3, 64, train=False)
    assert isinstance(batches, PackedBatches)
    assert torch.cat([b.index for b in batches]).tolist() == list(range(len(prepared_split)))


def test_device_batches_augment_prepared_data(prepared_split):
    augment = BatchAugment(AugmentConfig(crop_padding=4, hflip=True, erasing=0.5), 32, True, 10)
    batches = DeviceBatches(
        make_batches(prepared_split, 32, 3, 100, train=True, seed=0),
        prepared_split,
        torch.device("cpu"),
        Normalize([0.5] * 3, [0.25] * 3),
        augment,
    )
    batches.set_epoch(1)
    shapes = [(x.shape, x.dtype, y.shape) for x, y, _ in batches]
    assert shapes == [((100, 3, 32, 32), torch.float32, (100,))] * 4


def test_webdataset_written_from_a_folder_reads_back_byte_for_byte(cifar_folder, tmp_path):
    source = read_source(cifar_folder)
    summary = write_webdataset(source, tmp_path / "wds", maxcount=150)
    assert summary["splits"]["train"] == {
        "samples": 400,
        "shards": ["train-000000.tar", "train-000001.tar", "train-000002.tar"],
    }
    back = read_webdataset(tmp_path / "wds")
    assert back.classes == source.classes
    for name, split in source.splits.items():
        shards = back.splits[name]
        np.testing.assert_array_equal(shards.labels, split.labels)
        assert all(shards.files.read(i) == split.files.read(i) for i in range(len(split)))
    single = read_source(tmp_path / "wds" / "test-000000.tar")  # one shard is a source too
    assert list(single.splits) == ["train"] and len(single.splits["train"]) == 150


def test_decoded_sources_become_lossless_webdataset_samples(tmp_path):
    from yingshe.data.sources import read_digits

    digits = read_digits()
    digits.splits = {"train": digits.splits["train"].subset(np.arange(0, 1797, 9))}
    write_webdataset(digits, tmp_path / "wds")
    back = read_source(tmp_path / "wds").splits["train"]
    images, ok, _ = decode_many([back.files.read(i) for i in range(len(back))], 8, 1)
    assert ok.all() and np.array_equal(images, digits.splits["train"].images)
    np.testing.assert_array_equal(back.labels, digits.splits["train"].labels)


def test_webdataset_prepares_to_the_same_pixels_as_the_folder(
    cifar_folder, wds_split, prepared_split, tmp_path
):
    wds = read_source(Path(wds_split.files.archives[0]).parent)
    prepare(wds, tmp_path / "p", 32, 3, workers=1)
    from_wds = read_source(tmp_path / "p").splits["train"]
    everything = np.arange(len(prepared_split))
    assert np.array_equal(from_wds.packed.take(everything), prepared_split.packed.take(everything))
    np.testing.assert_array_equal(from_wds.labels, prepared_split.labels)

"""Batches of uint8 images for training and evaluation.

Two paths yield the same `Batch`:
- in-memory splits (IDX, CIFAR, digits) are indexed as one uint8 tensor, no workers, no per-sample
  Python: the batch is a single gather;
- file splits (folders, tars, CSV) decode in DataLoader worker processes. A file that fails to
  decode comes back flagged (`ok` False) instead of raising, so one bad JPEG never kills an epoch;
  the consumer drops it and records its name.
`DeviceBatches` then moves a batch to the device, augments it there and normalises it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from yingshe.data.augment import BatchAugment, Normalize
from yingshe.data.batch import Batch, BatchSource, default_workers
from yingshe.data.decode import decode_many
from yingshe.data.images import UnreadableImage, centre_crop, decode_image
from yingshe.data.splits import Split
from yingshe.data.stream import PackedBatches, StreamBatches, shard_batches

log = logging.getLogger(__name__)

__all__ = ["Batch", "BatchSource", "default_workers"]  # re-exported: older imports name loader


class EpochShuffle(Sampler[int]):
    """A permutation per epoch from (seed, epoch), sharded across ranks like DistributedSampler,
    so a resumed run sees the same order as an uninterrupted one."""

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        weights: np.ndarray | None = None,
    ):
        self.size, self.seed, self.shuffle, self.rank, self.world = size, seed, shuffle, rank, world
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> Tensor:
        if not self.shuffle:
            order = torch.arange(self.size)
        elif self.weights is not None:  # train.balance=sampler: draws with replacement, ∝ weights
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        else:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world))


class EpochBatches(Sampler[list[int]]):
    """Batches of indices from an `EpochShuffle`. With `merge_tail`, a last batch smaller than half
    the batch size joins the one before it instead of being dropped, so every image is seen every
    epoch and no training batch is so small that batch norm fails on it."""

    def __init__(self, sampler: EpochShuffle, batch_size: int, merge_tail: bool) -> None:
        self.sampler, self.batch_size, self.merge_tail = sampler, batch_size, merge_tail
        self.skip = 0  # batches of the epoch to leave out at the start (a resumed epoch)

    def bounds(self) -> list[tuple[int, int]]:
        n, size = len(self.sampler), self.batch_size
        starts = list(range(0, n, size))
        if self.merge_tail and len(starts) > 1 and n - starts[-1] < size / 2:
            starts.pop()
        return [(start, starts[i + 1] if i + 1 < len(starts) else n) for i, start in enumerate(starts)]

    def __len__(self) -> int:
        return len(self.bounds())

    def batches(self) -> Iterator[Tensor]:
        order = self.sampler.order()
        for start, stop in self.bounds()[self.skip :]:
            yield order[start:stop]

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.sampler.epoch  # read once: the order of `batches` is fixed at its start too
        for number, batch in enumerate(self.batches(), start=self.skip):
            yield IndexBatch(batch.tolist(), epoch, number)


class IndexBatch(list):
    """A batch's indices as the DataLoader hands them to `__getitems__`, with the epoch they were
    drawn for and the batch's number in it: a worker's copy of the dataset never sees
    `set_epoch`, and per-batch draws seeded from them are the same in a resumed run (whose
    skipped batches keep their numbers; `photo.PhotoCrops`)."""

    def __init__(self, indices: list[int], epoch: int, number: int) -> None:
        super().__init__(indices)
        self.epoch, self.number = epoch, number


def batch_seed(seed: int, indices: Sequence[int]) -> int:
    """A 64-bit seed for one batch's random draws in a worker, from the run's seed, the batch's
    epoch and number (`IndexBatch`; 0 for a plain list) and its images: the same batch draws
    alike whichever worker takes it, in an uninterrupted run and after `--resume` (the workers,
    and their own generators, restart with it). A negative seed is taken modulo 2**64."""
    epoch, number = getattr(indices, "epoch", 0), getattr(indices, "number", 0)
    entropy = [seed & 0xFFFF_FFFF_FFFF_FFFF, epoch, number, len(indices), *indices]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


class SplitDataset(Dataset):
    """One decoded, fitted image per item, for worker processes; never raises on a bad file.
    A per-image `transform` (RandAugment, TrivialAugment: torch's generator) draws each batch from
    `batch_seed(seed, indices)`, so a resumed run augments as the uninterrupted one did."""

    def __init__(self, split: Split, size: int, channels: int, transform=None, seed: int = 0) -> None:
        self.split, self.size, self.channels, self.transform = split, size, channels, transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, bool]:
        ok = True
        if self.split.images is not None:
            image = torch.from_numpy(self.split.images[index]).permute(2, 0, 1)
        elif self.split.packed is not None:
            image = torch.from_numpy(self.split.packed.take(np.array([index]))[0]).permute(2, 0, 1)
        else:
            try:
                array = decode_image(self.split.files.read(index), self.size, self.channels)
                image = torch.from_numpy(array).permute(2, 0, 1)
            except (UnreadableImage, OSError):
                image = torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8)
                ok = False
        if self.transform is not None and ok:
            image = self.transform(image)
        return image.contiguous(), self.split.labels[index], index, ok  # int64, or a multi-hot row

    def __getitems__(self, indices: list[int]) -> Batch | list[tuple[Tensor, int, int, bool]]:
        """A whole batch (DataLoader calls this with a batch sampler): files are decoded together,
        by torchvision's batched JPEG decoder where that is exact (data/decode.py), 3-4× Pillow."""
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):  # the caller's generator is left as it was
                torch.manual_seed(batch_seed(self.seed, indices))
                return [self[i] for i in indices]
        if self.split.files is None:
            return [self[i] for i in indices]
        blobs = []
        for i in indices:
            try:
                blobs.append(self.split.files.read(i))
            except OSError:
                blobs.append(None)  # flagged not ok; DeviceBatches names the reason
        images, ok, _ = decode_many(blobs, self.size, self.channels)
        return Batch(
            torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),  # NCHW here, in the worker
            torch.from_numpy(self.split.labels[indices]),
            torch.tensor(indices),
            torch.from_numpy(ok),
        )


def _collate(items: list[tuple[Tensor, int, int, bool]] | Batch) -> Batch:
    if isinstance(items, Batch):  # decoded as a batch by SplitDataset.__getitems__
        return items
    images, labels, index, ok = zip(*items, strict=True)
    labels = torch.from_numpy(np.stack(labels).astype(np.int64))  # (B,) or multi-label (B, K)
    return Batch(torch.stack(images), labels, torch.tensor(index), torch.tensor(ok))


class ArrayBatches:
    """Batches gathered from an in-memory uint8 tensor: the fast path for decoded datasets."""

    def __init__(self, split: Split, batches: EpochBatches):
        self.images = torch.from_numpy(np.ascontiguousarray(split.images)).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(split.labels)
        self.batch_sampler = batches
        self.sampler = batches.sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def skip_batches(self, count: int) -> None:
        self.batch_sampler.skip = count

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Batch]:
        for idx in self.batch_sampler.batches():
            yield Batch(
                self.images[idx].contiguous(),
                self.labels[idx],
                idx,
                torch.ones(len(idx), dtype=torch.bool),
            )


class FileBatches:
    """Batches decoded by a DataLoader's worker processes (from `SplitDataset`, or from `dataset`
    where another per-batch reader serves the same sampler, e.g. random-resized-crop's)."""

    def __init__(
        self,
        split: Split,
        size: int,
        channels: int,
        batches: EpochBatches,
        workers: int,
        transform=None,
        dataset: Dataset | None = None,
    ):
        self.sampler, self.batch_sampler = batches.sampler, batches
        self.loader = DataLoader(
            dataset
            if dataset is not None
            else SplitDataset(split, size, channels, transform, batches.sampler.seed),
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=_collate,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            # its own generator for the workers' base seed: drawn from the global one, it would
            # shift the augmentation's draws by one per epoch and a resumed run's with them
            generator=torch.Generator().manual_seed(batches.sampler.seed),
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def skip_batches(self, count: int) -> None:
        self.batch_sampler.skip = count

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)


def make_batches(
    split: Split,
    size: int,
    channels: int,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    workers: int | None = None,
    transform=None,
    rank: int = 0,
    world: int = 1,
    stream: bool = False,
    weights: np.ndarray | None = None,
) -> ArrayBatches | FileBatches | PackedBatches | StreamBatches:
    """Pick the fastest path that can serve `split` with the requested per-image transform.

    Prepared (packed) splits, and any split with `stream`, are served by data/stream.py.
    `weights` (train.balance=sampler) draws each epoch's images with replacement, ∝ weights;
    prepared splits are then read by index through SplitDataset instead."""
    if stream and (transform is not None or weights is not None):
        why = (
            "train.balance=sampler draws images by index"
            if weights is not None
            else ("augment.policy transforms each decoded image")
        )
        log.warning("data.stream is ignored for this split: %s, which a streamed shard cannot serve", why)
        stream = False
    if (split.packed is not None or stream) and transform is None and weights is None:
        options = dict(train=train, seed=seed, workers=workers, rank=rank, world=world, stream=stream)
        return shard_batches(split, size, channels, batch_size, **options)
    sampler = EpochShuffle(len(split), seed, shuffle=train, rank=rank, world=world, weights=weights)
    batches = EpochBatches(sampler, batch_size, merge_tail=train)
    if split.images is not None and transform is None:
        return ArrayBatches(split, batches)
    workers = default_workers() if workers is None else workers
    if split.images is not None:
        workers = min(workers, 2)  # only the per-image policy runs there
    return FileBatches(split, size, channels, batches, workers, transform)


class DeviceBatches:
    """Moves batches to the device, drops undecodable images, augments and normalises.

    Yields (inputs float (B, C, H, W), targets (B,) int or (B, K) soft, labels (B,) int).
    Multi-label splits yield labels (B, K) 0/1 and targets (B, K) float multi-hot (mixed or not).
    Names of dropped files accumulate in `skipped`. With `crop`, images stored larger (data.crop_pct
    < 1) are centre-cropped to `crop` before anything else (`images.centre_offset`).
    """

    def __init__(
        self,
        batches: BatchSource,
        split: Split,
        device: torch.device,
        normalize: Normalize,
        augment: BatchAugment | None = None,
        channels_last: bool = False,
        strict: bool = False,
        crop: int | None = None,
    ):
        self.batches, self.split, self.device, self.crop = batches, split, device, crop
        self.normalize, self.augment = normalize.to(device), augment
        # only the alternating flip reads the images' positions: copied to the device just for it
        self.wants_index = bool(getattr(augment, "alternate", False))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.strict = strict
        self.skipped: dict[str, str] = {}
        self.position = 0  # batches taken from the source this epoch: what a checkpoint records
        self.pending_skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start `epoch`; with `skip`, leave out its first `skip` source batches unaugmented (a
        resumed epoch), by the source itself where it can (`skip_batches`), else by reading them."""
        self.batches.set_epoch(epoch)
        if self.augment is not None:
            self.augment.set_epoch(epoch)
        skip_at_source = getattr(self.batches, "skip_batches", None)
        if callable(skip_at_source):
            skip_at_source(skip)
            self.position, self.pending_skip = skip, 0
        else:
            self.position, self.pending_skip = 0, skip

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        skip, self.pending_skip = self.pending_skip, 0
        for batch in self.batches:
            self.position += 1
            if self.position <= skip:
                continue
            images, labels, index = batch.images, batch.labels, batch.index
            if not bool(batch.ok.all()):
                self.record_bad(batch.index[~batch.ok])
                images, labels, index = images[batch.ok], labels[batch.ok], index[batch.ok]
                if len(labels) == 0:
                    continue
            if self.crop is not None and images.shape[-1] != self.crop:
                images = centre_crop(images, self.crop).contiguous()
            images, labels = self.to_device(images), self.to_device(labels)
            index = self.to_device(index) if self.wants_index else None
            # a source that normalised as it cropped (packed_crops.PackedCrops) is not normalised twice
            normalize = _as_is if batch.normalized else self.normalize
            if self.augment is not None:
                inputs, targets = self.augment(images, labels, normalize, index)
            else:
                inputs, targets = normalize(images), labels
            if labels.ndim == 2:
                targets = targets.float()
            yield inputs.contiguous(memory_format=self.memory_format), targets, labels

    def to_device(self, tensor: Tensor) -> Tensor:
        """A copy from pageable memory is synchronous whatever non_blocking says: on CUDA the
        tensor is staged in page-locked memory first, so the copy overlaps the previous step's work."""
        cuda = self.device.type == "cuda"
        return (pinned(tensor) if cuda else tensor).to(self.device, non_blocking=cuda)

    def record_bad(self, indices: Tensor) -> None:
        for index in indices.tolist():
            name = self.split.name(index)
            reason = explain_unreadable(self.split, index)
            if self.strict:
                from yingshe.errors import YingsheError

                raise YingsheError(
                    f"unreadable image {reason}",
                    "remove or replace the file, or drop data.strict to skip such files",
                )
            self.skipped[name] = reason


def _as_is(images: Tensor) -> Tensor:
    return images


def pinned(tensor: Tensor) -> Tensor:
    """`tensor` in page-locked host memory (as it is where a DataLoader already pinned it)."""
    return tensor if tensor.is_pinned() else tensor.pin_memory()


def explain_unreadable(split: Split, index: int) -> str:
    """Decode again in this process to get the reason (rare: only for files that failed)."""
    try:
        decode_image(split.files.read(index), 8, 1, split.name(index))
    except (UnreadableImage, OSError) as err:
        return str(err) if split.name(index) in str(err) else f"{split.name(index)}: {err}"
    return f"{split.name(index)}: could not be decoded"

"""Loaders for datasets larger than memory: prepared shards by memory map, and any split as a
stream of sequential shard reads through a shuffle buffer. Both yield `batch.Batch`es.

`PackedBatches` (prepared data, the default): random access in the training process, no workers.
Each epoch visits the shards in a seeded random order, a window of about `window_mb` of images
at a time; inside a window the images are shuffled and each batch is one sorted gather from the
mapped shards. Shards are unmapped as the window moves on, so resident memory is bounded by the
window, whatever the dataset size. A split that fits in one window (CIFAR-10 at 32 px is 150 MB)
gets an exact global shuffle.

`StreamBatches` over a `ShardStream` (`data.stream=true`): shards are read front to back, by
DataLoader workers, through a shuffle buffer, which is what slow or remote storage and WebDataset
tars want. The epoch's shard order is cut into equal contiguous pieces, one per (rank, worker),
so that together they read every image exactly once. The shuffle buffer draws a batch of random
slots at a time and refills them from the stream (vectorised: no per-image Python).

Both split an epoch across distributed ranks without overlap: every rank derives the same order
from (seed, epoch) and takes its own part of it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from yingshe.data.batch import Batch, default_workers
from yingshe.data.decode import decode_many
from yingshe.data.shards import MAX_OPEN_SHARDS, release_pages
from yingshe.data.splits import Split

DEFAULT_WINDOW_MB = 256  # images mapped at once by PackedBatches
DEFAULT_BUFFER_MB = 128  # shuffle buffer of a stream, shared out among its workers
STREAM_CHUNK = 512  # images read (and decoded) per step of a stream
FILE_RUN = 4096  # a "shard" of a split of loose files, for streaming


def batch_bounds(n: int, size: int, merge_tail: bool) -> list[tuple[int, int]]:
    """[start, stop) of each batch of `n` items. With `merge_tail`, a last batch smaller than half
    a batch joins the one before it (as `loader.EpochBatches` does for training)."""
    starts = list(range(0, n, size))
    if merge_tail and len(starts) > 1 and n - starts[-1] < size / 2:
        starts.pop()
    return [(a, starts[i + 1] if i + 1 < len(starts) else n) for i, a in enumerate(starts)]


def to_batch(images: np.ndarray, labels: np.ndarray, index: np.ndarray, ok: np.ndarray) -> Batch:
    """NHWC uint8 arrays → a Batch of contiguous (B, C, H, W) images, as the other loaders give
    (the uint8 transpose is cheap; the float ops after it are 2× slower on a channels-last view)."""
    return Batch(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        torch.from_numpy(np.asarray(index, dtype=np.int64)),
        torch.from_numpy(np.asarray(ok, dtype=bool)),
    )


# --- random access by memory map ----------------------------------------------------------------


class PackedBatches:
    """Window-shuffled batches gathered from a prepared split's memory-mapped shards."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        merge_tail: bool = False,
        rank: int = 0,
        world: int = 1,
        window_mb: float = DEFAULT_WINDOW_MB,
    ) -> None:
        if split.packed is None:
            raise ValueError("PackedBatches serves prepared (packed) splits only")
        self.split, self.packed, self.labels = split, split.packed, split.labels
        self.batch_size, self.shuffle, self.seed, self.merge_tail = batch_size, shuffle, seed, merge_tail
        self.rank, self.world = rank, world
        self.window_images = max(batch_size, int(window_mb * (1 << 20)) // self.packed.image_bytes)
        self.groups = self._group_by_shard()
        self.epoch = 0

    def _group_by_shard(self) -> list[np.ndarray] | None:
        """View positions per shard for a subset view; None for a whole split (ranges suffice)."""
        if self.packed.index is None:
            return None
        shard_ids = self.packed.shard_of(self.packed.index)
        order = np.argsort(shard_ids, kind="stable")
        bounds = np.searchsorted(shard_ids[order], np.arange(len(self.packed.shards) + 1))
        return [order[a:b] for a, b in itertools.pairwise(bounds)]

    def _members(self, shard: int) -> np.ndarray:
        if self.groups is None:
            return np.arange(self.packed.starts[shard], self.packed.starts[shard + 1])
        return self.groups[shard]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def bounds(self) -> list[tuple[int, int]]:
        count = len(range(self.rank, len(self.split), self.world))
        return batch_bounds(count, self.batch_size, self.merge_tail)

    def __len__(self) -> int:
        return len(self.bounds())

    def windows(self) -> Iterator[tuple[np.ndarray, int]]:
        """The epoch's order of view positions, a window at a time, with the number of shards in
        the window. Every rank computes the same windows."""
        rng = np.random.default_rng([self.seed & 0xFFFF_FFFF_FFFF_FFFF, self.epoch])
        n = len(self.packed.shards)
        parts, size = [], 0
        for shard in rng.permutation(n) if self.shuffle else range(n):
            members = self._members(int(shard))
            if not len(members):
                continue
            if parts and size + len(members) > self.window_images:  # stay within the window
                yield self._mix(parts, rng), len(parts)
                parts, size = [], 0
            parts.append(members)
            size += len(members)
        if parts:
            yield self._mix(parts, rng), len(parts)

    def _mix(self, parts: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        positions = np.concatenate(parts)
        if self.shuffle:
            rng.shuffle(positions)
        return positions

    def rank_windows(self) -> Iterator[tuple[np.ndarray, int]]:
        """This rank's share of each window: every world-th position of the epoch's order."""
        offset = 0
        for positions, shards in self.windows():
            yield positions[(self.rank - offset) % self.world :: self.world], shards
            offset += len(positions)

    def parts(self) -> Iterator[tuple[np.ndarray, int, int]]:
        """The epoch's batches as parts of sorted view positions: (positions, batch size, offset of
        the part in its batch). A batch that spans two windows comes as two parts; each part is
        yielded while its window's shards are mapped, so a consumer reads it before they go."""
        sizes = [b - a for a, b in self.bounds()]
        if not sizes:
            return
        done, have = 0, 0
        try:
            for positions, shards in self.rank_windows():
                self.packed.max_open = shards  # a batch that spans windows gathers its first part early
                cursor = 0
                while cursor < len(positions) and done < len(sizes):
                    part = positions[cursor : cursor + sizes[done] - have]
                    cursor += len(part)
                    # order inside a batch is irrelevant; sorted reads are sequential
                    yield np.sort(part), sizes[done], have
                    have += len(part)
                    if have == sizes[done]:
                        done, have = done + 1, 0
                self.release()  # leave the window: its pages leave the resident set
                if done == len(sizes):
                    break
        finally:  # also when the consumer stops early
            self.release()
            self.packed.max_open = MAX_OPEN_SHARDS

    def __iter__(self) -> Iterator[Batch]:
        gathered = []
        with contextlib.closing(self.parts()) as parts:
            for positions, size, offset in parts:
                gathered.append(self._gather(positions))
                if offset + len(positions) == size:
                    yield to_batch(*(np.concatenate(x) for x in zip(*gathered, strict=True)))
                    gathered = []

    def release(self) -> None:
        self.packed.release()
        release_pages(self.labels)

    def _gather(self, positions: np.ndarray) -> tuple[np.ndarray, ...]:
        positions = np.sort(positions)  # order inside a batch is irrelevant; sorted reads are sequential
        images = self.packed.take(positions)
        labels = np.asarray(self.labels[positions], dtype=np.int64)
        return images, labels, positions, np.ones(len(positions), dtype=bool)


# --- sequential streaming -----------------------------------------------------------------------


def shard_runs(split: Split) -> list[tuple[int, int]]:
    """[start, stop) ranges of view positions that each lie in one shard (prepared shard, tar
    archive) and are read front to back; loose files are cut into runs of FILE_RUN."""
    n = len(split)
    if split.packed is not None and split.packed.index is None:  # a whole split: its shards
        starts = split.packed.starts
        return [(int(a), int(b)) for a, b in itertools.pairwise(starts) if b > a]
    if split.packed is not None:
        ids = split.packed.shard_of(split.packed.index)
    elif split.files is not None and hasattr(split.files, "archive_ids"):
        ids = split.files.archive_ids
    else:
        ids = np.arange(n) // FILE_RUN
    cuts = [0, *(np.flatnonzero(np.diff(ids)) + 1).tolist(), n] if n else [0]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


class ShuffleBuffer:
    """Uniform draws from a buffer of up to `capacity` images, many at a time: each step draws k
    random slots, emits their images and refills the slots with the next k incoming. Every image
    goes in once and comes out once; capacity 0 passes the stream through in order."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity, self.rng = capacity, rng
        self.arrays: list[np.ndarray] | None = None  # images, labels, index, ok
        self.fill = 0

    def push(self, arrays: tuple[np.ndarray, ...]) -> Iterator[tuple[np.ndarray, ...]]:
        n = len(arrays[0])
        if self.capacity == 0:
            yield arrays
            return
        if self.arrays is None:
            self.arrays = [np.empty((self.capacity, *a.shape[1:]), dtype=a.dtype) for a in arrays]
        pos = 0
        while pos < n:
            room = self.capacity - self.fill
            if room > 0:
                k = min(room, n - pos)
                for buf, a in zip(self.arrays, arrays, strict=True):
                    buf[self.fill : self.fill + k] = a[pos : pos + k]
                self.fill, pos = self.fill + k, pos + k
                continue
            k = min(STREAM_CHUNK, n - pos)
            slots = self.rng.choice(self.capacity, size=k, replace=False)
            out = tuple(buf[slots] for buf in self.arrays)
            for buf, a in zip(self.arrays, arrays, strict=True):
                buf[slots] = a[pos : pos + k]
            pos += k
            yield out

    def flush(self) -> Iterator[tuple[np.ndarray, ...]]:
        if self.arrays is None or self.fill == 0:
            return
        order = self.rng.permutation(self.fill)
        yield tuple(buf[order] for buf in self.arrays)
        self.fill = 0


def regroup(parts: Iterator[tuple], sizes: list[int], cat=np.concatenate) -> Iterator[tuple]:
    """Re-cut a stream of array (or tensor) tuples into consecutive groups of exactly `sizes`; a
    part that already has the wanted size passes through uncopied. Items past the sizes are dropped."""
    pending, have, wanted = [], 0, iter(sizes)
    want = next(wanted, None)
    for part in parts:
        if want is None:
            return
        if have == 0 and len(part[0]) == want:
            yield part
            want = next(wanted, None)
            continue
        pending.append(part)
        have += len(part[0])
        while want is not None and have >= want:
            merged = tuple(cat(x) for x in zip(*pending, strict=True))
            yield tuple(m[:want] for m in merged)
            rest = tuple(m[want:] for m in merged)
            pending, have = ([rest] if len(rest[0]) else []), len(rest[0])
            want = next(wanted, None)
    if want is not None and have:
        yield tuple(cat(x) for x in zip(*pending, strict=True))


class ShardStream(IterableDataset):
    """A split read as a stream of shard runs, cut among (rank, worker) slots; yields Batches."""

    def __init__(
        self,
        split: Split,
        size: int,
        channels: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        buffer_images: int = 0,
        decoder: str = "auto",
    ) -> None:
        self.split, self.size, self.channels, self.batch_size = split, size, channels, batch_size
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self.buffer_images = buffer_images if shuffle else 0
        self.decoder = decoder
        self.runs = shard_runs(split)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def slot_counts(self, slots: int) -> list[int]:
        n = len(self.split)
        return [(k + 1) * n // slots - k * n // slots for k in range(slots)]

    def pieces(self, slot: int, slots: int) -> list[tuple[int, int]]:
        """The view-position ranges of `slot`: its contiguous share of the epoch's run order."""
        rng = np.random.default_rng([self.seed & 0xFFFF_FFFF_FFFF_FFFF, self.epoch])
        order = rng.permutation(len(self.runs)) if self.shuffle else range(len(self.runs))
        n = len(self.split)
        lo, hi = slot * n // slots, (slot + 1) * n // slots
        pieces, offset = [], 0
        for r in order:
            a, b = self.runs[int(r)]
            start, stop = max(lo, offset), min(hi, offset + b - a)
            if start < stop:
                pieces.append((a + start - offset, a + stop - offset))
            offset += b - a
            if offset >= hi:
                break
        return pieces

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot, slots = self.rank * workers + worker, self.world * workers
        rng = np.random.default_rng([self.seed & 0xFFFF_FFFF_FFFF_FFFF, self.epoch, slot, 1])
        buffer = ShuffleBuffer(self.buffer_images, rng)

        def drawn() -> Iterator[tuple]:
            for a, b in self.pieces(slot, slots):
                for c in range(a, b, STREAM_CHUNK):
                    yield from buffer.push(self.read(c, min(b, c + STREAM_CHUNK)))
                self.release()
            yield from buffer.flush()

        n = self.slot_counts(slots)[slot]
        sizes = [self.batch_size] * (n // self.batch_size) + (
            [n % self.batch_size] if n % self.batch_size else []
        )
        for part in regroup(drawn(), sizes):
            yield to_batch(*part)

    def read(self, a: int, b: int) -> tuple[np.ndarray, ...]:
        """(images NHWC, labels, view positions, ok) of view positions [a, b)."""
        split, positions = self.split, np.arange(a, b)
        labels = np.asarray(split.labels[a:b], dtype=np.int64)
        if split.files is None:
            images = split.images[a:b] if split.images is not None else split.packed.take(positions)
            return np.ascontiguousarray(images), labels, positions, np.ones(b - a, dtype=bool)
        files = split.files
        read_range = getattr(files, "read_range", None)
        blobs = read_range(a, b) if read_range else [_read_or_none(files, i) for i in range(a, b)]
        names = [files.name(i) for i in range(a, b)]
        images, ok, _ = decode_many(blobs, self.size, self.channels, names, self.decoder)
        return images, labels, positions, ok

    def release(self) -> None:
        if self.split.packed is not None:
            self.split.packed.release()
        release_pages(self.split.labels)


def _read_or_none(files, i: int) -> bytes | None:
    try:
        return files.read(i)
    except OSError:
        return None


class StreamBatches:
    """Batches of a `ShardStream` read by DataLoader workers, regrouped so that this rank yields
    exactly `len(self)` batches (the same on every rank when training, as DDP needs)."""

    def __init__(self, stream: ShardStream, workers: int, merge_tail: bool, train: bool) -> None:
        self.stream, self.workers, self.merge_tail, self.train = stream, workers, merge_tail, train
        self.loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            prefetch_factor=4 if workers > 0 else None,
            persistent_workers=False,  # fresh workers each epoch see the new epoch number
            generator=torch.Generator().manual_seed(stream.seed),  # not the global one: see FileBatches
        )

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def rank_count(self, rank: int) -> int:
        w = max(1, self.workers)
        return sum(self.stream.slot_counts(self.stream.world * w)[rank * w : (rank + 1) * w])

    def sizes(self) -> list[int]:
        world = self.stream.world
        n = self.rank_count(self.stream.rank)
        if self.train and world > 1:  # equal steps on every rank; the few extra images wait
            n = min(self.rank_count(r) for r in range(world))
        return [b - a for a, b in batch_bounds(n, self.stream.batch_size, self.merge_tail)]

    def __len__(self) -> int:
        return len(self.sizes())

    def __iter__(self) -> Iterator[Batch]:
        parts = ((b.images, b.labels, b.index, b.ok) for b in self.loader)
        for images, labels, index, ok in regroup(parts, self.sizes(), cat=torch.cat):
            yield Batch(images, labels, index, ok)


def shard_batches(
    split: Split,
    size: int,
    channels: int,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    workers: int | None = None,
    rank: int = 0,
    world: int = 1,
    stream: bool = False,
) -> PackedBatches | StreamBatches:
    """The loader for a prepared split (PackedBatches) or, with `stream`, for any split read as a
    stream. Decoded data streams in this process unless workers are asked for; files need them."""
    if not stream:
        return PackedBatches(
            split, batch_size, shuffle=train, seed=seed, merge_tail=train, rank=rank, world=world
        )
    if workers is None:
        workers = 0 if split.files is None else default_workers()
    per_worker = (DEFAULT_BUFFER_MB << 20) // (size * size * channels) // max(1, workers)
    source = ShardStream(
        split,
        size,
        channels,
        batch_size,
        shuffle=train,
        seed=seed,
        rank=rank,
        world=world,
        buffer_images=max(batch_size, per_worker),
    )
    return StreamBatches(source, workers, merge_tail=train, train=train)

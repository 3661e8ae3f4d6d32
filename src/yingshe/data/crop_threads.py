"""Cutting a batch of crops on this process's threads, each crop normalised into its batch slot.

`packed_crops.PackedCrops` fills one batch at a time: each image's box is resized into the
thread's recycled uint8 crop (`box_resize.BoxResizer`) and, on a CPU run, normalised at once
into its slot of a recycled float batch (`buffers.BufferRing`) while the crop is still in cache:
Normalize's operations (a float copy, then x · scale + (−shift) in one pass), on NHWC memory by
rows of size × C values, so the batch equals `Normalize` of the uint8 crops value for value.
Without `normalize` (a GPU run) the slots are uint8, for the device to normalise.

The images go four at a time to whichever thread asks next, the calling one included, instead
of half to each: an equal split of random boxes leaves one core idle while the other finishes
its larger ones (11% of a batch's time). The resize and arithmetic release the GIL, so the
threads share the cores.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import TypeVar

import torch
from torch import Tensor

from yingshe.data.augment import Normalize
from yingshe.data.batch import image_batch
from yingshe.data.buffers import BufferRing

Job = TypeVar("Job")
PIECE = 4  # images a thread takes at a time: ~1.5 ms of work against ~1 µs to take it


class CropThreads:
    """Batches of (size, size) crops with `channels`, cut by `threads` threads, normalised with
    `normalize` where given, NHWC in memory with `channels_last`, from a ring of `ring` buffers."""

    def __init__(
        self,
        size: int,
        channels: int,
        threads: int,
        normalize: Normalize | None,
        channels_last: bool,
        ring: int = 3,
    ) -> None:
        self.size, self.channels, self.channels_last = size, channels, channels_last
        self.threads = max(1, threads)
        self.norm = None
        if normalize is not None:  # the values Normalize uses: per image (C, 1, 1), or per NHWC row
            if channels_last:
                scale, neg_shift = normalize.row_operands(channels, size)
            else:
                scale, neg_shift = normalize.scale[0], normalize.neg_shift[0]
            self.norm = (scale.detach().cpu(), neg_shift.detach().cpu())
        self.ring = BufferRing(ring, torch.float32 if normalize is not None else torch.uint8)
        self.pool: futures.ThreadPoolExecutor | None = None

    @property
    def normalized(self) -> bool:
        return self.norm is not None

    def batch(self, count: int) -> Tensor:
        """A (count, C, size, size) batch from the ring, to be filled through `slots`."""
        return image_batch(self.ring.take, count, self.channels, self.size, self.channels_last)

    def slots(self, out: Tensor) -> tuple[Tensor, ...]:
        """Each image's place in `out`: normalised on NHWC memory, its rows of size×C values (the
        layout of Normalize's row operands), else its (C, size, size) slot. Views made once a
        batch, since every tensor operation in a thread holds the GIL for its dispatch."""
        if self.norm is not None and self.channels_last:
            return out.permute(0, 2, 3, 1).reshape(len(out), self.size, -1).unbind(0)
        return out.unbind(0)

    def store(self, crop: Tensor, slot: Tensor) -> None:
        """Write the (size, size, C) uint8 `crop` into `slot`, normalised where asked."""
        if self.norm is None:
            slot.copy_(crop.permute(2, 0, 1))
            return
        slot.copy_(crop.view(self.size, -1) if self.channels_last else crop.permute(2, 0, 1))
        torch.addcmul(self.norm[1], slot, self.norm[0], out=slot)

    def run(self, jobs: Sequence[Job], cut: Callable[[Job], None]) -> None:
        """`cut` each job, on all threads; returns once every one is done (re-raising the first
        error), so no thread still writes into the batch after."""
        pieces = [jobs[i : i + PIECE] for i in range(0, len(jobs), PIECE)]
        if self.threads == 1 or len(pieces) < 2:
            for job in jobs:
                cut(job)
            return
        if self.pool is None:
            self.pool = futures.ThreadPoolExecutor(self.threads - 1, thread_name_prefix="yingshe-crop")
        # next() on the shared counter is atomic under the GIL (free-threaded Python would need
        # a lock here)
        taken, helpers = itertools.count(), []
        try:
            helpers += [self.pool.submit(_cut_pieces, pieces, taken, cut) for _ in range(self.threads - 1)]
            _cut_pieces(pieces, taken, cut)
        finally:  # no thread may still write into the batch once this returns, error or not
            futures.wait(helpers)
        for helper in helpers:
            helper.result()  # re-raises a helper's exception here


def _cut_pieces(pieces: list[Sequence[Job]], taken: Iterator[int], cut: Callable[[Job], None]) -> None:
    while (k := next(taken)) < len(pieces):
        for job in pieces[k]:
            cut(job)

"""What every batch source yields, and the contract the trainer holds a batch source to.

Kept apart from loader.py (in-memory and file batches) and stream.py (prepared shards and
streams), which both build on it, so neither imports the other at module level in a cycle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor


@dataclass
class Batch:
    images: Tensor  # (B, C, H, W) uint8
    labels: Tensor  # (B,) int64
    index: Tensor  # (B,) positions in the split
    ok: Tensor  # (B,) bool: False where the image could not be decoded
    normalized: bool = False  # images are float and already normalised (packed_crops.PackedCrops)


@runtime_checkable
class BatchSource(Protocol):
    """An epoch's batches of one split. `set_epoch` fixes the order of the next pass from
    (seed, epoch), so a resumed run sees the order an uninterrupted one would have."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Batch]: ...
    def set_epoch(self, epoch: int) -> None: ...


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def image_batch(
    allocate: Callable[[tuple[int, ...]], Tensor], count: int, channels: int, side: int, channels_last: bool
) -> Tensor:
    """A (count, C, side, side) batch from `allocate(shape)`, NHWC in memory with `channels_last`
    (what a channels-last model takes, and how a crop leaves the uint8 resize: storing it is then
    a plain copy, not a transposing one)."""
    if channels_last:
        return allocate((count, side, side, channels)).permute(0, 3, 1, 2)
    return allocate((count, channels, side, side))

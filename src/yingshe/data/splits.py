"""What a source yields: splits of labelled images, decoded in memory or encoded on disk.

A source either decodes everything at once (IDX, CIFAR pickles, digits: small fixed-size arrays)
or lists encoded images to decode lazily in loader workers (folders, tars, CSV manifests). Both
kinds of `Split` subset and split the same way, so limits and hold-outs work on every format.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from yingshe.data.images import printable_path, read_file
from yingshe.data.iterstrat import iterative_parts


def stat_line(path: str) -> str:
    """A file's identity for a cache key: absolute path, size and modification time."""
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\0missing\n"
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n"


@runtime_checkable
class EncodedImages(Protocol):
    """Random access to the encoded bytes of image files: what every file-backed source type
    (folders, tars, CSV manifests, WebDataset shards) implements.

    `fingerprint` is part of the contract, not probed for: prepared shards are cached under it,
    so a source type that could not say when its files changed would reuse stale shards. It must
    change whenever a file's bytes can have changed (stat lines of the files, or of the archives
    that hold them, are enough) and be cheap enough to compute on every run.
    """

    def __len__(self) -> int: ...
    def read(self, index: int) -> bytes: ...
    def name(self, index: int) -> str: ...
    def subset(self, indices: np.ndarray) -> EncodedImages: ...
    def fingerprint(self) -> Iterator[str]: ...


class ImageArrays(Protocol):
    """Decoded, fitted images read from somewhere other than memory (data/shards.PackedImages):
    the part of that type a `Split` relies on, so this module need not import shards.py."""

    image_shape: tuple[int, int, int]

    def __len__(self) -> int: ...
    def subset(self, indices: np.ndarray) -> ImageArrays: ...
    def name(self, position: int) -> str: ...
    def take(self, positions: np.ndarray) -> np.ndarray: ...
    def fingerprint(self) -> Iterator[str]: ...


@dataclass
class FileImages:
    """Images as files on disk, read when needed (regular files only, size-capped: images.read_file)."""

    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> bytes:
        return read_file(self.paths[index])

    def name(self, index: int) -> str:
        return printable_path(self.paths[index])

    def subset(self, indices: np.ndarray) -> FileImages:
        return FileImages([self.paths[i] for i in indices])

    def fingerprint(self) -> Iterator[str]:
        return (stat_line(p) for p in self.paths)


@dataclass
class BlobImages:
    """Encoded images held in memory, e.g. members read from a compressed tar in one pass."""

    names: list[str]
    blobs: list[bytes]

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> bytes:
        return self.blobs[index]

    def name(self, index: int) -> str:
        return self.names[index]

    def subset(self, indices: np.ndarray) -> BlobImages:
        return BlobImages([self.names[i] for i in indices], [self.blobs[i] for i in indices])

    def fingerprint(self) -> Iterator[str]:
        """The bytes themselves are in memory: hash them (one pass, cheap beside the read)."""
        digest = hashlib.sha256()
        for blob in self.blobs:
            digest.update(len(blob).to_bytes(8, "little") + blob)
        yield digest.hexdigest()


@dataclass
class Split:
    """Labelled images: exactly one of `images` (N, H, W, C uint8), `files` and `packed` is set.

    `packed` is a prepared dataset's memory-mapped shards (data/shards.PackedImages): decoded and
    fitted already, like `images`, but never loaded whole."""

    labels: np.ndarray  # (N,) int64 class indices, or (N, K) 0/1 multi-hot rows for multi-label
    images: np.ndarray | None = None
    files: EncodedImages | None = None
    packed: ImageArrays | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        kinds = [k for k in (self.images, self.files, self.packed) if k is not None]
        if len(kinds) != 1:
            raise ValueError("a Split holds exactly one of decoded images, encoded files or packed shards")
        count = len(kinds[0])
        if count != len(self.labels):
            raise ValueError(f"{count} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Split:
        indices = np.asarray(indices, dtype=np.int64)
        if self.images is not None:
            return Split(self.labels[indices], images=self.images[indices])
        if self.packed is not None:
            return Split(self.labels[indices], packed=self.packed.subset(indices))
        return Split(self.labels[indices], files=self.files.subset(indices))

    def name(self, index: int) -> str:
        if self.files is not None:
            return self.files.name(index)
        if self.packed is not None:
            return self.packed.name(index)
        return f"#{index}"

    def fingerprint(self) -> Iterator[str]:
        """Lines that change when the images can have changed (part of the prepared-shard key)."""
        if self.images is not None:
            yield hashlib.sha256(np.ascontiguousarray(self.images).data).hexdigest()
        elif self.packed is not None:
            yield from self.packed.fingerprint()
        else:
            yield from self.files.fingerprint()


@dataclass
class SourceData:
    """A dataset as read from its source, before limits, hold-outs and resizing."""

    description: str
    classes: list[str]
    splits: dict[str, Split]  # "train", and "test"/"val" when the source has them
    channels: int | None = None  # known for decoded arrays; None: decide from the files
    flip_invariant: bool = True  # False where a mirror image is another class (digits)
    notes: list[str] = field(default_factory=list)
    origin: str | None = None  # the path it was read from; part of the prepared-data cache key
    skipped: dict[str, str] = field(default_factory=dict)  # name → reason, refused while reading
    task: str = "multiclass"  # or "multilabel": labels are (N, K) multi-hot rows


def multi_hot(labels: np.ndarray) -> bool:
    """(N, K) multi-hot rows (multi-label data): no one class to stratify by, so the cuts below use
    iterative stratification (data/iterstrat.py) instead of shuffling each class."""
    return np.ndim(labels) == 2


def held_count(members: int, fraction: float) -> int:
    """`fraction` of `members` rounded, but at least one of two or more, so a small class (or a
    small multi-label set) is represented on both sides of a hold-out."""
    n_held = round(members * fraction)
    if fraction > 0 and n_held == 0 and members >= 2:
        n_held = 1
    return n_held


def stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) with `fraction` of every class held out (`held_count`), so small
    classes stay represented on both sides. Multi-label rows: that share of all rows is held out,
    each label (and the rows with none) in proportion."""
    if multi_hot(labels):
        n_held = held_count(len(labels), fraction)
        part = iterative_parts(labels, [len(labels) - n_held, n_held], rng)
        return np.flatnonzero(part == 0), np.flatnonzero(part == 1)
    kept, held = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_held = held_count(len(members), fraction)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def stratified_subset(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` indices keeping the class proportions (largest-remainder rounding), or for
    multi-label rows each label's share (iterative stratification)."""
    if count >= len(labels):
        return np.arange(len(labels))
    if multi_hot(labels):
        return np.flatnonzero(iterative_parts(labels, [count, len(labels) - count], rng) == 0)
    classes, sizes = np.unique(labels, return_counts=True)
    quotas = sizes * count / len(labels)
    take = np.floor(quotas).astype(int)
    for i in np.argsort(-(quotas - take))[: count - take.sum()]:
        take[i] += 1
    chosen = [
        rng.permutation(np.flatnonzero(labels == cls))[:n] for cls, n in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def stratified_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`k` disjoint, sorted index arrays that together cover `labels`, each class spread evenly.

    Every class is shuffled and the classes are laid end to end; position i goes to fold i mod k.
    So each fold holds floor or ceil of n_c / k images of every class c, and fold sizes differ by
    at most one image. Multi-label rows get the same fold sizes (the first n mod k folds one
    larger) from iterative stratification, each label spread in proportion.
    """
    if k < 2 or k > len(labels):
        raise ValueError(f"cannot make {k} folds of {len(labels)} images; use 2 <= k <= {len(labels)}")
    if multi_hot(labels):
        sizes = [len(labels) // k + (fold < len(labels) % k) for fold in range(k)]
        part = iterative_parts(labels, sizes, rng)
        return [np.flatnonzero(part == fold) for fold in range(k)]
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == cls)) for cls in np.unique(labels)])
    return [np.sort(order[fold::k]) for fold in range(k)]

"""Prepared datasets on disk: the manifest, memory-mapped shards and a `Split`-compatible view.

A prepared folder (layout in docs/formats.md) holds every image decoded once, at the training
size, as uint8 NHWC arrays in `.npy` shards, plus `index.json`, the manifest. The manifest is
written last and atomically: a folder without it is an unfinished prepare and is never read.

Shards are memory-mapped, never loaded: reading a batch touches only its own pages, and callers
that walk the data (the loaders in data/stream.py) unmap shards as they leave them, so resident
memory stays bounded by the shards in use, not by the dataset.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import mmap
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yingshe.data.splits import SourceData, Split, stat_line
from yingshe.errors import YingsheError
from yingshe.runs import file_sha256

FORMAT = "yingshe-prepared"
VERSION = 1
MANIFEST = "index.json"
PROGRESS = "progress.jsonl"  # present only while a prepare is unfinished: its journal
SLICE_JOURNAL = "progress.slice-{index:05d}-of-{count:05d}.jsonl"  # one per slice (data prepare --num-shards)
MAX_OPEN_SHARDS = 8  # memory maps a view keeps open for random access (least recently used go)


def slice_journal(index: int, count: int) -> str:
    return SLICE_JOURNAL.format(index=index, count=count)


def slice_journals(root: Path) -> list[Path]:
    """The journals of the slices prepared into `root` (`data prepare --num-shards N`)."""
    return sorted(Path(root).glob("progress.slice-*-of-*.jsonl"))


def is_unfinished(root: Path) -> bool:
    """A prepare (or slices of one) has begun in `root` and no manifest says it is done."""
    return (Path(root) / PROGRESS).is_file() or bool(slice_journals(root))


def load_manifest(root: Path, verify: bool = False) -> dict[str, Any]:
    """Read and check a prepared folder's manifest: every file it lists must exist with the
    recorded size (and, with `verify`, the recorded SHA-256). Raises YingsheError otherwise."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        unfinished = is_unfinished(root)
        raise YingsheError(
            f"{root} is {'an unfinished' if unfinished else 'not a'} prepared dataset (no {MANIFEST})",
            "run `yingshe data prepare SPEC --out DIR` again: it resumes from the shards already written "
            "(prepared in slices: finish them, then `yingshe data prepare SPEC --out DIR --merge`)"
            if unfinished
            else "prepare one with `yingshe data prepare SPEC --out DIR`",
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise YingsheError(f"{path} is not readable JSON ({err})", "prepare the dataset again") from err
    if manifest.get("format") != FORMAT:
        raise YingsheError(f"{path} is not a yingshe prepared-data manifest", "prepare the dataset again")
    if manifest.get("version", 0) > VERSION:
        raise YingsheError(
            f"{path} was written by a newer yingshe (format {manifest['version']})", "upgrade yingshe"
        )
    for split in manifest["splits"].values():
        for entry in [split["labels"], *(f for s in split["shards"] for f in (s["images"], s["labels"]))]:
            check_file(root, entry, verify)
    return manifest


def check_file(root: Path, entry: dict[str, Any], verify: bool) -> Path:
    """The file a manifest entry {path, bytes, sha256} names, checked against the entry."""
    path = (root / entry["path"]).resolve()
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    if size != entry["bytes"]:
        found = "missing" if size < 0 else f"{size} bytes, not {entry['bytes']}"
        raise YingsheError(
            f"prepared data in {root} is damaged: {entry['path']} is {found}",
            "prepare the dataset again (with --force to replace the damaged folder)",
        )
    if verify and file_sha256(path) != entry["sha256"]:
        raise YingsheError(
            f"prepared data in {root} is damaged: {entry['path']} does not match its SHA-256",
            "prepare the dataset again (with --force to replace the damaged folder)",
        )
    return path


class MappedArray:
    """A `.npy` file mapped read-only; `.array` reads straight from the page cache."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            offset = handle.tell()
            if fortran or dtype.hasobject:
                raise YingsheError(f"{path} is not a C-ordered numeric array", "prepare the dataset again")
            self.map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        count = int(np.prod(shape))
        self.array = np.frombuffer(self.map, dtype=dtype, count=count, offset=offset).reshape(shape)

    def close(self) -> None:
        """Unmap: the pages leave this process's resident set (they stay in the page cache)."""
        self.array = None
        with contextlib.suppress(BufferError):  # a caller still holds a view: it closes when that goes
            self.map.close()


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of an array that reads from a memory map (no-op otherwise)."""
    base = array
    while isinstance(base, (np.ndarray, memoryview)):  # frombuffer: array → memoryview → mmap
        base = base.base if isinstance(base, np.ndarray) else base.obj
    if isinstance(base, mmap.mmap) and not base.closed:
        base.madvise(mmap.MADV_DONTNEED)


@dataclass(frozen=True)
class ShardFiles:
    images: str  # (n, S, S, C) uint8
    labels: str  # (n,) int64
    count: int


class PackedImages:
    """The images of one prepared split, or of a subset of it, read by memory map.

    Positions are those of the view (after `subset`); `index` maps them to positions in the
    whole prepared split (None: the view is the whole split). `take` gathers any positions;
    loaders that walk the data call `release` when they leave shards behind.
    """

    def __init__(
        self,
        shards: list[ShardFiles],
        image_shape: tuple[int, int, int],
        name_prefix: str = "",
        skipped: np.ndarray | None = None,
        index: np.ndarray | None = None,
    ) -> None:
        self.shards = shards
        self.image_shape = tuple(int(s) for s in image_shape)
        self.name_prefix = name_prefix
        self.starts = np.concatenate([[0], np.cumsum([s.count for s in shards], dtype=np.int64)])
        # source positions that were skipped when preparing (unreadable files), sorted; with
        # them a prepared position maps back to the position of its file in the source
        self.skipped = np.asarray(skipped if skipped is not None else [], dtype=np.int64)
        self.index = index
        self.max_open = MAX_OPEN_SHARDS
        self._maps: OrderedDict[int, tuple[MappedArray, MappedArray]] = OrderedDict()

    # --- shape of the view ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else int(self.starts[-1])

    @property
    def image_size(self) -> int:
        return self.image_shape[0]

    @property
    def channels(self) -> int:
        return self.image_shape[2]

    @property
    def image_bytes(self) -> int:
        return int(np.prod(self.image_shape))

    def __getstate__(self) -> dict[str, Any]:  # maps are per process: reopened after unpickling
        state = dict(self.__dict__)
        state["_maps"] = OrderedDict()
        return state

    def subset(self, indices: np.ndarray) -> PackedImages:
        indices = np.asarray(indices, dtype=np.int64)
        view = copy.copy(self)
        view._maps = OrderedDict()
        view.index = self.index[indices] if self.index is not None else indices
        return view

    def fingerprint(self) -> Iterator[str]:
        return (stat_line(s.images) for s in self.shards)

    def global_positions(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        return self.index[positions] if self.index is not None else positions

    def shard_of(self, global_positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, global_positions, side="right") - 1

    def name(self, position: int) -> str:
        g = int(self.global_positions(np.array([position]))[0])
        kept_before = self.skipped - np.arange(len(self.skipped))  # kept images before each skip
        source = g + int(np.searchsorted(kept_before, g, side="right"))
        return f"{self.name_prefix}#{source}"

    # --- reading ------------------------------------------------------------------------------

    def shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of shard `s`, mapped (opened on first use, least recently used closed)."""
        if s in self._maps:
            self._maps.move_to_end(s)
        else:
            files = self.shards[s]
            self._maps[s] = (MappedArray(files.images), MappedArray(files.labels))
            while len(self._maps) > max(1, self.max_open):
                for mapped in self._maps.popitem(last=False)[1]:
                    mapped.close()
        images, labels = self._maps[s]
        return images.array, labels.array

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Images at view `positions`, in that order: (n, S, S, C) uint8, a copy.

        Sorted positions are gathered shard by shard straight into the output (the loaders sort
        each batch, whose order is random anyway, so pages are read in file order)."""
        g = self.global_positions(positions)
        out = np.empty((len(g), *self.image_shape), dtype=np.uint8)
        if len(g) == 0:
            return out
        ascending = bool(np.all(g[1:] >= g[:-1]))
        order = None if ascending else np.argsort(g, kind="stable")
        g_sorted = g if order is None else g[order]
        shard_ids = self.shard_of(g_sorted)
        cuts = [0, *(np.flatnonzero(np.diff(shard_ids)) + 1).tolist(), len(g)]
        for a, b in itertools.pairwise(cuts):
            s = int(shard_ids[a])
            local = g_sorted[a:b] - self.starts[s]
            images = self.shard(s)[0]
            if order is None:
                np.take(images, local, axis=0, out=out[a:b])
            else:
                out[order[a:b]] = images[local]
        return out

    def pixel_stats(self, positions: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std in [0, 1] of the images at `positions`, exactly, from 256-bin
        histograms summed a block of images at a time: memory stays at one block."""
        counts = np.zeros((self.channels, 256), dtype=np.float64)
        # one shard mapped at a time: a sparse sample still faults in whole page-cache folios
        # (measured ~1 MB resident per image read), so 8 open maps could hold 8 shards' worth
        open_before, self.max_open = self.max_open, 1
        try:
            for start in range(0, len(positions), block):
                pixels = self.take(np.sort(positions[start : start + block])).reshape(-1, self.channels)
                for c in range(self.channels):
                    counts[c] += np.bincount(pixels[:, c], minlength=256)
        finally:
            self.max_open = open_before
            self.release()
        values = np.arange(256, dtype=np.float64) / 255.0
        total = counts.sum(axis=1)
        mean = counts @ values / total
        var = counts @ values**2 / total - mean**2
        return mean, np.sqrt(np.maximum(var, 0.0))

    def release(self) -> None:
        """Unmap every shard this view has open."""
        while self._maps:
            for mapped in self._maps.popitem()[1]:
                mapped.close()


def read_prepared(root: Path, verify: bool = False) -> SourceData:
    """A prepared folder as a source: splits whose images are memory-mapped shards."""
    root = Path(root)
    manifest = load_manifest(root, verify)
    shape = (manifest["image_size"], manifest["image_size"], manifest["channels"])
    splits, notes = {}, []
    for name, entry in manifest["splits"].items():
        shards = [
            ShardFiles(str(root / s["images"]["path"]), str(root / s["labels"]["path"]), s["count"])
            for s in entry["shards"]
        ]
        labels = MappedArray(root / entry["labels"]["path"]).array  # stays mapped: read lazily
        skipped = entry.get("skipped", [])
        packed = PackedImages(
            shards,
            shape,
            f"{manifest['source']['description']}:{name}",
            np.array(sorted(s["position"] for s in skipped), dtype=np.int64),
        )
        splits[name] = Split(labels, packed=packed)
        if skipped:
            shown = "; ".join(s["reason"] for s in skipped[:3])
            notes.append(
                f"{len(skipped)} unreadable {name} image(s) were left out when the data was prepared: "
                f"{shown}{' …' if len(skipped) > 3 else ''}"
            )
    if "train" not in splits:
        raise YingsheError(f"prepared data in {root} has no train split", "prepare the dataset again")
    return SourceData(
        f"prepared {manifest['image_size']}px shards of {manifest['source']['description']}",
        list(manifest["classes"]),
        splits,
        channels=manifest["channels"],
        flip_invariant=manifest.get("flip_invariant", True),
        notes=notes,
        origin=str(root.resolve()),
    )


def fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (POSIX needs the folder itself flushed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

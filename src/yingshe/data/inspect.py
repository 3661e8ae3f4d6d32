"""What `yingshe data inspect` finds in a source: counts, sizes, modes, unreadable files, the split
a training run will make, class imbalance and exact duplicates.

Every image is read and fully decoded once (a truncated file shows only then). Duplicates are
found by the SHA-256 of the stored bytes (of the pixels, for decoded arrays): cheap, exact, and
the key the data-health checks build on; near-duplicates need perceptual hashes and are not here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from yingshe.config import DataConfig
from yingshe.data.curate import item_key
from yingshe.data.dataset import choose_splits
from yingshe.data.images import UnreadableImage, decode_image, image_header
from yingshe.data.splits import SourceData, Split
from yingshe.errors import YingsheError
from yingshe.health.hashing import content_hash

IMBALANCE_WARN = 3.0  # largest class / smallest class at or above which inspect warns
SHOWN_DUPLICATES = 20  # duplicate groups listed by name; all are counted


def inspect_source(source: SourceData, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The summary dict `api.inspect_data` returns (and `--json` prints)."""
    summary: dict[str, Any] = {"description": source.description, "classes": source.classes, "splits": {}}
    total, done = sum(len(s) for s in source.splits.values()), 0
    by_hash: dict[str, list[str]] = defaultdict(list)
    for name, split in source.splits.items():
        entry = {"images": len(split), "per_class": per_class(split, source.classes)}
        if split.files is None:
            shape = split.images.shape[1:] if split.images is not None else split.packed.image_shape
            entry["array"] = [len(split), *shape]
            for i in range(len(split)):
                pixels = split.images[i] if split.images is not None else split.packed.take(np.array([i]))[0]
                by_hash[content_hash(pixels)].append(item_key(name, split, i))
            done += len(split)
        else:
            done = read_files(name, split, entry, by_hash, done, total, progress)
        summary["splits"][name] = entry
    summary["planned_splits"] = planned_splits(source)
    summary["imbalance"] = imbalance(source)
    summary["duplicates"] = [names for names in by_hash.values() if len(names) > 1]
    summary["notes"] = source.notes
    summary["skipped"] = dict(source.skipped)  # refused while reading the source (tar members)
    return summary


def read_files(
    split_name: str, split: Split, entry: dict, by_hash: dict, done: int, total: int, progress
) -> int:
    widths, heights, modes, unreadable = [], [], Counter(), []
    for i in range(len(split)):
        name = split.name(i)
        try:
            blob = split.files.read(i)
            w, h, mode = image_header(blob)
            decode_image(blob, 8, 1, name)  # a full decode finds truncation
            widths.append(w), heights.append(h)
            modes[mode] += 1
            # the same hash and key as `data check` and exclude lists use
            by_hash[content_hash(blob)].append(item_key(split_name, split, i))
        except (UnreadableImage, OSError, ValueError) as err:
            unreadable.append(str(err) if name in str(err) else f"{name}: {err}")
        done += 1
        if progress and (done % 200 == 0 or done == total):
            progress(done, total)
    if widths:
        entry["width"] = {"min": min(widths), "median": int(np.median(widths)), "max": max(widths)}
        entry["height"] = {"min": min(heights), "median": int(np.median(heights)), "max": max(heights)}
    entry["modes"] = dict(modes)
    entry["unreadable"] = unreadable
    return done


def label_counts(split: Split, classes: list[str]) -> np.ndarray:
    """Images per class (per label for multi-label data, where an image counts once per label)."""
    if split.labels.ndim == 2:
        return split.labels.sum(0)
    return np.bincount(split.labels, minlength=len(classes))


def per_class(split: Split, classes: list[str]) -> dict[str, int]:
    counts = label_counts(split, classes)
    return dict(zip(classes, counts.tolist(), strict=True))


def planned_splits(source: SourceData) -> dict[str, Any] | None:
    """The train/val/test a run with the default fractions and seed 0 makes of the source (what
    `yingshe train --data SPEC` trains on), or None when the split cannot be made."""
    try:
        train, val, test, notes = choose_splits(source, DataConfig(), seed=0)
    except YingsheError as err:
        return {"error": err.problem}
    parts = {"train": train, "val": val, "test": test}
    return {
        "counts": {k: len(s) for k, s in parts.items() if s is not None},
        "per_class": {k: per_class(s, source.classes) for k, s in parts.items() if s is not None},
        "notes": notes,
    }


def imbalance(source: SourceData) -> dict[str, Any]:
    """Images per class over all splits, and the ratio of the largest class to the smallest."""
    counts = np.zeros(len(source.classes), dtype=np.int64)
    for split in source.splits.values():
        counts += label_counts(split, source.classes)
    if not len(counts):
        return {"ratio": None, "largest": None, "smallest": None, "warn": False}
    big, small = int(counts.argmax()), int(counts.argmin())
    ratio = round(float(counts[big] / counts[small]), 2) if counts[small] else None  # None: an empty class
    return {
        "ratio": ratio,
        "largest": [source.classes[big], int(counts[big])],
        "smallest": [source.classes[small], int(counts[small])],
        "warn": ratio is None or ratio >= IMBALANCE_WARN,
    }

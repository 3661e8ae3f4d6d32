"""What a run leaves out of its data: an exclude list, exact duplicates, and long-tailed cuts.

- `data.exclude=FILE`: one image key per line (what `yingshe data check` writes to exclude.txt);
  every listed image is dropped from whichever split holds it. A key is the image's name (its
  path, or `archive:member`) or, for decoded arrays, `<split>#<position in the source split>`.
- `data.dedupe=true`: exact copies (same bytes, or same pixels) are kept once per split, and a
  training image that is an exact copy of a test image is dropped (leakage).
- `data.imbalance=RATIO`: a long-tailed training split with the exponential profile of
  CIFAR-10-LT (Cui et al. 2019): class c keeps n_max · RATIO^(−c/(K−1)) images, seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yingshe.data.splits import SourceData, Split
from yingshe.errors import YingsheError
from yingshe.health.hashing import content_hash


def item_key(split_name: str, split: Split, index: int) -> str:
    """The name an exclude list uses for image `index` of a source split."""
    name = split.name(index)
    return f"{split_name}{name}" if name.startswith("#") else name


def read_exclude(path: str | Path) -> set[str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise YingsheError(
            f"exclude list {path} does not exist",
            "give the exclude.txt that `yingshe data check --out DIR` wrote, or a file of image keys",
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def drop(split: Split, unwanted: np.ndarray) -> Split:
    return split.subset(np.flatnonzero(~unwanted)) if unwanted.any() else split


def listed(split_name: str, split: Split, keys: set[str]) -> np.ndarray:
    """(N,) bool: which images of a source split an exclude list names. `apply_exclude` and the
    label check's pool (`tune/oof.py`) both use it, so they leave out the same images."""
    return np.array([item_key(split_name, split, i) in keys for i in range(len(split))], dtype=bool)


def apply_exclude(data: SourceData, path: str | Path) -> SourceData:
    """Drop every listed image; a list that matches nothing is an error (wrong dataset)."""
    keys = read_exclude(path)
    splits, dropped = {}, 0
    for name, split in data.splits.items():
        unwanted = listed(name, split, keys)
        dropped += int(unwanted.sum())
        splits[name] = drop(split, unwanted)
    if keys and dropped == 0:
        raise YingsheError(
            f"none of the {len(keys)} images listed in {path} is in {data.description}",
            "use the exclude list written by `yingshe data check` for this dataset",
        )
    data.splits = splits
    data.notes.append(f"data.exclude: left out {dropped} images listed in {path}")
    return data


def split_hashes(split: Split) -> list[str]:
    if split.images is not None:
        return [content_hash(image) for image in split.images]
    if split.packed is not None:
        return [content_hash(split.packed.take(np.array([i]))[0]) for i in range(len(split))]
    return [content_hash(split.files.read(i)) for i in range(len(split))]


def apply_dedupe(data: SourceData) -> SourceData:
    """Keep the first exact copy in each split; drop training copies of evaluation images."""
    hashes = {name: split_hashes(split) for name, split in data.splits.items()}
    held_out = {h for name, hs in hashes.items() if name != "train" for h in hs}
    splits, dropped = {}, 0
    for name, split in data.splits.items():
        seen: set[str] = set()
        unwanted = np.zeros(len(split), dtype=bool)
        for i, h in enumerate(hashes[name]):
            unwanted[i] = h in seen or (name == "train" and h in held_out)
            seen.add(h)
        dropped += int(unwanted.sum())
        splits[name] = drop(split, unwanted)
    data.splits = splits
    data.notes.append(f"data.dedupe: left out {dropped} exact duplicates (repeats and train copies of test)")
    return data


def long_tail_counts(largest: int, num_classes: int, ratio: float) -> np.ndarray:
    """Images kept per class: largest · ratio^(−c/(K−1)), at least 1 (CIFAR-10-LT's profile)."""
    if ratio < 1:
        raise YingsheError(f"data.imbalance must be >= 1, got {ratio}", "use e.g. data.imbalance=100")
    steps = np.arange(num_classes) / max(1, num_classes - 1)
    return np.maximum(1, np.floor(largest * ratio ** (-steps))).astype(np.int64)


def long_tail(split: Split, num_classes: int, ratio: float, rng: np.random.Generator) -> Split:
    """A seeded long-tailed subset: class c (by class index) keeps `long_tail_counts` images."""
    present = np.bincount(split.labels, minlength=num_classes)
    wanted = long_tail_counts(int(present.max()), num_classes, ratio)
    keep = [
        rng.permutation(np.flatnonzero(split.labels == c))[: min(int(wanted[c]), int(present[c]))]
        for c in range(num_classes)
    ]
    return split.subset(np.sort(np.concatenate(keep)))


def curate(data: SourceData, exclude: str | None, dedupe: bool) -> SourceData:
    """The source-level choices of a `DataConfig`, before limits and hold-outs."""
    if exclude:
        data = apply_exclude(data, exclude)
    if dedupe:
        data = apply_dedupe(data)
    return data

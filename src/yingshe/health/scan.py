"""One pass over every image of a source: what is wrong with the file, and what it looks like.

For each image: its key (as exclude lists name it), split, label, content hash, size, mode,
format, a 32×32 grey thumbnail (for perceptual hashes and pixel checks) and the problems found:
zero bytes, unreadable, truncated, an extension that is not the content's format, an extreme
aspect ratio, a nearly constant image.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from yingshe.data.curate import item_key
from yingshe.data.images import open_image
from yingshe.data.splits import SourceData, Split
from yingshe.health.hashing import PHASH_SIDE, content_hash, grey_thumbnail

EXTREME_ASPECT = 5.0  # long side / short side beyond which an image is suspicious
CONSTANT_STD = 2.0  # grey-level standard deviation under which an image is nearly constant
FORMAT_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "BMP": {".bmp", ".dib"},
    "WEBP": {".webp"},
    "TIFF": {".tif", ".tiff"},
    "PPM": {".ppm", ".pgm", ".pbm", ".pnm"},
}


@dataclass
class Scan:
    """Column arrays over all images of all splits, in split order then position."""

    keys: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    problems: dict[int, list[str]] = field(default_factory=dict)  # row → what is wrong
    thumbs: np.ndarray | None = None  # (N, 32, 32) uint8; zeros where unreadable

    @property
    def readable(self) -> np.ndarray:
        bad = {row for row, found in self.problems.items() if any(p in UNREADABLE for p in found)}
        return np.array([row not in bad for row in range(len(self.keys))], dtype=bool)


UNREADABLE = ("zero bytes", "unreadable", "truncated")


def inspect_blob(blob: bytes, name: str) -> tuple[list[str], Image.Image | None, str]:
    """Problems of one encoded file, the decoded image (None when unreadable) and its format."""
    if not blob:
        return ["zero bytes"], None, ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(blob)) as header:  # header only: the format, no decoding
                fmt = header.format or ""
        # open_image refuses a decompression bomb from its header and turns by EXIF
        image = open_image(blob, name)
    except (UnidentifiedImageError, ValueError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        text = str(err).lower()
        kind = "truncated" if "truncated" in text or "broken data stream" in text else "unreadable"
        return [f"{kind}: {err}"[:120]], None, ""
    problems = []
    suffix = Path(name.rsplit(":", 1)[-1]).suffix.lower()
    if fmt in FORMAT_EXTENSIONS and suffix and suffix not in FORMAT_EXTENSIONS[fmt]:
        problems.append(f"wrong extension: {suffix} holds {fmt}")
    return problems, image, fmt


def shape_problems(width: int, height: int, thumb: np.ndarray) -> list[str]:
    problems = []
    if max(width, height) >= EXTREME_ASPECT * max(1, min(width, height)):
        problems.append(f"extreme aspect ratio {width}×{height}")
    if float(thumb.std()) < CONSTANT_STD:
        problems.append(f"nearly constant (grey std {thumb.std():.2f})")
    return problems


def array_image(split: Split, index: int) -> Image.Image:
    array = split.images[index] if split.images is not None else split.packed.take(np.array([index]))[0]
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def scan_source(data: SourceData, progress: Callable[[int, int], None] | None = None) -> Scan:
    """Read every image once; `progress(done, total)` is called every 500 images."""
    scan = Scan()
    total = sum(len(s) for s in data.splits.values())
    thumbs = np.zeros((total, PHASH_SIDE, PHASH_SIDE), dtype=np.uint8)
    row = 0
    for split_name in sorted(data.splits, key=lambda s: (s != "train", s)):
        split = data.splits[split_name]
        for i in range(len(split)):
            key = item_key(split_name, split, i)
            if split.files is not None:
                try:
                    blob = split.files.read(i)
                except OSError as err:
                    blob, found, image = None, [f"unreadable: {err}"[:120]], None
                if blob is not None:
                    found, image, _ = inspect_blob(blob, key)
                digest = content_hash(blob or b"")
            else:
                image = array_image(split, i)
                found, digest = [], content_hash(np.asarray(image))
            if image is not None:
                thumbs[row] = grey_thumbnail(image)
                found += shape_problems(image.width, image.height, thumbs[row])
            scan.keys.append(key)
            scan.splits.append(split_name)
            scan.positions.append(i)
            scan.labels.append(int(split.labels[i]))
            scan.hashes.append(digest)
            scan.widths.append(image.width if image is not None else 0)
            scan.heights.append(image.height if image is not None else 0)
            scan.modes.append(image.mode if image is not None else "")
            if found:
                scan.problems[row] = found
            row += 1
            if progress is not None and (row % 500 == 0 or row == total):
                progress(row, total)
    scan.thumbs = thumbs
    return scan

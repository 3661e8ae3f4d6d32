"""Decoding one image file of any format and mode into a square uint8 array.

This is the single preprocessing path for training, evaluation, prediction, prepare and serving:
an image is turned upright by its EXIF orientation, becomes grey or RGB, its shorter side is
resized to the target and the centre is cropped, so a served prediction sees exactly the pixels an
evaluated one does.

It is also where hostile input stops (docs/formats.md, "What yingshe does with bad input"):
`read_file` opens regular files only (a FIFO or /dev/zero named like an image is refused, never
waited on) and reads at most `LIMITS.max_file_bytes`; `open_image` refuses an image of more than
`LIMITS.max_pixels` pixels from its header, before any pixel is decoded, and decodes a large JPEG
at a reduced scale (libjpeg's DCT scaling), so an accepted 20000×20000 JPEG costs about 1/64 of
its full size. Both refusals raise `UnreadableImage`, which callers skip and count.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

# Pillow's own limit (it warns above it and refuses above twice it); yingshe's default is the same.
PILLOW_MAX_PIXELS = 89_478_485
DEFAULT_MAX_PIXELS = PILLOW_MAX_PIXELS  # about 9459×9459; data.max_pixels raises it
DEFAULT_MAX_FILE_MB = 256.0  # one encoded image; data.max_file_mb raises it
# `open_image` checks the pixel count itself (with the setting's limit and a reason naming it), so
# Pillow's global guard, which would raise its own DecompressionBombError first, is turned off.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not silently grey pixels


@dataclass
class Limits:
    """Process-wide bounds on one input image (set from DataConfig by `set_limits`; DataLoader and
    prepare workers are forked, so they inherit them)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * 2**20)


LIMITS = Limits()


def set_limits(max_pixels: int | None = None, max_file_mb: float | None = None) -> None:
    """Apply data.max_pixels / data.max_file_mb (None: the default) to every later decode."""
    LIMITS.max_pixels = int(max_pixels or DEFAULT_MAX_PIXELS)
    LIMITS.max_file_bytes = int((max_file_mb or DEFAULT_MAX_FILE_MB) * 2**20)


class UnreadableImage(OSError):
    """An image file that cannot be read or decoded; carries the reason for the report. An
    OSError, so every reader that already skips unreadable files skips these too."""


def printable_path(path: str | bytes | os.PathLike) -> str:
    """A path as text that can always be written (UTF-8 reports, JSON, CSV): bytes of a
    non-UTF-8 file name, which Python holds as surrogate escapes, become `\\xNN`."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # lone surrogates that are not escapes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB"


def read_file(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file, refusing anything else before it is opened for reading.

    A FIFO would block `open` until a writer came and a character device such as /dev/zero never
    ends: both are refused from `os.stat`; the descriptor is opened non-blocking and checked again
    (the name could be swapped in between), and at most `max_bytes` (default LIMITS) are read.
    """
    name = printable_path(path)
    limit = LIMITS.max_file_bytes if max_bytes is None else max_bytes
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableImage(f"{name}: not a regular file ({_file_kind(mode)}); skipped unread")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except UnreadableImage:
        raise
    except OSError as err:
        raise UnreadableImage(f"{name}: {err.strerror or err}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableImage(f"{name}: not a regular file ({_file_kind(info.st_mode)}); skipped unread")
        if info.st_size > limit:
            raise UnreadableImage(
                f"{name}: {_mb(info.st_size)} is over data.max_file_mb={_mb(limit)}; skipped unread"
            )
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while being read
                raise UnreadableImage(f"{name}: more than data.max_file_mb={_mb(limit)}; skipped")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def open_image(data: bytes, name: str = "<bytes>", draft_size: int | None = None) -> Image.Image:
    """Open and fully decode `data`, upright by its EXIF orientation; raises `UnreadableImage`
    with the reason on any failure.

    An image over `LIMITS.max_pixels` is refused from its header, before decoding. With
    `draft_size`, JPEG decodes at a reduced scale (1/2, 1/4, 1/8) when the image is far larger
    than that: libjpeg skips DCT coefficients, several times faster and 4-64× less memory on big
    photos, and never goes below the requested size on either side.
    """
    if not data:
        raise UnreadableImage(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF/palette details
            image = Image.open(io.BytesIO(data))
            check_pixels(image.size, name)
            if draft_size and image.format == "JPEG":
                image.draft(image.mode, (draft_size, draft_size))
            image.load()
            image = ImageOps.exif_transpose(image)
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"{name}: {type(err).__name__}: {err}") from err
    return image


def check_pixels(size: tuple[int, int], name: str) -> None:
    """Refuse a decompression bomb from its header: decoding it would need width×height×bands
    bytes whatever the file's size."""
    width, height = size
    if width * height > LIMITS.max_pixels:
        raise UnreadableImage(
            f"{name}: {width}×{height} = {width * height:,} pixels is over data.max_pixels="
            f"{LIMITS.max_pixels:,} (a decompression bomb, or raise the limit); skipped undecoded"
        )


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to L (channels=1) or RGB (channels=3).

    Transparent pixels are composited on white: their stored colour is arbitrary (often black),
    and dropping alpha would show it.
    """
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = max(float(array.max()), 1.0)
        image = Image.fromarray((array * (255.0 / peak)).astype(np.uint8), mode="L")
    if image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def fit_square(image: Image.Image, size: int, resize: int | None = None) -> Image.Image:
    """Resize the shorter side to `resize` (antialiased), crop the centre `resize` square, then
    its centre `size` square (`resize` None or `size`: one square of `size`, the whole short side).

    The two crops are the definition, not a shortcut: prepared shards store the `resize` square
    and `centre_crop` takes `size` from it in the batch, so every path lands on the same pixels."""
    side = resize or size
    width, height = image.size
    if (width, height) != (side, side):
        scale = side / min(width, height)
        new_w, new_h = max(side, round(width * scale)), max(side, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (new_w - side) // 2, (new_h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side == size:
        return image
    offset = centre_offset(side, size)
    return image.crop((offset, offset, offset + size, offset + size))


def centre_offset(side: int, size: int) -> int:
    """Where the centre `size` square of a `side` square starts (every centre crop uses this)."""
    if size > side:
        raise ValueError(f"cannot centre-crop {size} px from {side} px")
    return (side - size) // 2


def centre_crop(images, size: int):
    """(..., S, S) array or tensor → its centre (..., size, size), at `centre_offset` (a view;
    the input itself when it is `size` already): the batch side of `fit_square`'s second crop."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    top, left = centre_offset(height, size), centre_offset(width, size)
    return images[..., top : top + size, left : left + size]


def decode_image(
    data: bytes, size: int, channels: int, name: str = "<bytes>", resize: int | None = None
) -> np.ndarray:
    """Bytes of any supported format → uint8 array (size, size, channels); with `resize`, the
    short side goes to `resize` and the centre `size` square is kept (`fit_square`)."""
    image = open_image(data, name, draft_size=resize or size)
    image = fit_square(to_mode(image, channels), size, resize)
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    return array[:, :, None] if array.ndim == 2 else array


def image_header(data: bytes) -> tuple[int, int, str]:
    """(width, height, mode) from the header alone, without decoding pixels; the size is as
    displayed (EXIF orientation 5-8 swaps the sides)."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        except Exception:  # a broken EXIF block: the decode reports the file if it matters
            orientation = 1
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return width, height, image.mode

"""Decoding one image file of any format and mode into a square uint8 array.

This is the single preprocessing path for training, evaluation, prediction and serving: an image
becomes grey or RGB, its shorter side is resized to the target and the centre is cropped, so a
served prediction sees exactly the pixels an evaluated one does.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

# Pillow refuses very large images as "decompression bombs"; keep its guard but allow big photos.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not silently grey pixels


class UnreadableImage(Exception):
    """An image file that cannot be decoded; carries the reason for the report."""


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def open_image(data: bytes, name: str = "<bytes>", draft_size: int | None = None) -> Image.Image:
    """Open and fully decode `data`, raising `UnreadableImage` with the reason on any failure.

    With `draft_size`, JPEG decodes at a reduced scale (1/2, 1/4, 1/8) when the image is far
    larger than that: libjpeg skips DCT coefficients, several times faster on big photos, and
    never goes below the requested size.
    """
    if not data:
        raise UnreadableImage(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF/palette details
            image = Image.open(io.BytesIO(data))
            if draft_size and image.format == "JPEG":
                image.draft(image.mode, (draft_size, draft_size))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableImage(f"{name}: {type(err).__name__}: {err}") from err
    return image


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


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (antialiased) and crop the centre square."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode_image(data: bytes, size: int, channels: int, name: str = "<bytes>") -> np.ndarray:
    """Bytes of any supported format → uint8 array (size, size, channels)."""
    image = open_image(data, name, draft_size=size)
    image = fit_square(to_mode(image, channels), size)
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    return array[:, :, None] if array.ndim == 2 else array


def image_header(data: bytes) -> tuple[int, int, str]:
    """(width, height, mode) from the header alone, without decoding pixels."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size[0], image.size[1], image.mode

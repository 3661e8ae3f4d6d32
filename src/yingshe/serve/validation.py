"""Checking what a client sent before any of it reaches the model.

Every problem becomes an `InputError` with an HTTP status and a sentence for the client; nothing
here names a server path, and nothing is decoded before the byte and pixel limits allow it.
Decoding itself (`decode_checked`, after `check_header`) is `data.images.decode_image` through
the model's own `preprocess`, the function evaluation uses.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, PngImagePlugin

from yingshe.data.images import UnreadableImage, image_header
from yingshe.inference import ImageClassifier, readable_reason
from yingshe.serve.config import ServeConfig

RAW_TYPES = ("image/", "application/octet-stream")  # raw-body content types taken as an image

# PNG text chunks (tEXt/zTXt/iTXt) are read when the file is opened, before any pixel limit can
# apply: Pillow's defaults let one 60 KB upload inflate 60 MB of zTXt, half a second of one core.
PNG_TEXT_CHUNK = 64 * 1024  # decompressed bytes of one text chunk
PNG_TEXT_TOTAL = 512 * 1024  # of all text chunks in one file
_TEXT_LIMIT_WORDS = ("max_text_chunk", "text chunks")  # in Pillow's messages for either limit


def limit_png_text() -> None:
    """Cap PNG text metadata for this process (Pillow's limits are module settings). A server
    process reads only clients' images, so the cap costs nothing legitimate."""
    PngImagePlugin.MAX_TEXT_CHUNK = PNG_TEXT_CHUNK
    PngImagePlugin.MAX_TEXT_MEMORY = PNG_TEXT_TOTAL


class InputError(Exception):
    """A request the service refuses: `status` (4xx), `problem` and `fix` for the JSON body."""

    def __init__(self, status: int, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.status, self.problem, self.fix = status, problem, fix


def too_large(size: int, cfg: ServeConfig) -> InputError:
    return InputError(
        413,
        f"the request is {size / 1e6:.1f} MB; this service takes at most {cfg.max_file_mb:g} MB",
        "send a smaller image (the model sees it at its own small size anyway)",
    )


def check_top_k(top_k: int, cfg: ServeConfig) -> None:
    if not 1 <= top_k <= cfg.max_top_k:
        raise InputError(422, f"top_k must be between 1 and {cfg.max_top_k}, not {top_k}", "e.g. ?top_k=3")


def check_header(data: bytes, cfg: ServeConfig) -> tuple[int, int]:
    """(width, height) of an upload from its header, or InputError: empty, over the byte or
    pixel limit, or not an image at all. Cheap: nothing is decoded."""
    if not data:
        raise InputError(400, "the image is empty (0 bytes)", "send the image file's bytes")
    if len(data) > cfg.max_bytes:
        raise too_large(len(data), cfg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: handled just below
            width, height, _ = image_header(data)
    except ValueError as err:
        if not any(words in str(err).lower() for words in _TEXT_LIMIT_WORDS):
            raise not_an_image() from err
        raise InputError(
            422,
            f"the PNG's text metadata is larger than this service reads ({PNG_TEXT_CHUNK // 1024} KiB "
            f"a chunk, {PNG_TEXT_TOTAL // 1024} KiB in all)",
            "strip the metadata (e.g. `mogrify -strip image.png`) and send it again",
        ) from err
    except Exception as err:  # anything Pillow cannot even open is not an image
        raise not_an_image() from err
    if width * height > cfg.max_pixels:
        raise InputError(
            413,
            f"the image is {width}×{height} pixels; this service takes at most {cfg.max_pixels:,} pixels",
            "downscale it first; the model sees it at its own small size anyway",
        )
    return width, height


def not_an_image() -> InputError:
    return InputError(
        415,
        "the upload is not an image in a format this service reads",
        "send a JPEG, PNG, GIF, BMP, WebP or TIFF file",
    )


def decode_checked(data: bytes, classifier: ImageClassifier) -> np.ndarray:
    """The pixels of an upload `check_header` passed, through the model's own preprocessing."""
    try:
        return classifier.preprocess(data)
    except (UnreadableImage, OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(
            422,
            f"the image could not be decoded: {readable_reason(err, '<bytes>')}",
            "send a complete, uncorrupted image file",
        ) from err

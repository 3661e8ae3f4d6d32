"""Decoding many encoded images at once, fast where it is exact and through Pillow everywhere else.

`decode_many` gives exactly the pixels `images.decode_image` gives, image for image: a JPEG whose
stored size already is the target size and whose component count is the channel count goes
through torchvision's libjpeg-turbo decoder in one batched call (EXIF orientation applied, as
Pillow's path does); everything else (other formats,
other sizes, CMYK, a JPEG torchvision refuses) goes through Pillow's path. Measured on CIFAR-10's
32×32 JPEGs, one core: Pillow (`decode_image`) 121 µs per image, `torchvision.io.decode_jpeg` on a
list 29 µs, with bit-identical pixels (2,000 of 2,000 images compared). bench/data_throughput.py
repeats the measurement.

torchvision 0.29 deprecates its image codecs in favour of TorchCodec (not installed here); its
DeprecationWarning is silenced around the call, and without `torchvision.io` everything goes
through Pillow, still exact, only slower.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from yingshe.data.images import UnreadableImage, decode_image

try:
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # a torchvision without its image codecs
    decode_jpeg = None

try:  # libjpeg-turbo with its speed switches exposed (a dependency; absent from some environments)
    import simplejpeg
except ImportError:
    simplejpeg = None

DECODERS = ("auto", "pil")  # auto: torchvision for exact-size JPEGs, Pillow for the rest

# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic);
# 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI, EOI carry no length field


def _segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each marker segment of a JPEG up to its first frame or scan, the one
    walk both header readers need; stops quietly where `data` is not a JPEG or breaks off (the
    caller's `struct.error` for a segment cut short)."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        yield marker, pos
        if marker in _SOF or marker == 0xDA:
            return
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from a JPEG's frame header, or None when `data` is not a JPEG
    whose header can be read. Scans marker segments only; costs a few µs."""
    try:
        for marker, pos in _segments(data):
            if marker == 0xDA:  # start of scan before any frame: malformed
                return None
            if marker in _SOF:
                _, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
                # a height of 0 is left to a later DNL segment: not a size to plan crops on
                return (width, height, components) if width and height else None
    except struct.error:
        return None
    return None


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG, 1 when it has none or it cannot be read. Reads the
    APP1 segments before the frame and IFD0 of their TIFF header; costs a few µs."""
    try:
        for marker, pos in _segments(data):
            if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
                return _tiff_orientation(data, pos + 10)
    except struct.error:
        return 1
    return 1


def _tiff_orientation(data: bytes, tiff: int) -> int:
    order = {b"II": "<", b"MM": ">"}.get(bytes(data[tiff : tiff + 2]))
    if order is None:
        return 1
    (ifd,) = struct.unpack_from(order + "I", data, tiff + 4)
    (count,) = struct.unpack_from(order + "H", data, tiff + ifd)
    for k in range(count):
        tag, kind, _, value = struct.unpack_from(order + "HHIH", data, tiff + ifd + 2 + 12 * k)
        if tag == 0x0112 and kind == 3:  # Orientation, SHORT
            return value if 1 <= value <= 8 else 1
    return 1


def decode_jpeg_fast(
    data: bytes, channels: int, reduce: int, size: tuple[int, int] | None = None
) -> np.ndarray | None:
    """(H, W, channels) uint8 for a training crop, or None when this fast path does not apply
    (no simplejpeg, a JPEG to be turned by its EXIF orientation, any complaint from libjpeg: a
    few stray bytes, a cut-off scan): the caller then decodes it the accurate way, which
    forgives what it can and names the file when it cannot.

    libjpeg-turbo's fast integer IDCT and plain chroma upsampling (FFCV's decoder settings),
    1.7× torchvision's accurate decode on 300-500 px photos (0.66 against 1.09-1.13 ms on one
    core: `bench/photo_throughput.py --parts`). The pixels differ from the accurate decode by a
    few levels, which random-resized-crop's own resampling dwarfs; evaluation and prediction keep the accurate
    decoder. `reduce` (1, 2, 4 or 8) is libjpeg's DCT scaling: only powers of two, since its other
    scales have no SIMD path and decode slower than the full image. `size` is the (width,
    height) the caller already read from the header (`jpeg_frame`), else it is read here."""
    if simplejpeg is None or exif_orientation(data) != 1:
        return None
    try:
        width, height = size or simplejpeg.decode_jpeg_header(data)[1::-1]
        return simplejpeg.decode_jpeg(
            data,
            colorspace="RGB" if channels == 3 else "GRAY",
            fastdct=True,
            fastupsample=True,
            min_height=-(-height // reduce),
            min_width=-(-width // reduce),
        )
    except ValueError:  # libjpeg complained (strict): the accurate decoders forgive what they can
        return None


def decode_many(
    blobs: Sequence[bytes | None],
    size: int,
    channels: int,
    names: Sequence[str] | None = None,
    decoder: str = "auto",
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Decode encoded images to (N, size, size, channels) uint8, never raising on a bad one.

    Returns the images, an `ok` mask (N,) and {position: reason} for those that could not be
    decoded (their pixels are zero). A None blob is a file that could not be read; its reason
    should come from the caller, so it is only marked as failed here.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
    n = len(blobs)
    out = np.zeros((n, size, size, channels), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    fast: list[int] = []
    if decoder == "auto" and decode_jpeg is not None:
        for i, blob in enumerate(blobs):
            if blob is not None and jpeg_frame(blob) == (size, size, channels):
                fast.append(i)
    done = set(_decode_jpegs(blobs, fast, channels, out, ok))
    for i, blob in enumerate(blobs):
        if i in done:
            continue
        name = names[i] if names is not None else f"<image {i}>"
        if blob is None:
            errors[i] = f"{name}: could not be read"
            continue
        try:
            out[i] = decode_image(blob, size, channels, name)
            ok[i] = True
        except (UnreadableImage, OSError, ValueError) as err:
            errors[i] = str(err) if name in str(err) else f"{name}: {err}"
    return out, ok, errors


def _decode_jpegs(
    blobs: Sequence[bytes | None], which: list[int], channels: int, out: np.ndarray, ok: np.ndarray
) -> list[int]:
    """Decode `which` with torchvision into `out` (one batched call; one by one if that fails).
    Returns the positions decoded; the others fall back to Pillow, which names the error."""
    if not which:
        return []
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    with warnings.catch_warnings():
        # frombuffer warns that bytes are read-only (decoding only reads them); decode_jpeg warns
        # that torchvision's codecs are deprecated (see the module docstring)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        tensors = [torch.frombuffer(blobs[i], dtype=torch.uint8) for i in which]
        try:
            decoded = decode_jpeg(tensors, mode=mode, apply_exif_orientation=True)
        except RuntimeError:
            decoded = []
            for tensor in tensors:
                try:
                    decoded.append(decode_jpeg(tensor, mode=mode, apply_exif_orientation=True))
                except RuntimeError:
                    decoded.append(None)
    done = []
    for i, image in zip(which, decoded, strict=True):
        if image is None or tuple(image.shape) != (channels, *out.shape[1:3]):
            continue
        out[i] = image.permute(1, 2, 0).numpy()
        ok[i] = True
        done.append(i)
    return done

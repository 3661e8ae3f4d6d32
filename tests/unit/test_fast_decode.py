"""The training crops' fast JPEG decode (data/decode.py): EXIF orientation read from the header,
libjpeg-turbo's fast settings close to the accurate decode, DCT scaling, and clear failures."""

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from yingshe.data.augment import Normalize
from yingshe.data.decode import decode_jpeg_fast, exif_orientation, simplejpeg
from yingshe.data.images import UnreadableImage
from yingshe.data.photo import decode_crop

needs_simplejpeg = pytest.mark.skipif(simplejpeg is None, reason="simplejpeg is a dependency; absent here")


def photo(width: int = 300, height: int = 200) -> Image.Image:
    """A smooth picture with edges: gradients plus a dark rectangle (JPEG-like content)."""
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    rgb = np.stack([255 * x, 255 * y, 128 + 100 * np.sin(8 * x)], -1)
    rgb[height // 4 : height // 2, width // 3 : width // 2] = 20
    return Image.fromarray(rgb.astype(np.uint8))


def encode(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def with_exif(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, exif=exif.tobytes())


def big_endian_exif(data: bytes, orientation: int) -> bytes:
    """`data` with a Motorola-order (MM) EXIF segment after SOI, holding only the orientation."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    body = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + data[2:]


def test_exif_orientation_is_read_from_either_byte_order():
    plain = encode(photo())
    assert exif_orientation(plain) == 1
    for value in range(1, 9):
        assert exif_orientation(with_exif(photo(), value)) == value
        assert exif_orientation(big_endian_exif(plain, value)) == value
    assert exif_orientation(big_endian_exif(plain, 42)) == 1  # out of range: ignored
    assert exif_orientation(b"") == 1 and exif_orientation(b"\x89PNG\r\n\x1a\n") == 1
    cut = with_exif(photo(), 6)
    assert exif_orientation(cut[:30]) == 1  # a segment cut short never raises


@needs_simplejpeg
def test_fast_decode_is_close_to_the_accurate_one_and_scales_by_powers_of_two():
    image = photo()
    data = encode(image)
    accurate = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    fast = decode_jpeg_fast(data, 3, 1)
    assert fast.shape == (200, 300, 3) and fast.dtype == np.uint8
    difference = np.abs(fast.astype(int) - accurate)
    assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 8  # a few levels, not a shift
    half = decode_jpeg_fast(data, 3, 2)
    assert half.shape == (100, 150, 3)
    assert decode_jpeg_fast(data, 3, 8).shape == (25, 38, 3)  # libjpeg rounds up
    grey = decode_jpeg_fast(encode(image.convert("L")), 1, 1)
    assert grey.shape == (200, 300, 1)


@needs_simplejpeg
def test_fast_decode_steps_aside_for_exif_turns_and_damaged_files():
    """Those go to the accurate decoders: they turn the picture, forgive stray bytes, and name
    a file they cannot read."""
    assert decode_jpeg_fast(with_exif(photo(), 6), 3, 1) is None
    assert decode_jpeg_fast(with_exif(photo(), 1), 3, 1) is not None
    data = encode(photo())
    sof = data.index(b"\xff\xc0")
    stray = data[:sof] + b"\x00\x00\x00" + data[sof:]  # libjpeg: "3 extraneous bytes before marker"
    assert decode_jpeg_fast(stray, 3, 1) is None
    crop = decode_crop(stray, 32, 3, np.random.default_rng(0).random(5), "stray.jpg")
    assert crop.shape == (3, 32, 32) and float(crop.float().std()) > 5
    cut = data[: len(data) // 2]
    assert decode_jpeg_fast(cut, 3, 1) is None
    with pytest.raises(UnreadableImage, match="cut.jpg"):
        decode_crop(cut, 32, 3, np.random.default_rng(0).random(5), "cut.jpg")


def test_a_turned_photo_is_cropped_upright():
    """Orientation 6 (turn 90° clockwise to show): the crop is of the upright picture."""
    quadrants = np.zeros((64, 64, 3), dtype=np.uint8)
    quadrants[:32, :32] = (250, 10, 10)  # top left red, the rest dark
    stored = Image.fromarray(quadrants).transpose(Image.Transpose.ROTATE_90)  # shown after a turn
    data = with_exif(stored, 6)
    u = np.random.default_rng(0).random(5)
    crop = decode_crop(data, 32, 3, u, "turned.jpg", scale=(1.0, 1.0), flip=False).float()
    top_left, bottom_right = crop[0, :12, :12].mean(), crop[0, -12:, -12:].mean()
    assert top_left > 200 and bottom_right < 50, (top_left, bottom_right)


def test_normalize_gives_the_same_values_for_channels_last_batches():
    norm = Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    x = torch.randint(0, 256, (5, 3, 17, 13), dtype=torch.uint8)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    out = norm(nhwc)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, norm(x))
    for part in (x[:1], x[:, :, :1, :1]):  # one image; one pixel (both layouts at once)
        assert torch.equal(norm(part), norm(part.contiguous(memory_format=torch.channels_last)))


def test_normalize_with_one_statistic_broadcasts_it_over_channels_last_batches_too():
    norm = Normalize([0.5], [0.25])
    x = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    assert torch.equal(norm(x.contiguous(memory_format=torch.channels_last)), norm(x))


def test_normalize_leaves_a_float_channels_last_input_alone():
    norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    x = (torch.rand(2, 3, 5, 4) * 255).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    norm(x)
    assert torch.equal(x, before)

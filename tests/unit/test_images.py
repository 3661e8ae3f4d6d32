"""Decoding any mode and format into the configured grey or RGB square, and clear failures."""

import io

import numpy as np
import pytest
from PIL import Image

from yingshe.data.images import UnreadableImage, decode_image, fit_square, to_mode


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_transparent_pixels_become_white_not_their_hidden_colour():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((4, 4), (255, 0, 0, 255))
    out = decode_image(encode(image, "PNG"), 8, 3)
    assert out.shape == (8, 8, 3)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[4, 4].tolist() == [255, 0, 0]


def test_palette_gif_with_transparency_and_cmyk_jpeg_decode_to_rgb():
    palette = Image.new("P", (10, 6), 1)
    palette.putpalette([0, 0, 0, 0, 128, 255] + [0] * 762)
    gif = encode(palette, "GIF")
    assert decode_image(gif, 6, 3)[3, 3].tolist() == [0, 128, 255]
    cmyk = Image.new("CMYK", (12, 12), (0, 255, 255, 0))  # red in CMYK
    red = decode_image(encode(cmyk, "JPEG"), 12, 3)[6, 6]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_sixteen_bit_grey_is_scaled_to_eight_bits():
    image = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_mode(image, 1).getpixel((0, 0)) == 255


def test_rgb_to_grey_and_grey_to_rgb():
    rgb = Image.new("RGB", (4, 4), (255, 255, 255))
    assert decode_image(encode(rgb, "PNG"), 4, 1).shape == (4, 4, 1)
    grey = Image.new("L", (4, 4), 100)
    assert decode_image(encode(grey, "PNG"), 4, 3)[0, 0].tolist() == [100, 100, 100]


def test_fit_square_resizes_the_short_side_and_crops_the_centre():
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # white centre third
    out = np.asarray(fit_square(image, 32))
    assert out.shape == (32, 32, 3)
    assert out.mean() > 250  # only the white centre survives the crop


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty file"), (b"plain text, not an image", "cannot identify"), (None, "truncated")],
)
def test_unreadable_images_raise_with_the_name_and_reason(data, reason):
    if data is None:
        jpeg = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
        data = jpeg[: len(jpeg) // 2]
    with pytest.raises(UnreadableImage, match=reason) as err:
        decode_image(data, 16, 3, name="photos/x.jpg")
    assert "photos/x.jpg" in str(err.value)

"""`data check` decodes through open_image: a decompression bomb is refused from its header."""

import io

from PIL import Image

from yingshe.data import images
from yingshe.health.scan import inspect_blob


def png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), "red").save(buffer, "PNG")
    return buffer.getvalue()


def test_inspect_blob_refuses_image_over_pixel_limit():
    images.set_limits(max_pixels=100)
    try:
        problems, image, _ = inspect_blob(png(20), "cls/bomb.png")
    finally:
        images.set_limits()
    assert image is None
    assert problems and problems[0].startswith("unreadable") and "max_pixels" in problems[0]


def test_inspect_blob_reads_small_image_and_format():
    problems, image, fmt = inspect_blob(png(8), "cls/ok.png")
    assert problems == [] and image is not None and fmt == "PNG"

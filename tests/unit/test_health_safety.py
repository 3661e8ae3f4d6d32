"""`data check`: decodes through open_image (a bomb is refused from its header), never writes into a run."""

import io

import pytest
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


def test_data_check_refuses_a_run_folder_and_writes_nothing(tmp_path):
    from yingshe.errors import YingsheError
    from yingshe.health.check import run_check

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"checkpoint")
    with pytest.raises(YingsheError, match="run folder"):
        run_check(str(tmp_path / "nowhere"), run)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]


def test_data_check_refuses_foreign_files_it_would_overwrite(tmp_path):
    from yingshe.errors import YingsheError
    from yingshe.health.check import run_check

    (tmp_path / "exclude.txt").write_text("mine\n")
    with pytest.raises(YingsheError, match="exclude.txt"):
        run_check(str(tmp_path / "nowhere"), tmp_path)
    assert (tmp_path / "exclude.txt").read_text() == "mine\n"

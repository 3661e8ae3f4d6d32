"""Hostile files beside good images: FIFOs, devices, oversized files, decompression bombs, EXIF
rotation, undecodable file names (issue #10). Files are made here from real CIFAR JPEGs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yingshe.cli import main
from yingshe.data.decode import decode_many
from yingshe.data.images import (
    DEFAULT_MAX_PIXELS,
    UnreadableImage,
    decode_image,
    image_header,
    printable_path,
    read_file,
    set_limits,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def default_limits():
    yield
    set_limits()  # a test that raised a limit must not leak it into the next


def bomb_png(path: Path, side: int = 30_000) -> Path:
    """A real 1-bit PNG of side×side zero pixels: ~100 KB on disk, side² pixels decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    row = b"\0" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(1)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # 1 bit, grey
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory, cifar_members) -> Path:
    """Two classes of 10 real JPEGs each."""
    root = tmp_path_factory.mktemp("good")
    for cls in ("cat", "ship"):
        (root / cls).mkdir()
        for i, blob in enumerate(cifar_members["train"][cls][:10]):
            (root / cls / f"{i}.jpg").write_bytes(blob)
    return root


def copy_folder(src: Path, dst: Path) -> Path:
    for path in src.rglob("*.jpg"):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return dst


def run_cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "yingshe", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_fifo_named_like_an_image_never_hangs_inspect_or_train(tmp_path, good_folder):
    root = copy_folder(good_folder, tmp_path / "data")
    fifo = root / "cat" / "x.png"
    os.mkfifo(fifo)  # nobody ever writes: opening it for reading would block forever
    out = tmp_path / "run"
    train = ["--epochs", "1", "--image-size", "16", "--workers", "0", "--batch-size", "8", "--out", str(out)]
    script = f"""
import sys
from yingshe.cli import main
sys.exit(main(["data", "inspect", {str(root)!r}, "--json"])
         or main(["train", "--data", {str(root)!r}, *{train!r}, 'data.prepared="off"', "train.plots=false"]))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    inspected = json.loads(done.stdout[: done.stdout.index("\n}") + 2])
    assert inspected["splits"]["train"]["unreadable"] == [
        f"{fifo}: not a regular file (a FIFO); skipped unread"
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["skipped_files"] >= 1 or fifo.name in json.dumps(report)
    assert any(f"{fifo}: not a regular file (a FIFO)" in reason for reason in report["skipped"]), report[
        "skipped"
    ]
    assert fifo.exists()  # left as it was


def test_dev_zero_manifest_row_is_skipped_with_a_reason(tmp_path, good_folder, capsys):
    rows = [f"{p},{p.parent.name}" for p in sorted(good_folder.rglob("*.jpg"))]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(["path,label", *rows, "/dev/zero,cat"]) + "\n")
    assert main(["data", "inspect", str(manifest), "--json"]) == 0
    split = json.loads(capsys.readouterr().out)["splits"]["train"]
    assert split["images"] == 21
    assert split["unreadable"] == ["/dev/zero: not a regular file (a character device); skipped unread"]


def test_reads_are_capped_at_max_file_mb(tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(big)
    size = big.stat().st_size
    assert read_file(big, max_bytes=size) == big.read_bytes()
    with pytest.raises(
        UnreadableImage, match=rf"{big}: 0.459 MB is over data.max_file_mb=0.1 MB; skipped unread"
    ):
        read_file(big, max_bytes=int(0.1 * 2**20))
    set_limits(max_file_mb=0.1)  # the setting reaches every reader through the process-wide limits
    with pytest.raises(UnreadableImage, match="max_file_mb"):
        read_file(big)


def test_decompression_bomb_is_skipped_in_inspect_prepare_and_decode(tmp_path, good_folder, capsys):
    root = copy_folder(good_folder, tmp_path / "data")
    bomb = bomb_png(root / "ship" / "bomb.png")
    assert bomb.stat().st_size < 2**20
    assert image_header(bomb.read_bytes())[:2] == (30_000, 30_000)  # the header alone is harmless
    with pytest.raises(
        UnreadableImage, match=r"bomb.png: 30000×30000 = 900,000,000 pixels is over data.max_pixels"
    ):
        decode_image(bomb.read_bytes(), 32, 3, str(bomb))
    _, ok, errors = decode_many([bomb.read_bytes(), (root / "cat" / "0.jpg").read_bytes()], 32, 3, ["b", "g"])
    assert ok.tolist() == [False, True] and "max_pixels" in errors[0]

    assert main(["data", "inspect", str(root), "--json"]) == 0
    unreadable = json.loads(capsys.readouterr().out)["splits"]["train"]["unreadable"]
    assert len(unreadable) == 1 and unreadable[0].startswith(f"{bomb}: 30000×30000")

    out = tmp_path / "prepared"
    assert (
        main(
            [
                "data",
                "prepare",
                str(root),
                "--out",
                str(out),
                "--image-size",
                "16",
                "--workers",
                "1",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"]["images"] == 20
    assert [r.split(":")[0] for r in summary["splits"]["train"]["skipped"]] == [str(bomb)]


def test_big_jpeg_decodes_at_reduced_scale_in_bounded_memory(tmp_path):
    """An accepted 20000×20000 JPEG: full decode would take 400 MB (grey); the DCT-scaled decode
    reads it at 1/8 scale. Peak RSS growth is measured in a fresh process."""
    path = tmp_path / "huge.jpg"
    image = Image.new("L", (20_000, 20_000), 90)
    image.paste(200, (5_000, 5_000, 15_000, 15_000))
    image.save(path, quality=80)
    del image
    # images.py needs only numpy and Pillow: loaded on its own, the child skips importing torch
    script = f"""
import importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("images", {str(REPO / "src/yingshe/data/images.py")!r})
images = sys.modules["images"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(images)
decode_image, read_file, set_limits = images.decode_image, images.read_file, images.set_limits
set_limits(max_pixels=20_000 * 20_000)
data = read_file({str(path)!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
array = decode_image(data, 128, 1, "huge.jpg")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024, array.shape, int(array[64, 64, 0]), int(array[2, 2, 0]))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    grown_mb, *_, centre, corner = done.stdout.split()
    assert int(grown_mb) < 64, done.stdout  # measured ~7 MB; a full decode would be 400 MB
    assert abs(int(centre) - 200) < 8 and abs(int(corner) - 90) < 8  # the pixels are right
    assert DEFAULT_MAX_PIXELS < 20_000 * 20_000  # by default such an image is refused instead


def exif_jpeg(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied_on_every_decode_path(cifar_members):
    photo = Image.open(io.BytesIO(cifar_members["test"]["horse"][0])).convert("RGB")
    tall = photo.resize((32, 48))  # stored 32 wide, 48 high; orientation 6: shown 48 wide, 32 high
    data = exif_jpeg(tall, 6)
    assert image_header(data)[:2] == (48, 32)
    upright = Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270)
    expected = np.asarray(upright.resize((48, 32)).crop((8, 0, 40, 32)))
    got = decode_image(data, 32, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 3  # same picture, upright
    unrotated = np.asarray(Image.open(io.BytesIO(data)).resize((32, 48)).crop((0, 8, 32, 40)))
    assert np.abs(got.astype(int) - unrotated.astype(int)).mean() > 10

    square = exif_jpeg(photo, 6)  # 32×32 at the target size: torchvision's fast path
    fast, ok, _ = decode_many([square], 32, 3)
    pil, ok_pil, _ = decode_many([square], 32, 3, decoder="pil")
    assert ok.all() and ok_pil.all()
    np.testing.assert_array_equal(fast[0], pil[0])
    np.testing.assert_array_equal(pil[0], decode_image(square, 32, 3))
    plain = np.asarray(Image.open(io.BytesIO(square)))
    np.testing.assert_array_equal(pil[0], np.rot90(plain, -1))


def test_undecodable_file_names_reach_the_report(tmp_path, good_folder):
    root = copy_folder(good_folder, tmp_path / "data")
    latin = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8, held as surrogate escapes
    (root / "cat").rename(root / latin)
    broken = root / "ship" / os.fsdecode(b"broken-\xff.jpg")
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    args = ["--epochs", "1", "--image-size", "16", "--workers", "0", "--batch-size", "8", "--out", str(out)]
    assert main(["train", "--data", str(root), *args, 'data.prepared="off"', "train.plots=false"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["classes"] == ["caf\\xe9", "ship"]  # the class named by its escaped bytes
    assert any(r.startswith(printable_path(broken)) and "broken-\\xff.jpg" in r for r in report["skipped"])
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "caf\\xe9" in md and "broken-\\xff.jpg" in md
    assert printable_path(b"a\xffb") == "a\\xffb" and printable_path("plain é") == "plain é"


def test_a_jpeg_bomb_among_photos_is_skipped_by_random_resized_crop_training(tmp_path, good_folder):
    """A small JPEG whose frame header claims 60000×60000, trained on with random-resized-crop in
    2 DataLoader workers (the path that decodes with simplejpeg at reduced scale): the run
    finishes, and the report names the file and the limit it broke. (That no decoder is handed
    the file at all is tests/integration/test_photo_crops.py's check.)"""
    root = tmp_path / "data"
    copy_folder(good_folder, root / "train")
    copy_folder(good_folder, root / "test")  # a test split of its own: the bomb stays in train
    data = bytearray((root / "train" / "ship" / "0.jpg").read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60_000).to_bytes(2, "big") * 2  # height, width
    bomb = root / "train" / "ship" / "bomb.jpg"
    bomb.write_bytes(bytes(data))
    out = tmp_path / "run"
    args = ["--epochs", "1", "--image-size", "16", "--workers", "2", "--batch-size", "8", "--out", str(out)]
    overrides = ['data.prepared="off"', "train.plots=false", "augment.random_resized_crop=true"]
    assert main(["train", "--data", str(root), *args, *overrides]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    named = [r for r in report["skipped"] if r.startswith(str(bomb))]
    assert len(named) == 1 and "60000×60000" in named[0] and "max_pixels" in named[0], report["skipped"]

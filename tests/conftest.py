"""Shared fixtures: the real datasets, and small real-image folders built from them once per session.

The datasets are found through YINGSHE_TEST_DATA (default: ../shared/datasets beside the repo).
They are required: a missing dataset fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

# One intra-op thread for every test and the CLI processes they start: the tests' models are
# tiny, and two busy-waiting OpenMP threads on a 2-core machine shared with DataLoader workers and
# other jobs were measured 4× slower than one (44.7 s vs 9.5 s for the resume test under load).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
from PIL import Image
from support import one_thread

import yingshe
from yingshe.config import RunConfig, apply_overrides

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(os.environ.get("YINGSHE_TEST_DATA", REPO.parent / "shared" / "datasets")).resolve()
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data {path} is missing: set YINGSHE_TEST_DATA to the shared datasets folder")
    return path


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    return require(TEST_DATA)


@pytest.fixture(scope="session")
def fashion_dir(datasets_dir: Path) -> Path:
    return require(datasets_dir / "fashion-mnist")


@pytest.fixture(scope="session")
def cifar_tar(datasets_dir: Path) -> Path:
    return require(datasets_dir / "cifar10-jpeg.tar.gz")


@pytest.fixture(scope="session")
def cifar_members(cifar_tar: Path) -> dict[str, dict[str, list[bytes]]]:
    """The first 40 train and 20 test JPEGs of every CIFAR-10 class, as raw bytes."""
    wanted = {"train": 40, "test": 20}
    out: dict[str, dict[str, list[bytes]]] = {s: {c: [] for c in CIFAR_CLASSES} for s in wanted}
    with tarfile.open(cifar_tar, "r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4:
                continue
            _, split, cls, _ = parts
            if len(out[split][cls]) < wanted[split]:
                out[split][cls].append(archive.extractfile(member).read())
    return out


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory, cifar_members) -> Path:
    """A real image folder tree root/{train,test}/<class>/NNNN.jpg (400 train, 200 test)."""
    root = tmp_path_factory.mktemp("cifar-slice")
    for split, classes in cifar_members.items():
        for cls, blobs in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, blob in enumerate(blobs):
                (folder / f"{i:04d}.jpg").write_bytes(blob)
    return root


def save_as(image: Image.Image, path: Path, fmt: str) -> None:
    """Write a real photo in one of the formats and modes users bring."""
    if fmt == "png-alpha":
        rgba = image.convert("RGBA")
        alpha = Image.new("L", image.size, 0)
        alpha.paste(255, (2, 2, image.size[0] - 2, image.size[1] - 2))
        rgba.putalpha(alpha)
        rgba.save(path.with_suffix(".png"))
    elif fmt == "gif":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(path.with_suffix(".gif"))
    elif fmt == "grey":
        image.convert("L").save(path.with_suffix(".jpg"), quality=90)
    elif fmt == "cmyk":
        image.convert("CMYK").save(path.with_suffix(".jpg"), quality=90)
    elif fmt == "webp":
        image.save(path.with_suffix(".webp"), quality=90)
    elif fmt == "bmp":
        image.save(path.with_suffix(".bmp"))
    else:
        image.save(path.with_suffix(".jpg"), quality=92)


PHOTO_FORMATS = ["jpg", "png-alpha", "gif", "grey", "cmyk", "webp", "bmp"]
PHOTO_SIZES = [(32, 32), (64, 48), (40, 90), (120, 120), (57, 33)]


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory, cifar_members) -> Path:
    """Three classes of real photos in mixed sizes, formats and modes, plus three broken files.

    No train/test subfolders, so yingshe must make its own stratified split.
    """
    root = tmp_path_factory.mktemp("photos")
    for cls in ("airplane", "cat", "ship"):
        folder = root / cls
        folder.mkdir()
        for i, blob in enumerate(cifar_members["train"][cls][:30]):
            image = Image.open(io.BytesIO(blob)).convert("RGB")
            image = image.resize(PHOTO_SIZES[i % len(PHOTO_SIZES)], Image.Resampling.BICUBIC)
            save_as(image, folder / f"{cls}_{i:03d}", PHOTO_FORMATS[i % len(PHOTO_FORMATS)])
    good = (root / "cat" / "cat_000.jpg").read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "ship" / "empty.png").write_bytes(b"")
    (root / "airplane" / "notes.jpg").write_text("this is not an image")
    return root


BROKEN_FILES = {"truncated.jpg", "empty.png", "notes.jpg"}


@pytest.fixture(scope="session")
def sample_photos(photo_folder: Path) -> dict[str, Path]:
    """One file per tricky kind: a GIF, a PNG with alpha, a CMYK JPEG, a grey JPEG."""
    cat = photo_folder / "cat"
    return {
        "gif": next(cat.glob("*.gif")),
        "png-alpha": next(cat.glob("*.png")),
        "webp": next(cat.glob("*.webp")),
        "bmp": next(cat.glob("*.bmp")),
    }


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def fashion_run(tmp_path_factory, datasets_dir) -> yingshe.TrainResult:
    """A seed-cnn of half the default width trained for 3 epochs on 2,000 Fashion-MNIST images
    (about 76% on 500 test images, ~10 s on two idle cores). Its run folder holds the report and
    every figure `train` writes."""
    cfg = RunConfig()
    apply_overrides(
        cfg,
        [
            "data.spec=fashion-mnist",
            f"data.data_dir={datasets_dir}",
            "data.limit_train=2000",
            "data.limit_test=500",
            "train.epochs=3",
            "train.batch_size=64",
            "train.device=cpu",
            "model.kwargs={widths: [16, 32, 64, 128]}",
            f"train.out={tmp_path_factory.mktemp('fashion-run')}",
        ],
    )
    with one_thread():
        return yingshe.train(cfg)

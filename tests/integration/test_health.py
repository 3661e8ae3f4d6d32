"""`yingshe data check` on real images: planted duplicates and leakage, broken files, flipped
labels ranked by confident learning, and training that leaves out what the check lists."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from yingshe.cli import main
from yingshe.config import DataConfig
from yingshe.data.curate import curate
from yingshe.data.dataset import read_spec
from yingshe.health.check import run_check
from yingshe.health.hashing import grey_thumbnail, phash_bits

BROKEN_FILES = {"truncated.jpg", "empty.png", "notes.jpg"}  # planted by conftest's photo_folder
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, cifar_folder) -> tuple[Path, set[str], set[str]]:
    """The CIFAR slice with 8 training photos copied into test re-encoded (JPEG quality 50) and
    resized (to 48 or 24 px), and 3 copied byte for byte: (root, near copies, exact copies)."""
    root = tmp_path_factory.mktemp("planted") / "data"
    shutil.copytree(cifar_folder, root)
    near, exact = set(), set()
    for i, cls in enumerate(CIFAR_CLASSES[:8]):
        source = root / "train" / cls / f"{i + 3:04d}.jpg"
        image = (
            Image.open(source)
            .convert("RGB")
            .resize((48, 48) if i % 2 else (24, 24), Image.Resampling.BICUBIC)
        )
        target = root / "test" / cls / f"near-{i}.jpg"
        image.save(target, quality=50)
        near.add(str(target))
    for i, cls in enumerate(CIFAR_CLASSES[:3]):
        target = root / "test" / cls / f"exact-{i}.jpg"
        target.write_bytes((root / "train" / cls / f"{i + 20:04d}.jpg").read_bytes())
        exact.add(str(target))
    return root, near, exact


def test_phash_is_imagehash_phash(cifar_members):
    images = [Image.open(io.BytesIO(b)) for b in cifar_members["test"]["cat"][:20]]
    ours = phash_bits(np.stack([grey_thumbnail(im) for im in images]))
    theirs = np.stack([np.packbits(imagehash.phash(im).hash.flatten()) for im in images])
    assert np.array_equal(ours, theirs)


def test_planted_duplicates_across_splits_are_all_found(planted, tmp_path):
    root, near, exact = planted
    report = run_check(str(root), tmp_path / "check")
    found_near = {pair["a"] for pair in report["near_duplicates"]["across"]["test"]}
    assert near <= found_near
    groups = report["exact_duplicates"]["groups"]
    assert {k for g in groups for k in g if "/test/" in k} == exact
    assert report["exact_duplicates"]["test_images_with_train_copy"] == 3
    assert report["leakage"] >= 11
    excluded = set((tmp_path / "check" / "exclude.txt").read_text().split())
    partners = {p["b"] for p in report["near_duplicates"]["across"]["test"] if p["a"] in near}
    assert partners <= excluded  # the training copies, so test keeps its images
    for name in (
        "check.json",
        "check.md",
        "distributions.png",
        "near-test-train.png",
        "exact-duplicates.png",
    ):
        assert (tmp_path / "check" / name).stat().st_size > 0
    assert "--exclude exclude.txt" in (tmp_path / "check" / "check.md").read_text()


def test_clean_slice_has_no_exact_duplicates_or_leaks(cifar_folder, tmp_path):
    report = run_check(str(cifar_folder), tmp_path / "check")
    assert report["exact_duplicates"]["groups"] == []
    assert report["exact_duplicates"]["test_images_with_train_copy"] == 0
    assert report["unreadable"] == 0
    assert main(["data", "check", str(cifar_folder), "--out", str(tmp_path / "cli"), "--strict"]) == 0


def test_strict_fails_on_leakage_and_training_leaves_out_the_list(planted, tmp_path):
    root, _, exact = planted
    out = tmp_path / "check"
    assert main(["data", "check", str(root), "--out", str(out), "--strict"]) == 1
    listed = set((out / "exclude.txt").read_text().split())
    data = curate(read_spec(DataConfig(spec=str(root))), str(out / "exclude.txt"), False)
    kept = {data.splits[s].name(i) for s in data.splits for i in range(len(data.splits[s]))}
    assert listed and not (listed & kept)
    deduped = curate(read_spec(DataConfig(spec=str(root))), None, True)
    train = deduped.splits["train"]
    train_bytes = {train.files.read(i) for i in range(len(train))}
    assert not any(Path(e).read_bytes() in train_bytes for e in exact)


def test_broken_and_suspicious_files_are_named(photo_folder, tmp_path):
    report = run_check(str(photo_folder), tmp_path / "check")
    unreadable = {
        Path(f["key"]).name
        for f in report["files"]
        if f["problems"][0].startswith(("zero", "unread", "trunc"))
    }
    assert unreadable == BROKEN_FILES
    kinds = {Path(f["key"]).name: f["problems"] for f in report["files"]}
    assert kinds["empty.png"] == ["zero bytes"]
    assert kinds["truncated.jpg"][0].startswith("truncated")


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">HBBIII", 0, 8, 3, *images.shape) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">HBBI", 0, 8, 1, len(labels)) + labels.astype(np.uint8).tobytes())


def test_flipped_labels_rank_among_the_top_suspects(fashion_dir, fashion_run, tmp_path):
    """900 Fashion-MNIST training images, 27 (3%) given a wrong label; a 3-fold label check with
    the fashion_run's model (also its embeddings for near duplicates). Measured: 21 of the 27
    flips among the top 54 suspects (recall 0.78) on this seed."""
    from yingshe.data.sources import read_idx

    source = read_idx(fashion_dir)
    train, test = source.splits["train"], source.splits["test"]
    images, labels = train.images[:900, :, :, 0], train.labels[:900].copy()
    rng = np.random.default_rng(0)
    flipped = rng.choice(900, 27, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, 27)) % 10
    folder = tmp_path / "fashion-flipped"
    folder.mkdir()
    write_idx(folder, "train", images, labels)
    write_idx(folder, "t10k", test.images[:100, :, :, 0], test.labels[:100])
    (folder / "classes.txt").write_text("\n".join(source.classes))
    report = run_check(
        str(folder), tmp_path / "check", model=str(fashion_run.run_dir), folds=3, epochs=3, device="cpu"
    )
    suspects = [s["key"] for s in report["labels"]["suspects"]]
    top = set(suspects[: 2 * len(flipped)])
    recall = len(top & {f"train#{i}" for i in flipped}) / len(flipped)
    print(f"flipped-label recall in the top {2 * len(flipped)} suspects: {recall:.2f}")
    assert recall >= 0.6
    assert (tmp_path / "check" / "label-suspects.png").is_file()
    assert report["near_duplicates"]["method"] == "model embeddings"


@pytest.mark.parametrize("balance", ["weights", "sampler", "logit-adjust"])
def test_train_flags_build_a_long_tail_and_report_balanced_accuracy(balance, tmp_path):
    import json

    from yingshe.data.curate import long_tail_counts

    out = tmp_path / "run"
    argv = ["train", "--data", "digits", "--imbalance", "10", "--balance", balance, "--epochs", "1"]
    argv += [
        "--max-steps",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
        "train.plots=false",
        "data.val_fraction=0",
    ]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    largest = round(0.8 * 183)  # digits' largest class after the 20% test hold-out
    assert report["num_train"] == pytest.approx(long_tail_counts(largest, 10, 10.0).sum(), abs=10)
    assert 0 <= report["balanced_accuracy"] <= 1
    assert report["config"]["train"]["balance"] == balance


def test_exclude_list_errors_name_the_file_and_the_fix(cifar_folder, tmp_path):
    from yingshe.errors import YingsheError

    data = read_spec(DataConfig(spec=str(cifar_folder)))
    with pytest.raises(YingsheError, match="does not exist") as missing:
        curate(data, str(tmp_path / "nope.txt"), False)
    assert "exclude.txt" in missing.value.fix
    wrong = tmp_path / "other.txt"
    wrong.write_text("/elsewhere/a.jpg\ntrain#3\n")
    with pytest.raises(YingsheError, match="none of the 2 images"):
        curate(data, str(wrong), False)


COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def colour_folder(root: Path, per_class: int, test: bool = True) -> tuple[dict[str, str], set[str]]:
    """Class folders (under train/, beside a test/, when `test`) of 16 px noisy solid colours (a
    seed-cnn learns them in a few steps), a red and a green training image filed under the wrong
    colour, and two broken training files: ({flipped file: its true colour}, the broken files)."""
    rng = np.random.default_rng(0)
    train = root / "train" if test else root
    for folder, count in [(train, per_class)] + [(root / "test", 4)] * test:
        for cls, rgb in COLOURS.items():
            (folder / cls).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(rgb) + rng.integers(-40, 41, (16, 16, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / cls / f"{cls}-{i:03d}.png")
    flipped = {}
    for i, (true, given) in enumerate([("red", "blue"), ("green", "red")]):
        target = train / given / f"flipped-{true}.png"
        (train / true / f"{true}-{i:03d}.png").rename(target)
        flipped[str(target)] = true
    good = (train / "red" / "red-005.png").read_bytes()
    (train / "red" / "truncated.png").write_bytes(good[: len(good) // 3])
    (train / "blue" / "empty.png").write_bytes(b"")
    return flipped, {str(train / "red" / "truncated.png"), str(train / "blue" / "empty.png")}


def test_label_check_leaves_unreadable_training_files_out_of_the_folds(tmp_path):
    """The folds are cut from the readable training files (the unreadable ones go to the fold
    runs as data.exclude), so every readable image is checked, no broken one is, and the flipped
    labels rank in the top five with their true colour suggested: keys and rows stay aligned.
    Measured: ranks 1 and 2 (given p 0.17, 0.19; out-of-fold accuracy 83%)."""
    flipped, broken = colour_folder(tmp_path / "data", per_class=64)
    out = tmp_path / "check"
    report = run_check(str(tmp_path / "data"), out, folds=2, epochs=6, device="cpu")
    labels = report["labels"]
    assert labels["checked"] == 3 * 64 and labels["left_out_unreadable"] == 2
    assert set((out / "folds" / "unreadable.txt").read_text().split()) == broken
    assert broken <= set((out / "exclude.txt").read_text().split())
    suspects = [row.split(",") for row in (out / "label-suspects.csv").read_text().splitlines()[1:]]
    assert not {key for _, key, *_ in suspects} & broken
    suggested = {key: suggestion for _, key, _, suggestion, _ in suspects[:5]}
    assert {key: suggested.get(key) for key in flipped} == flipped
    assert "2 unreadable training files were left out of the folds" in (out / "check.md").read_text()


def test_label_check_without_a_test_split_holds_out_test_after_leaving_out_unreadable(tmp_path):
    """No test split: the test hold-out is cut from the readable files, in the pool as in the fold
    runs' excluded source (oof checks each held-out fold's files against the pool's keys)."""
    _, broken = colour_folder(tmp_path / "data", per_class=12, test=False)
    report = run_check(str(tmp_path / "data"), tmp_path / "check", folds=2, epochs=1, device="cpu")
    # 36 readable (13 blue, 11 green, 12 red), less the seeded 20% test hold-out of them (7)
    assert report["labels"]["checked"] == 29 and report["labels"]["left_out_unreadable"] == 2
    assert not {s["key"] for s in report["labels"]["suspects"]} & broken

"""Prepared shards from real images: exact round trips, unreadable files, crash safety, the cache."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from yingshe.config import DataConfig
from yingshe.data.dataset import build_dataset
from yingshe.data.decode import decode_many
from yingshe.data.images import UnreadableImage, decode_image
from yingshe.data.pack import prepare
from yingshe.data.shards import MANIFEST, PROGRESS, load_manifest
from yingshe.data.sources import read_source
from yingshe.errors import YingsheError

BROKEN = {"truncated.jpg", "empty.png", "notes.jpg"}
SHARD_OF_50 = 50 * 32 * 32 * 3 / 2**20  # shard_mb that makes shards of 50 CIFAR images


def reference(split, i: int, size: int, channels: int = 3) -> np.ndarray | None:
    """The pixels the one preprocessing path (images.decode_image) gives, or None if unreadable."""
    try:
        return decode_image(split.files.read(i), size, channels)
    except (UnreadableImage, OSError):
        return None


@pytest.mark.parametrize("size", [32, 24])
def test_prepared_shards_round_trip_every_pixel_and_label(cifar_folder, tmp_path, size):
    source = read_source(cifar_folder)
    manifest = prepare(source, tmp_path / "p", size, 3, workers=2, shard_mb=50 * size * size * 3 / 2**20)
    assert len(manifest["splits"]["train"]["shards"]) == 8 and len(manifest["splits"]["test"]["shards"]) == 4
    load_manifest(tmp_path / "p", verify=True)  # every file matches its SHA-256

    prepared = read_source(tmp_path / "p")  # a prepared folder is a source like any other
    assert prepared.classes == source.classes and prepared.channels == 3
    for name, split in source.splits.items():
        packed = prepared.splits[name]
        assert len(packed) == len(split)
        np.testing.assert_array_equal(packed.labels, split.labels)
        images = packed.packed.take(np.arange(len(packed)))
        assert images.shape == (len(split), size, size, 3)
        for i in range(len(split)):
            assert np.array_equal(images[i], reference(split, i, size)), split.name(i)


def test_decode_many_gives_the_reference_pixels_or_the_reference_error(cifar_folder, photo_folder):
    for root, sizes in ((cifar_folder, (32, 20)), (photo_folder, (32, 48))):
        split = read_source(root).splits["train"]
        blobs = [split.files.read(i) for i in range(len(split))]
        names = [split.name(i) for i in range(len(split))]
        for size in sizes:
            for channels in (3, 1):
                images, ok, errors = decode_many(blobs, size, channels, names)
                for i in range(len(split)):
                    expected = reference(split, i, size, channels)
                    assert ok[i] == (expected is not None), names[i]
                    if expected is None:
                        assert names[i] in errors[i]
                    else:
                        assert np.array_equal(images[i], expected), (names[i], size, channels)


def test_an_unreadable_image_is_reported_not_fatal(photo_folder, tmp_path):
    source = read_source(photo_folder)
    split = source.splits["train"]
    manifest = prepare(source, tmp_path / "p", 32, 3, workers=2)
    skipped = manifest["splits"]["train"]["skipped"]
    assert {Path(s["name"]).name for s in skipped} == BROKEN
    assert all(Path(s["name"]).name in s["reason"] for s in skipped)  # each reason names its file
    assert manifest["splits"]["train"]["count"] == len(split) - len(BROKEN)

    prepared = read_source(tmp_path / "p")
    assert any("unreadable" in note for note in prepared.notes)
    packed = prepared.splits["train"]
    kept = [i for i in range(len(split)) if Path(split.name(i)).name not in BROKEN]
    np.testing.assert_array_equal(packed.labels, split.labels[kept])
    images = packed.packed.take(np.arange(len(packed)))
    for j, i in enumerate(kept):
        assert np.array_equal(images[j], reference(split, i, 32))
        assert packed.name(j).endswith(f"#{i}")  # a prepared position maps back to its source file


KILLED_PREPARE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from yingshe.data.pack import prepare
    from yingshe.data.sources import read_source

    def slowly(done, total):
        time.sleep(0.05)  # a slow disk: the kill lands in the middle of the work

    prepare(read_source(Path(sys.argv[1])), sys.argv[2], 32, 3, workers=1, shard_mb=float(sys.argv[3]),
            chunk=10, progress=slowly)
    """
)


def test_a_killed_prepare_leaves_no_shard_a_later_run_accepts(cifar_folder, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PREPARE, str(cifar_folder), str(out), str(SHARD_OF_50)]
    )
    journal = out / PROGRESS
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 4:  # header + 3 shards
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST).exists(), "the prepare finished before it could be killed"

    with pytest.raises(YingsheError, match="unfinished"):
        read_source(out)  # nothing reads an unfinished folder
    records = [json.loads(line) for line in journal.read_text().splitlines()[1:] if line.endswith("}")]
    assert 3 <= len(records) < 12
    for record in records:  # whatever the journal vouches for is complete
        for key in ("images", "labels"):
            data = (out / record[key]["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record[key]["sha256"]

    # damage of the kinds a crash (or a disk) leaves: a torn journal line, a cut shard that the
    # journal does not list, a listed shard cut short, a stray temp file
    with open(journal, "a") as handle:
        handle.write('{"stem": "train/shard-0')
    listed = {r["stem"] for r in records}
    unlisted = next(f"train/shard-{k:05d}" for k in range(8) if f"train/shard-{k:05d}" not in listed)
    (out / "train").mkdir(exist_ok=True)
    (out / f"{unlisted}.images.npy").write_bytes(b"\x93NUMPY half a shard")
    cut = out / records[0]["images"]["path"]
    cut.write_bytes(cut.read_bytes()[:1000])
    (out / "train" / ".shard-00007.images.npy.999.tmp").write_bytes(b"partial")

    source = read_source(cifar_folder)
    resumed = prepare(source, out, 32, 3, workers=1, shard_mb=SHARD_OF_50)
    fresh = prepare(source, tmp_path / "fresh", 32, 3, workers=1, shard_mb=SHARD_OF_50)
    for name in ("train", "test"):
        got = [(s["images"]["sha256"], s["labels"]["sha256"]) for s in resumed["splits"][name]["shards"]]
        want = [(s["images"]["sha256"], s["labels"]["sha256"]) for s in fresh["splits"][name]["shards"]]
        assert got == want
    assert resumed["source"]["content_sha256"] == fresh["source"]["content_sha256"]
    load_manifest(out, verify=True)
    assert not journal.exists() and not list(out.rglob("*.tmp"))


def test_prepare_refuses_to_overwrite_other_data(cifar_folder, photo_folder, tmp_path):
    prepare(read_source(cifar_folder), tmp_path / "p", 16, 3, workers=1)
    with pytest.raises(YingsheError, match="another source"):
        prepare(read_source(photo_folder), tmp_path / "p", 16, 3, workers=1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("do not delete")
    with pytest.raises(YingsheError, match="not empty"):
        prepare(read_source(cifar_folder), tmp_path / "busy", 16, 3, workers=1)
    assert (tmp_path / "busy" / "thesis.tex").exists()


def test_training_finds_prepared_data_by_source_and_size(cifar_folder, tmp_path):
    folder = shutil.copytree(cifar_folder, tmp_path / "cifar")
    cfg = DataConfig(spec=str(folder), cache_dir=str(tmp_path / "cache"), val_fraction=0.1, workers=1)
    plain = build_dataset(replace(cfg, prepared="off"), seed=5)
    assert plain.train.files is not None
    assert build_dataset(cfg, seed=5).train.files is not None  # auto: nothing cached yet

    first = build_dataset(replace(cfg, prepared="always"), seed=5)
    assert first.train.packed is not None and first.test.packed is not None
    for got, want in ((first.train, plain.train), (first.val, plain.val), (first.test, plain.test)):
        np.testing.assert_array_equal(got.labels, want.labels)  # the same seeded hold-outs
        images = got.packed.take(np.arange(len(got)))
        assert all(np.array_equal(images[i], reference(want, i, 32)) for i in range(0, len(got), 7))

    again = build_dataset(cfg, seed=5)  # auto: found in the cache
    assert again.train.packed is not None
    assert build_dataset(replace(cfg, image_size=16), seed=5).train.files is not None  # size is in the key

    changed = folder / "train" / "cat" / "0000.jpg"
    changed.write_bytes((folder / "train" / "dog" / "0000.jpg").read_bytes())
    os.utime(changed, (1, 1))
    assert build_dataset(cfg, seed=5).train.files is not None  # a changed source misses the cache


def test_cli_prepare_then_train_on_the_same_spec(cifar_folder, tmp_path, capsys):
    from yingshe.api import train
    from yingshe.cli import main
    from yingshe.config import RunConfig

    cache, out = tmp_path / "cache", tmp_path / "prepared"
    args = ["--out", str(out), "--image-size", "16", "--workers", "1", "--cache-dir", str(cache)]
    rc = main(["data", "prepare", str(cifar_folder), *args])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train: 400 images" in printed and "test: 200 images" in printed
    command = f"yingshe train --data {cifar_folder} --image-size 16 data.cache_dir={cache}"
    assert f"these shards are read by: {command}" in printed
    assert "a run at the default 32 px, 3 channel(s) decodes the files again" in printed
    assert load_manifest(out)["image_size"] == 16

    cfg = RunConfig()
    cfg.data = DataConfig(spec=str(cifar_folder), image_size=16, cache_dir=str(cache), val_fraction=0)
    cfg.model.name = "seed-cnn"
    cfg.train.epochs, cfg.train.max_steps, cfg.train.batch_size = 1, 2, 64
    cfg.train.device, cfg.train.out = "cpu", str(tmp_path / "run")
    result = train(cfg)
    assert any(str(out) in note for note in result.report["data"]["notes"])  # trained from the shards
    assert result.report["num_test"] == 200

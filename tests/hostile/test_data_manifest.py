"""CSV manifests that would leak test images into training, and splits checked for leaks after
every way of splitting (issue #10). Manifests point at real CIFAR JPEGs written here."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from yingshe.cli import main
from yingshe.config import DataConfig
from yingshe.data.dataset import build_dataset
from yingshe.data.sources import ReadOptions, read_source
from yingshe.data.splits import Split
from yingshe.errors import YingsheError

CLASSES = ("cat", "dog", "ship")


@pytest.fixture(scope="module")
def images(tmp_path_factory, cifar_members) -> dict[str, list[Path]]:
    """12 real JPEGs per class, in one flat folder per class."""
    root = tmp_path_factory.mktemp("manifest-images")
    out = {}
    for cls in CLASSES:
        (root / cls).mkdir()
        out[cls] = []
        for i, blob in enumerate(cifar_members["train"][cls][:12]):
            path = root / cls / f"{i:02d}.jpg"
            path.write_bytes(blob)
            out[cls].append(path)
    return out


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return path


def base_rows(images: dict[str, list[Path]]) -> list[str]:
    return [f"{p},{cls}," for cls, paths in images.items() for p in paths]


def test_a_file_listed_twice_is_an_error_naming_both_rows(tmp_path, images, capsys):
    first = images["cat"][0]
    relative = os.path.relpath(first, tmp_path)  # the same file, spelled another way
    manifest = write_csv(tmp_path / "m.csv", [*base_rows(images), f"{relative},cat,"])
    rc = main(["train", "--data", str(manifest), "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"error: {manifest} lists 1 file(s) more than once: lines 2 and 38 ({relative})" in err
    assert "data.manifest_duplicates=collapse" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_collapse_keeps_the_first_row_before_splitting(tmp_path, images):
    manifest = write_csv(tmp_path / "m.csv", [*base_rows(images), *base_rows(images)[:5]])
    data = read_source(manifest, options=ReadOptions(manifest_duplicates="collapse"))
    assert len(data.splits["train"]) == 36
    assert "5 repeated manifest rows collapsed" in data.notes[0]
    with pytest.raises(YingsheError, match="is not a choice"):
        read_source(manifest, options=ReadOptions(manifest_duplicates="merge"))


def test_a_file_under_two_labels_or_in_two_splits_is_an_error(tmp_path, images):
    dog = images["dog"][3]
    two_labels = write_csv(tmp_path / "labels.csv", [*base_rows(images), f"{dog},cat,"])
    with pytest.raises(YingsheError) as err:
        read_source(two_labels, options=ReadOptions(manifest_duplicates="collapse"))  # never collapsed
    assert err.value.problem == f"{two_labels} lines 17 and 38: {dog} is labelled both 'dog' and 'cat'"
    two_splits = write_csv(tmp_path / "splits.csv", [*base_rows(images), f"{dog},dog,test"])
    with pytest.raises(YingsheError, match=f"line 38: {dog} is listed in both train and test"):
        read_source(two_splits)


def test_an_empty_label_is_an_error_not_a_class(tmp_path, images, capsys):
    manifest = write_csv(tmp_path / "m.csv", [*base_rows(images), f"{images['cat'][0]}x,  ,"])
    assert main(["data", "inspect", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert f"error: {manifest} line 38:" in err and "has an empty label" in err


def resolved(split: Split | None) -> set[str]:
    if split is None:
        return set()
    return {os.path.realpath(split.files.name(i)) for i in range(len(split))}


def assert_disjoint(spec, *expect_sizes) -> None:
    parts = [resolved(s) for s in (spec.train, spec.val, spec.test)]
    sizes = tuple(len(s) for s in (spec.train, spec.val, spec.test) if s is not None)
    assert sum(len(p) for p in parts) == sum(sizes)  # no file twice within a split either
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    if expect_sizes:
        assert sizes == expect_sizes


@pytest.mark.parametrize(
    "overrides,sizes",
    [
        # 12 per class: test 20% → 2 each; val 10% of the 10 left → 1 each
        ({}, (27, 3, 6)),
        ({"val_fraction": 0.0}, (30, 6)),
        ({"cv_folds": 3, "cv_fold": 2}, (20, 10, 6)),  # a third of the 30-image pool
        ({"limit_train": 12, "limit_test": 3}, (9, 3, 3)),  # at least one val image per class
    ],
)
def test_no_file_is_in_two_splits_after_any_split(tmp_path, images, overrides, sizes):
    manifest = write_csv(tmp_path / "m.csv", base_rows(images))
    cfg = DataConfig(spec=str(manifest), image_size=16, prepared="off", **overrides)
    assert_disjoint(build_dataset(cfg, seed=3), *sizes)


def test_no_file_is_in_two_splits_with_the_sources_own_splits(tmp_path, images):
    rows = [
        f"{p},{cls},{('train', 'val', 'test')[i % 3]}" for cls, ps in images.items() for i, p in enumerate(ps)
    ]
    manifest = write_csv(tmp_path / "m.csv", rows)
    spec = build_dataset(DataConfig(spec=str(manifest), image_size=16, prepared="off"), seed=0)
    assert_disjoint(spec, 12, 12, 12)
    folder = tmp_path / "tree"
    for split in ("train", "test"):
        for cls, paths in images.items():
            (folder / split / cls).mkdir(parents=True)
            for p in paths[:6] if split == "train" else paths[6:]:
                (folder / split / cls / p.name).symlink_to(p)
    assert_disjoint(
        build_dataset(DataConfig(spec=str(folder), image_size=16, prepared="off"), seed=0), 15, 3, 18
    )


def test_a_class_with_no_test_image_is_named(tmp_path, images, caplog):
    rows = [*base_rows({"cat": images["cat"], "dog": images["dog"]}), f"{images['ship'][0]},ship,"]
    manifest = write_csv(tmp_path / "m.csv", rows)
    with caplog.at_level(logging.WARNING, logger="yingshe.data.dataset"):
        spec = build_dataset(DataConfig(spec=str(manifest), image_size=16, prepared="off"), seed=0)
    note = "1 class(es) have no test image after splitting: ship"
    assert any(note in n for n in spec.notes)
    assert any(note in r.getMessage() for r in caplog.records)

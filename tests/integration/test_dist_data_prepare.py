"""`data prepare --num-shards N --shard-index I` on several machines, then `--merge`: the same
prepared dataset, byte for byte, as one prepare of the same folder of real images."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from yingshe.api import prepare_data
from yingshe.cli import main
from yingshe.config import DataConfig
from yingshe.data.dataset import read_spec
from yingshe.data.shards import MANIFEST, read_prepared, slice_journals
from yingshe.errors import YingsheError

SHARD_MB = 0.1  # 34 images of 32x32x3 a shard: 12 train + 6 test shards from 400 + 200 images


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def prepare_args(spec: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    flags = ["--image-size", "32", "--shard-mb", str(SHARD_MB), "--workers", "1", "--cache-dir", str(cache)]
    return ["data", "prepare", str(spec), "--out", str(out), *flags, *extra]


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def without_time(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "created"}


@pytest.fixture(scope="module")
def single(tmp_path_factory, cifar_folder) -> Path:
    out = tmp_path_factory.mktemp("single") / "prepared"
    cache = tmp_path_factory.mktemp("cache-single")
    code, _ = run_cli(*prepare_args(cifar_folder, out, cache))
    assert code == 0
    return out


def test_three_slices_and_merge_equal_one_prepare(tmp_path, cifar_folder, single):
    out, cache = tmp_path / "sliced", tmp_path / "cache"
    for index in (2, 0, 1):  # any order: each slice is its own job
        code, printed = run_cli(
            *prepare_args(cifar_folder, out, cache, "--num-shards", "3", "--shard-index", str(index))
        )
        assert code == 0 and f"prepared slice {index} of 3" in printed and "--merge" in printed
        assert not (out / MANIFEST).exists()
        with pytest.raises(YingsheError, match="unfinished prepared dataset"):
            read_prepared(out)  # nothing is accepted before the merge
    assert len(slice_journals(out)) == 3
    code, printed = run_cli(*prepare_args(cifar_folder, out, cache, "--merge"))
    assert code == 0 and "train: 400 images in 12 shard(s)" in printed
    assert not slice_journals(out)

    merged, alone = files_of(out), files_of(single)
    manifest, expected = json.loads(merged.pop(MANIFEST)), json.loads(alone.pop(MANIFEST))
    assert merged.keys() == alone.keys() and len(merged) == 2 * 18 + 2  # shards + per-split labels
    assert all(merged[k] == alone[k] for k in merged), "shard files differ from a single prepare"
    assert without_time(manifest) == without_time(expected)  # same plan, order, checksums, skips

    a, b = read_prepared(out), read_prepared(single)
    for name in ("train", "test"):
        assert np.array_equal(a.splits[name].labels, b.splits[name].labels)
        n = len(a.splits[name])
        assert np.array_equal(
            a.splits[name].packed.take(np.arange(n)), b.splits[name].packed.take(np.arange(n))
        )
    trained_on = read_spec(DataConfig(spec=str(out)))  # what training reads with --data OUT
    assert len(trained_on.splits["train"]) == 400 and trained_on.classes == b.classes
    code, printed = run_cli(*prepare_args(cifar_folder, out, cache, "--merge"))  # merging twice is harmless
    assert code == 0 and "train: 400 images" in printed
    assert json.loads((out / MANIFEST).read_text())["plan"] == manifest["plan"]


def test_a_killed_slice_is_refused_then_resumed(tmp_path, cifar_folder, single):
    out, cache = tmp_path / "sliced", tmp_path / "cache"

    class Killed(Exception):
        pass

    def die_after_two_shards(done: int, total: int) -> None:
        if done >= 2 * 34:
            raise Killed

    common = dict(image_size=32, shard_mb=SHARD_MB, workers=1, cache_dir=str(cache), num_shards=2)
    prepare_data(str(cifar_folder), out, shard_index=0, **common)
    with pytest.raises(Killed):
        prepare_data(str(cifar_folder), out, shard_index=1, progress=die_after_two_shards, **common)
    # what a kill mid-write leaves: a temporary shard file and a torn journal line
    stray = out / "train" / ".shard-00007.images.npy.x1y2.tmp"
    stray.write_bytes(b"half a shard")
    journal = next(j for j in slice_journals(out) if "00001-of-00002" in j.name)
    with open(journal, "a") as handle:
        handle.write('{"stem": "train/shard-000')
    with pytest.raises(YingsheError, match=r"not prepared yet \(slice\(s\) 1 of 2") as err:
        prepare_data(str(cifar_folder), out, merge=True, **common)
    assert "--num-shards 2 --shard-index I" in err.value.fix
    assert not (out / MANIFEST).exists()

    summary = prepare_data(str(cifar_folder), out, shard_index=1, **common)  # the rerun resumes
    assert summary["slice"] == [1, 2] and summary["shards"] == 9 and not stray.exists()
    prepare_data(str(cifar_folder), out, merge=True, **common)
    merged, alone = files_of(out), files_of(single)
    assert without_time(json.loads(merged.pop(MANIFEST))) == without_time(json.loads(alone.pop(MANIFEST)))
    assert merged == alone


def test_slice_arguments_are_checked(tmp_path, cifar_folder):
    out = tmp_path / "x"
    common = dict(image_size=32, shard_mb=SHARD_MB, workers=1, cache_dir=str(tmp_path / "c"))
    with pytest.raises(YingsheError, match="go together"):
        prepare_data(str(cifar_folder), out, shard_index=1, **common)
    with pytest.raises(YingsheError, match="not one of the 3 slices"):
        prepare_data(str(cifar_folder), out, num_shards=3, shard_index=3, **common)
    with pytest.raises(YingsheError, match="no prepared slices to merge"):
        prepare_data(str(cifar_folder), out, merge=True, **common)
    with pytest.raises(YingsheError, match="packed shards in slices"):
        prepare_data(str(cifar_folder), out, fmt="webdataset", num_shards=2, shard_index=0)
    prepare_data(str(cifar_folder), out, num_shards=4, shard_index=0, **common)
    other = {**common, "shard_mb": 0.2}  # a merge with other settings than the slices'
    with pytest.raises(YingsheError, match="prepared from another source"):
        prepare_data(str(cifar_folder), out, merge=True, **other)
    assert not (out / MANIFEST).exists()

"""The source-format registry, the EncodedImages contract and the data package's import graph
(issue #9): every registered format is recognised from a sample built here and read."""

from __future__ import annotations

import ast
import gzip
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yingshe.data import pack, sources
from yingshe.data.sources import FORMATS, ReadOptions, read_source, register_format, source_format
from yingshe.data.splits import EncodedImages, SourceData, Split
from yingshe.data.webdataset import write_webdataset

SRC = Path(__file__).resolve().parents[2] / "src" / "yingshe"


def folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "tree" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "tree" / cls / f"{i}.png")
    return root / "tree"


def tar_of(root: Path) -> Path:
    tree = folder(root)
    with tarfile.open(root / "t.tar.gz", "w:gz") as archive:
        archive.add(tree, arcname="tree")
    return root / "t.tar.gz"


def csv_of(root: Path) -> Path:
    tree = folder(root)
    rows = [f"{p},{p.parent.name}" for p in sorted(tree.rglob("*.png"))]
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "m.csv"


def json_manifest_of(root: Path) -> Path:
    import json

    tree = folder(root)
    items = [{"path": str(p), "labels": sorted({p.parent.name, "b"})} for p in sorted(tree.rglob("*.png"))]
    (root / "m.json").write_text(json.dumps(items))
    return root / "m.json"


def idx(root: Path) -> Path:
    out = root / "idx"
    out.mkdir()
    for prefix, n in (("train", 6), ("t10k", 4)):
        images = np.arange(n * 28 * 28, dtype=np.uint8).reshape(n, 28, 28)
        (out / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(
                b"\0\0\x08\x03" + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes()
            )
        )
        labels = (np.arange(n) % 2).astype(np.uint8)
        (out / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(b"\0\0\x08\x01" + n.to_bytes(4, "big") + labels.tobytes())
        )
    return out


def cifar_dir(root: Path) -> Path:
    out = root / "cifar-10-batches-py"
    out.mkdir()
    for name in [*sources.CIFAR10_TRAIN, "test_batch"]:
        batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]}
        (out / name).write_bytes(pickle.dumps(batch))
    (out / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x", b"y"]}))
    return out


def cifar_tar(root: Path) -> Path:
    src = cifar_dir(root)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(src, arcname="cifar-10-batches-py")
    return root / "cifar-10-python.tar.gz"


def webdataset_dir(root: Path) -> Path:
    write_webdataset(read_source(folder(root)), root / "wds", maxcount=4)
    return root / "wds"


def webdataset_tar(root: Path) -> Path:
    return sorted(webdataset_dir(root).glob("*.tar"))[0]


def prepared(root: Path) -> Path:
    pack.prepare(read_source(folder(root)), root / "p", 8, 3, workers=1)
    return root / "p"


SAMPLES: dict[str, Callable[[Path], Path]] = {
    "prepared": prepared,
    "idx": idx,
    "cifar-folder": cifar_dir,
    "webdataset-folder": webdataset_dir,
    "folder": folder,
    "csv": csv_of,
    "json-manifest": json_manifest_of,
    "webdataset-tar": webdataset_tar,
    "cifar-tar": cifar_tar,
    "tar": tar_of,
}


def test_every_registered_format_has_a_sample():
    assert [f.name for f in FORMATS] == list(SAMPLES)  # a new format brings its sample here


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_format_is_recognised_and_read(tmp_path, name):
    path = SAMPLES[name](tmp_path)
    assert source_format(path).name == name
    data = read_source(path)
    assert len(data.classes) == 2 and sum(len(s) for s in data.splits.values()) >= 4
    for split in data.splits.values():
        if split.files is not None:
            assert isinstance(split.files, EncodedImages)  # fingerprint() included
        assert list(split.fingerprint())


def test_a_new_format_is_one_reader_and_one_registration(tmp_path):
    arrays = tmp_path / "set.npz"
    np.savez(arrays, images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.array([0, 1, 0, 1]))

    def read_npz(path: Path, options: ReadOptions) -> SourceData:
        loaded = np.load(path)
        return SourceData(
            f"npz {path}", ["p", "q"], {"train": Split(loaded["labels"], images=loaded["images"])}
        )

    register_format("npz", lambda p: p.suffix == ".npz")(read_npz)
    try:
        assert read_source(arrays).description == f"npz {arrays}"
        with pytest.raises(ValueError, match="registered twice"):
            register_format("npz", lambda p: False)(read_npz)
    finally:
        FORMATS[:] = [f for f in FORMATS if f.name != "npz"]


def test_the_cache_key_follows_each_files_fingerprint(tmp_path):
    tree = folder(tmp_path)
    before = pack.source_identity(read_source(tree))
    victim = tree / "a" / "0.png"
    Image.new("RGB", (10, 10), "red").save(victim)
    assert pack.source_identity(read_source(tree)) != before


def module_imports(path: Path) -> set[str]:
    """yingshe.data modules imported at module level (not inside functions or TYPE_CHECKING)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("yingshe.data"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("yingshe.data"))
    return found


def test_the_data_package_has_no_import_cycles():
    modules = {f"yingshe.data.{p.stem}": p for p in (SRC / "data").glob("*.py") if p.stem != "__init__"}
    graph = {m: {d for d in module_imports(p) if d in modules and d != m} for m, p in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen)) for d in graph[start]
        )

    cycles = [m for m in graph if reaches(m, m, set())]
    assert cycles == []
    assert "yingshe.data.shards" not in graph["yingshe.data.splits"]
    assert "yingshe.data.loader" not in graph["yingshe.data.stream"]

"""`data inspect` names duplicates by the same hash and key as `data check` and exclude lists."""

import io

from PIL import Image

from yingshe.config import DataConfig
from yingshe.data.dataset import read_spec
from yingshe.data.inspect import inspect_source
from yingshe.health.scan import scan_source


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_inspect_duplicates_are_the_checks_exact_copies_by_key(tmp_path):
    for cls, name, colour in [
        ("cat", "a", "red"),
        ("cat", "b", "red"),
        ("dog", "c", "blue"),
        ("dog", "d", "green"),
    ]:
        (tmp_path / cls).mkdir(exist_ok=True)
        (tmp_path / cls / f"{name}.png").write_bytes(png(colour))
    source = read_spec(DataConfig(spec=str(tmp_path)))
    duplicates = inspect_source(source)["duplicates"]
    scan = scan_source(source)
    by_hash = {}
    for key, digest in zip(scan.keys, scan.hashes, strict=True):
        by_hash.setdefault(digest, []).append(key)
    assert [sorted(g) for g in duplicates] == [sorted(g) for g in by_hash.values() if len(g) > 1]
    assert len(duplicates) == 1 and len(duplicates[0]) == 2

"""Hostile tar archives: members that climb out, links, devices, truncation (issue #10).

Every archive is built here with `tarfile` around real CIFAR JPEGs; the CLI runs in-process.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from yingshe.cli import main
from yingshe.data.sources import ReadOptions, read_source
from yingshe.errors import YingsheError

HOSTILE = {
    "../evil.jpg": "escapes the archive root",
    "/abs/path/abs.jpg": "an absolute path",
    "root/../../x/climb.jpg": "escapes the archive root",
    "root/a/link.jpg": "a link",
    "root/b/hard.jpg": "a link",
    "root/a/dev.jpg": "a device or FIFO",
    "root/b/fifo.jpg": "a device or FIFO",
}


def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def hostile_tar(path: Path, jpegs: list[bytes], mode: str) -> Path:
    with tarfile.open(path, mode) as archive:
        for i, blob in enumerate(jpegs[:8]):
            add(archive, f"root/{'ab'[i % 2]}/{i}.jpg", blob)
        for name in ("../evil.jpg", "/abs/path/abs.jpg", "root/../../x/climb.jpg"):
            add(archive, name, jpegs[0])
        link = tarfile.TarInfo("root/a/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        hard = tarfile.TarInfo("root/b/hard.jpg")
        hard.type, hard.linkname = tarfile.LNKTYPE, "root/a/0.jpg"
        archive.addfile(hard)
        dev = tarfile.TarInfo("root/a/dev.jpg")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 5
        archive.addfile(dev)
        fifo = tarfile.TarInfo("root/b/fifo.jpg")
        fifo.type = tarfile.FIFOTYPE
        archive.addfile(fifo)
    return path


@pytest.fixture(scope="module")
def jpegs(cifar_members) -> list[bytes]:
    return cifar_members["train"]["cat"][:8]


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz")])
def test_escaping_members_links_and_devices_are_skipped_with_reasons(tmp_path, jpegs, capsys, suffix, mode):
    archive = hostile_tar(tmp_path / f"hostile{suffix}", jpegs, mode)
    before = sorted(p.name for p in tmp_path.parent.rglob("*"))
    assert main(["data", "inspect", str(archive), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == ["a", "b"]  # never "..", "root", "tmp" or "abs"
    assert summary["splits"]["train"]["images"] == 8
    skipped = summary["skipped"]
    assert len(skipped) == len(HOSTILE)
    for member, reason in HOSTILE.items():
        assert reason in skipped[f"{archive}:{member}"], (member, skipped)
    assert any("7 archive members skipped" in note for note in summary["notes"])
    assert sorted(p.name for p in tmp_path.parent.rglob("*")) == before  # nothing extracted anywhere


def truncated(path: Path, jpegs: list[bytes], compress: bool, keep: float) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for i, blob in enumerate(jpegs):
            add(archive, f"root/{'ab'[i % 2]}/{i}.jpg", blob)
        content = archive.offset  # the members end here; zero blocks and padding follow
    raw = gzip.compress(buffer.getvalue()) if compress else buffer.getvalue()
    path.write_bytes(raw[: int((len(raw) if compress else content) * keep)])
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("keep", [0.55, 0.8])
def test_truncated_archive_uses_the_readable_members_unless_strict(tmp_path, jpegs, compress, keep):
    archive = truncated(tmp_path / ("cut.tar.gz" if compress else "cut.tar"), jpegs, compress, keep)
    data = read_source(archive, options=ReadOptions(strict=False))
    read = sum(len(s) for s in data.splits.values())
    assert 2 <= read < len(jpegs)
    (damage,) = data.skipped.values()
    assert str(archive) in damage and f"read {read} images" in damage and "truncated or corrupt" in damage
    with pytest.raises(YingsheError) as err:
        read_source(archive, options=ReadOptions(strict=True))
    assert str(archive) in err.value.problem and f"read {read} images" in err.value.problem
    assert "data.strict=false" in err.value.fix


def test_archive_cut_at_a_member_boundary_is_noticed(tmp_path, jpegs):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for i, blob in enumerate(jpegs):
            add(archive, f"root/{'ab'[i % 2]}/{i}.jpg", blob)
        boundary = archive.offset  # tarfile would end iteration quietly at a cut here
        add(archive, "root/a/last.jpg", jpegs[0])
    cut = tmp_path / "boundary.tar"
    cut.write_bytes(buffer.getvalue()[:boundary])
    with pytest.raises(YingsheError, match="end-of-archive"):
        read_source(cut, options=ReadOptions(strict=True))
    assert sum(len(s) for s in read_source(cut).splits.values()) == len(jpegs)


def test_strict_training_on_a_truncated_archive_exits_2_naming_it(tmp_path, jpegs, capsys):
    archive = truncated(tmp_path / "cut.tar.gz", jpegs, True, 0.6)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(archive), "--epochs", "1", "--out", str(out), "data.strict=true"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"error: {archive} is truncated or corrupt" in err and "fix:" in err
    assert not (out / "last.pt").exists()

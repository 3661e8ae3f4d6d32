"""Places that cannot be written: a read-only filesystem, a full one, a file size limit, a path
under a file, a device. Each ends in exit 2 with error:/fix: naming the path and why, no
traceback, nothing half-written, and (where it can be known) before any training.

Root ignores mode bits, so chmod cannot make a read-only folder here. The read-only and full
filesystems are real mounts in a private mount namespace (`unshare -rm`: a read-only bind mount,
and a 64 KiB tmpfs); where namespaces are not allowed those two tests are skipped and say so. The
file size limit (RLIMIT_FSIZE, EFBIG), paths under a file and /dev/full need nothing special."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest
from run_helpers import (
    assert_clean_error,
    cli,
    snapshot,
    tiny_flags,
    tiny_run,
    yingshe_batch,
    yingshe_process,
)


def namespaces_allowed() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_mounts = pytest.mark.skipif(
    not namespaces_allowed(), reason="`unshare -rm` (user and mount namespaces) is not allowed here"
)


def in_namespace(setup: str) -> list[str]:
    """A prefix that runs `setup` (mount commands) in a private mount namespace, then the command."""
    return ["unshare", "-rm", "sh", "-c", f'{setup} && exec "$@"', "sh"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("hostile-writes") / "run")


def assert_no_temporary_files(folder: Path) -> None:
    assert not [p.name for p in folder.rglob("*.tmp")], "a failed write left its temporary file"


@needs_mounts
def test_read_only_and_full_filesystems_end_in_clear_errors(tmp_path):
    """One process in a private mount namespace, three runs: into a read-only bind mount and a
    full tmpfs (both refused before training), and into a 64 KiB tmpfs with room for the probe,
    config.yaml and metrics.csv but not last.pt (about 90 KB): the disk fills during training."""
    ro, full, small = (tmp_path / name for name in ("ro", "full", "small"))
    for folder in (ro, full, small):
        folder.mkdir()
    (ro / "keep.txt").write_bytes(b"keep")
    setup = " && ".join(
        [
            f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}",
            f"mount -t tmpfs -o size=64k tmpfs {full} && (cat /dev/zero > {full}/fill 2>/dev/null; true)",
            f"mount -t tmpfs -o size=64k tmpfs {small}",
        ]
    )
    read_only, filled, filling = yingshe_batch(
        tmp_path / "results.json",
        tiny_flags(ro / "run"),
        tiny_flags(full / "run"),
        tiny_flags(small / "run"),
        prefix=in_namespace(setup),
    )
    assert_clean_error(read_only["code"], read_only["err"], ro / "run", "Read-only file system", "EROFS")
    assert_clean_error(filled["code"], filled["err"], full / "run", "No space left on device", "ENOSPC")
    for before_training in (read_only, filled):
        assert "epoch" not in before_training["out"] + before_training["err"], "refused before training"
    assert snapshot(ro) == {"keep.txt": b"keep"} and not (ro / "run").exists()
    assert_clean_error(filling["code"], filling["err"], small / "run" / "last.pt", "ENOSPC", "free space")
    assert "epoch 1/1" in filling["err"], "this one failed while training, not before"


def test_file_size_limit_during_training_ends_in_a_clear_error(tmp_path):
    """RLIMIT_FSIZE at 16 KiB makes the first checkpoint write (best.pt, written before last.pt so
    a kill between the two never loses the best epoch) fail with EFBIG, as a full disk would: the
    error names the file, the run keeps what it wrote, no temporary file stays."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    out = tmp_path / "run"
    result = yingshe_process(*tiny_flags(out), preexec_fn=limit_file_size)
    assert_clean_error(result.returncode, result.stderr, out / "best.pt", "File too large", "EFBIG")
    assert (out / "config.yaml").is_file()
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()
    assert_no_temporary_files(out)
    assert not (out / ".yingshe.lock").exists()


def test_predict_output_on_a_device_or_under_a_file_is_refused_before_predicting(run, tmp_path, capsys):
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (8, 8), 128).save(image)
    code, out, err = cli(capsys, "predict", run, image, "--output", "/dev/full", "--device", "cpu")
    assert_clean_error(code, err, "/dev/full", ".csv or .json")  # the format is checked first
    assert Path("/dev/full").is_char_device() and not out, "refused before any prediction"
    fifo = tmp_path / "preds.csv"
    os.mkfifo(fifo)
    code, out, err = cli(capsys, "predict", run, image, "--output", fifo, "--device", "cpu")
    assert_clean_error(code, err, fifo, "not a regular file")
    assert fifo.is_fifo() and not out, "refused before any prediction, FIFO left as it was"
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    code, out, err = cli(capsys, "predict", run, image, "--output", plain / "preds.csv", "--device", "cpu")
    assert_clean_error(code, err, plain, "is a file")
    assert not out and plain.read_bytes() == b"x"


def test_evaluate_out_under_a_file_is_refused_before_evaluating(run, tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    before = snapshot(run)
    code, _, err = cli(capsys, "evaluate", run, "--out", plain / "eval", "--device", "cpu")
    assert_clean_error(code, err, plain, "is a file")
    assert snapshot(run) == before and plain.read_bytes() == b"x"

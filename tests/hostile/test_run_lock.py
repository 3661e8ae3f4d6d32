"""One process per run folder: an exclusive OS lock (flock on <folder>/.yingshe.lock) for the
life of a run. A second process fails at once naming the holder's PID; a holder killed with
SIGKILL leaves no stale lock, and neither does a forked worker that outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_helpers import assert_clean_error, cli, env, snapshot, start_light_holder, tiny_flags, tiny_run

from yingshe.errors import YingsheError
from yingshe.outputs import LOCK_NAME, RunLock, claim_run_folder, releases_claims


def wait_for_lock(folder: Path, pid: int, process: subprocess.Popen, limit: float = 600) -> None:
    """Until `pid` has written its claim into the folder's lock file."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, f"process {pid} ended before it locked {folder}"
        try:
            if json.loads((folder / LOCK_NAME).read_text()).get("pid") == pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    pytest.fail(f"process {pid} never locked {folder}")


def kill(process: subprocess.Popen) -> None:
    process.kill()  # SIGKILL: no handler runs, nothing is released by the process itself
    process.wait()


def test_second_training_fails_at_once_and_a_sigkilled_holder_leaves_no_stale_lock(tmp_path, capsys):
    out, other = tmp_path / "run", tmp_path / "other"
    tiny_run(other)
    argv = tiny_flags(out, epochs=1000)  # runs until killed
    log = (tmp_path / "holder.log").open("w")
    holder = subprocess.Popen(
        [sys.executable, "-m", "yingshe", *argv], stdout=log, stderr=subprocess.STDOUT, env=env()
    )
    try:
        wait_for_lock(out, holder.pid, holder)
        os.kill(holder.pid, signal.SIGSTOP)  # holds the lock, writes nothing while we look
        before = snapshot(out)
        started = time.monotonic()
        code, _, err = cli(capsys, *tiny_flags(out), "train.exist_ok=true")
        assert_clean_error(code, err, out, f"PID {holder.pid}")
        assert time.monotonic() - started < 30, "refused at once, not after building a run"
        for argv in (["report", other, "--out", out], ["evaluate", other, "--out", out]):
            code, _, err = cli(capsys, *argv)
            assert_clean_error(code, err, out, f"PID {holder.pid}")
        assert snapshot(out) == before
    finally:
        kill(holder)
        log.close()
    assert (out / LOCK_NAME).exists(), "SIGKILL leaves the lock file; the kernel dropped the lock"
    code, _, err = cli(capsys, *tiny_flags(out), "train.exist_ok=true")
    assert code == 0, err
    assert (out / "last.pt").is_file() and not (out / LOCK_NAME).exists()


def test_a_forked_worker_that_outlives_the_holder_does_not_keep_the_lock(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder, child = start_light_holder(folder, fork_child=True)
    try:
        with pytest.raises(YingsheError, match=f"PID {holder.pid}") as err:
            RunLock(folder).acquire()
        assert "another yingshe process" in err.value.problem
        kill(holder)
        os.kill(child, 0)  # the worker still runs, holding a copy of the lock's descriptor
        with RunLock(folder) as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        assert not (folder / LOCK_NAME).exists()
    finally:
        kill(holder)
        os.kill(child, signal.SIGKILL)


def test_a_failed_run_unlocks_and_takes_away_only_a_folder_it_made_and_left_without_results(tmp_path):
    @releases_claims
    def failing_run(folder: Path, *written: str) -> None:
        claim_run_folder(folder, exist_ok=True)
        for name in written:
            (folder / name).write_text("x\n")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        failing_run(tmp_path / "new", "config.yaml")
    assert not (tmp_path / "new").exists(), "a run that never wrote a checkpoint leaves nothing"
    with pytest.raises(KeyboardInterrupt):
        failing_run(tmp_path / "started", "config.yaml", "last.pt")
    assert sorted(p.name for p in (tmp_path / "started").iterdir()) == ["config.yaml", "last.pt"]
    (tmp_path / "theirs").mkdir()
    with pytest.raises(KeyboardInterrupt):
        failing_run(tmp_path / "theirs", "config.yaml")
    assert sorted(p.name for p in (tmp_path / "theirs").iterdir()) == ["config.yaml"], "not ours to remove"
    for folder in ("started", "theirs"):
        with RunLock(tmp_path / folder):  # every lock was released
            pass

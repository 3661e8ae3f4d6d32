"""Crash safety: a run SIGKILLed at any moment and resumed ends bit-identical to one never killed.

The run: a tiny seed-cnn on the digits (1,797 real 8×8 scans), 2 epochs of 20 steps, last.pt
every 7 steps, deterministic on one CPU thread. The uninterrupted run is the reference. The same
run in a child process is then killed three times and resumed after each kill with
`yingshe train --resume`: once just after a mid-epoch checkpoint (so the resume starts mid-epoch),
once inside a checkpoint write (the YINGSHE_TEST_KILL_IN_WRITE hook of `runs.write_checkpoint_bytes`
kills the process after half the temporary file is written), and once at a seeded random step.
Then every tensor of best.pt and last.pt must be `torch.equal` to the reference's, and metrics.csv
must match row for row in every column except the two timings (epoch_seconds,
train_images_per_second), which measure the machine, not the run.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
import tqdm
from support import one_thread

import yingshe
from yingshe import runs
from yingshe.cli import main
from yingshe.runs import load_checkpoint, read_metrics_csv

TIMING_COLUMNS = {"epoch_seconds", "train_images_per_second"}
tqdm.tqdm.monitor_interval = 0  # no tqdm monitor thread in this process: children are forked from it
ARGS = [
    *("--data", "digits", "--epochs", "2", "--batch-size", "64", "--device", "cpu", "--deterministic"),
    "train.checkpoint_every=7",
    "train.plots=false",
    "model.kwargs={widths: [8, 8, 8, 8]}",
]
TOTAL_STEPS = 40  # 2 epochs of 20 batches


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The run never interrupted, through the same CLI, in this process on one thread."""
    out = tmp_path_factory.mktemp("uninterrupted")
    with one_thread(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "--out", str(out), *ARGS]) == 0
    return out


def launch(*argv: str, kill_in_write: int | None = None) -> multiprocessing.Process:
    """`yingshe train ARGV` in a child process forked from this one (a fresh interpreter would
    spend most of this test importing torch on a loaded machine). It shares nothing with the
    other runs but the run folder: what it leaves there when killed is all the next one sees."""
    proc = multiprocessing.get_context("fork").Process(target=train_child, args=(argv, kill_in_write))
    proc.start()
    return proc


def train_child(argv: tuple[str, ...], kill_in_write: int | None) -> None:
    sys.stdout = sys.stderr = io.StringIO()  # the progress bar
    if kill_in_write is not None:
        os.environ[runs.KILL_IN_WRITE_ENV] = str(kill_in_write)
        runs._checkpoint_writes = 0  # counted from this process's start, as in `python -m yingshe`
    with one_thread():
        sys.exit(main(["train", *argv]))


def saved_step(run: Path) -> tuple[int, bool]:
    """The step of the run's last.pt and whether it is a mid-epoch checkpoint; (-1, False) if none."""
    try:
        checkpoint = load_checkpoint(run / "last.pt")
    except Exception:  # not written yet (atomic writes: never half a file)
        return -1, False
    return checkpoint.fit_state["step"], checkpoint.fit_state.get("progress") is not None


def kill_when(proc: multiprocessing.Process, run: Path, ready, delay: float) -> tuple[int, bool]:
    """SIGKILL `proc` `delay` seconds after its last.pt satisfies `ready(step, mid_epoch)`."""
    deadline, seen = time.monotonic() + 120, None
    while time.monotonic() < deadline and proc.is_alive():
        stat = (run / "last.pt").stat() if (run / "last.pt").exists() else None
        changed = stat is not None and (stat.st_ino, stat.st_mtime_ns) != seen
        if changed and ready(*saved_step(run)):
            time.sleep(delay)
            break
        seen = (stat.st_ino, stat.st_mtime_ns) if stat is not None else None
        time.sleep(0.01)
    assert proc.is_alive(), f"the run ended before the kill (exit code {proc.exitcode})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    return saved_step(run)


def finish(proc: multiprocessing.Process) -> None:
    proc.join(timeout=300)
    assert proc.exitcode == 0


def test_sigkill_at_any_moment_then_resume_is_bit_identical(reference, tmp_path):
    rng = random.Random(14)
    run = tmp_path / "run"

    # 1. mid-epoch: killed just after a mid-epoch last.pt, so the resume starts inside an epoch
    proc = launch("--out", str(run), *ARGS)
    step, mid_epoch = kill_when(proc, run, lambda step, mid: mid and step >= 7, rng.uniform(0, 0.05))
    assert 0 < step < TOTAL_STEPS
    resumed_mid_epoch = [mid_epoch]

    # 2. mid-write: the resumed process kills itself inside its 2nd checkpoint write
    proc = launch("--resume", str(run), kill_in_write=2)
    proc.join(timeout=300)
    if proc.is_alive():  # hung: do not leave it running
        proc.kill()
    assert proc.exitcode == -signal.SIGKILL, f"exit code {proc.exitcode} (None: it hung)"
    assert list(run.glob(".*.pt.*.tmp")), "the kill left the half-written temporary file"
    step, mid_epoch = saved_step(run)
    resumed_mid_epoch.append(mid_epoch)
    assert (run / "last.pt").is_file() and step < TOTAL_STEPS

    # 3. a seeded random later checkpoint, plus a random delay: wherever that lands
    assert step < TOTAL_STEPS - 12
    target = rng.randrange(step + 1, TOTAL_STEPS - 10)  # with time left to be killed in
    proc = launch("--resume", str(run))
    step, mid_epoch = kill_when(proc, run, lambda s, mid: s >= target, rng.uniform(0, 0.1))
    resumed_mid_epoch.append(mid_epoch)

    # 4. to the end
    finish(launch("--resume", str(run)))
    assert any(resumed_mid_epoch), "at least one resume started inside an epoch"
    assert not list(run.glob(".*.tmp")), "a resume clears the temporary files of killed writes"

    for name in ("best.pt", "last.pt"):
        got, want = load_checkpoint(run / name), load_checkpoint(reference / name)
        assert got.state_dict.keys() == want.state_dict.keys()
        for key, tensor in want.state_dict.items():
            assert torch.equal(got.state_dict[key], tensor), f"{name}: {key} differs"
        if want.optimizer:
            for index, state in want.optimizer["state"].items():
                for key, value in state.items():
                    assert torch.equal(
                        torch.as_tensor(got.optimizer["state"][index][key]), torch.as_tensor(value)
                    )
    assert without_timings(read_metrics_csv(run / "metrics.csv")) == without_timings(
        read_metrics_csv(reference / "metrics.csv")
    )


def without_timings(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def test_a_damaged_last_pt_is_reported_by_name_and_the_previous_one_used(reference, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    data = bytearray((run / "last.pt").read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 8):
        data[offset] ^= 0xFF  # flip bytes in the middle: tensor data
    (run / "last.pt").write_bytes(bytes(data))
    previous = load_checkpoint(run / "last.prev.pt")
    assert previous.fit_state["step"] < TOTAL_STEPS  # the fallback has steps left to redo

    with one_thread(), caplog.at_level("WARNING"):
        result = yingshe.train(resume=run)

    assert any("last.pt" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    notes = result.report["training"]["notes"]
    assert len(notes) == 1 and notes[0].startswith("last.pt was damaged")
    assert (run / "last.damaged.pt").is_file()
    got, want = load_checkpoint(run / "last.pt"), load_checkpoint(reference / "last.pt")
    for key, tensor in want.state_dict.items():  # redone from last.prev.pt: the same weights
        assert torch.equal(got.state_dict[key], tensor), key


def test_a_run_killed_before_its_first_checkpoint_starts_again_from_its_config(reference, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(reference / "config.yaml", run / "config.yaml")  # all a kill that early leaves
    (run / ".last.pt.x1y2.tmp").write_bytes(b"half")
    with one_thread():
        yingshe.train(resume=run, progress=False)
    got, want = load_checkpoint(run / "best.pt"), load_checkpoint(reference / "best.pt")
    for key, tensor in want.state_dict.items():
        assert torch.equal(got.state_dict[key], tensor), key
    assert not (run / ".last.pt.x1y2.tmp").exists()

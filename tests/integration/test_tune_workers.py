"""Several `yingshe tune` workers on one study: a journal file and a real PostgreSQL server, and a
worker killed with SIGKILL mid-trial.

Workers are forked processes running the CLI (fork, not spawn: the parent has torch imported
already, which a fresh interpreter on a loaded 2-core machine takes many seconds to repeat).
PostgreSQL comes from Debian's `postgresql` package (the Makefile installs it in CI): initdb into
a temporary folder, a server on a free port with its socket in that folder, stopped afterwards.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch

from yingshe.cli import main

GRID = [1e-3, 2e-3, 3e-3, 1e-2]


def flags(datasets_dir: Path, out: Path, space: Path, epochs: int = 1) -> list[str]:
    return [
        "tune",
        "--data",
        "fashion-mnist",
        "--space",
        str(space),
        "--limit-train",
        "300",
        "--limit-test",
        "60",
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--out",
        str(out),
        f"data.data_dir={datasets_dir}",
        "data.val_fraction=0.25",
        "model.kwargs={widths: [8, 16, 32]}",
    ]


def _worker(argv: list[str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1), os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    torch.set_num_threads(1)
    code = 1
    try:
        code = main(argv)
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)


def start_worker(argv: list[str], log: Path) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=_worker, args=(argv, str(log)))
    process.start()
    return process


def finish(workers: list[multiprocessing.Process], logs: list[Path], timeout: float = 600) -> None:
    for worker, log in zip(workers, logs, strict=True):
        worker.join(timeout)
        assert worker.exitcode == 0, log.read_text()[-3000:]


def grid_space(tmp_path: Path) -> Path:
    space = tmp_path / "space.yaml"
    space.write_text(f"lr: {GRID}\n")
    return space


def check_shared_grid(study: optuna.Study, out: Path) -> None:
    """Every grid point trained once, by one trial each, in one run folder each (a trial that drew
    a point another worker had drawn at the same moment is pruned before it trains)."""
    trials = [t for t in study.get_trials(deepcopy=False) if "duplicate_of" not in t.user_attrs]
    assert len(trials) == len(GRID), [(t.number, t.state, t.params) for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.params["optim.lr"] for t in trials) == GRID, "no point twice, none left out"
    folders = sorted(p.name for p in out.glob("trial-*"))
    assert folders == [f"trial-{t.number:04d}" for t in sorted(trials, key=lambda t: t.number)]


def test_two_workers_share_a_journal_file(tmp_path, datasets_dir):
    out, journal = tmp_path / "study", tmp_path / "journal.log"
    argv = [
        *flags(datasets_dir, out, grid_space(tmp_path)),
        "--storage",
        f"journal:{journal}",
        "--study",
        "j",
    ]
    argv += ["--trials", str(len(GRID))]  # each would run the whole grid alone
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [start_worker(argv, log) for log in logs]
    finish(workers, logs)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    check_shared_grid(optuna.load_study(study_name="j", storage=storage), out)
    ran = [log.read_text().count(": complete") for log in logs]
    assert sum(ran) == len(GRID) and all(ran), f"both workers took part: {ran}"


# --- a real PostgreSQL server --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server: initdb in a temporary folder, a free port, a unix socket in
    that folder; stopped and deleted afterwards. initdb refuses to run as root, so as root the
    server runs as `nobody`."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):  # `make test` installs them: missing is a failure, not a skip
        missing = "PostgreSQL server binaries (initdb, pg_ctl) not found"
        if os.environ.get("YINGSHE_SKIP_POSTGRES") == "1":
            pytest.skip(f"{missing}; YINGSHE_SKIP_POSTGRES=1")
        pytest.fail(f"{missing}: run `make test` (it installs postgresql) or apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="yingshe-pg-"))
    root.chmod(0o755)
    data, run = root / "data", root / "run"
    data.mkdir(), run.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "nobody"), shutil.chown(run, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], check=True, **quiet
    )
    options = f"-p {port} -k {run} -c listen_addresses='' -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(run / "log"), "-w", "start"],
        check=True,
        **quiet,
    )
    try:
        url = f"postgresql://postgres@/yingshe?host={run}&port={port}"
        subprocess.run(
            [
                postgres_bin("createdb") or "createdb",
                "-h",
                str(run),
                "-p",
                str(port),
                "-U",
                "postgres",
                "yingshe",
            ],
            check=True,
        )
        yield url
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], **quiet)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgresql_database(tmp_path, datasets_dir, postgres_url):
    out = tmp_path / "study"
    argv = [*flags(datasets_dir, out, grid_space(tmp_path)), "--storage", postgres_url, "--study", "pg"]
    argv += ["--trials", str(len(GRID))]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [start_worker(argv, log) for log in logs]
    finish(workers, logs)
    storage = optuna.storages.RDBStorage(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    check_shared_grid(optuna.load_study(study_name="pg", storage=storage), out)
    ran = [log.read_text().count(": complete") for log in logs]
    assert sum(ran) == len(GRID) and all(ran), f"both workers took part: {ran}"


# --- a worker killed mid-trial -------------------------------------------------------------------


def wait_for(path: Path, worker: multiprocessing.Process, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert worker.is_alive(), log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_a_worker_killed_mid_trial_leaves_a_study_a_new_worker_finishes(tmp_path, datasets_dir):
    out = tmp_path / "study"
    argv = [*flags(datasets_dir, out, grid_space(tmp_path), epochs=3), "--heartbeat", "1"]
    first = start_worker(argv, tmp_path / "w1.log")
    wait_for(out / "trial-0001" / "config.yaml", first, tmp_path / "w1.log")  # trial 1 has begun
    os.kill(first.pid, signal.SIGKILL)
    first.join()
    assert first.exitcode == -signal.SIGKILL
    time.sleep(2.5)  # past the grace period (2 heartbeats): its trial is stale
    second = start_worker(argv, tmp_path / "w2.log")
    finish([second], [tmp_path / "w2.log"])
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    killed = next(t for t in trials if t.number == 1)
    assert killed.state == optuna.trial.TrialState.FAIL, "the dead worker's trial ended failed"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == killed.params, "its point was trained again"
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["optim.lr"] for t in done) == GRID, "the study finished: every point once"
    with contextlib.suppress(FileNotFoundError):
        assert "best.yaml" in {p.name for p in out.iterdir()}

"""Optuna's pieces by name: storages, samplers and pruners. Nothing here samples, prunes or stores
on its own; each name maps onto one Optuna class.

Storages are where several workers meet:
- default: a SQLite file `study.db` in the study folder (one machine);
- `postgresql://user@host/db` (or any SQLAlchemy URL Optuna's RDBStorage takes): many machines;
- `journal:FILE`: Optuna's JournalStorage on a file backend (a shared filesystem, no server).

All of them carry a heartbeat, so a worker killed mid-trial leaves a trial that the next worker to
start a trial marks failed and queues again (Optuna's `fail_stale_trials` with
`RetryHeartbeatStaleTrialCallback`). RDBStorage has the heartbeat built in; Optuna's
JournalStorage has none, so `HeartbeatJournalStorage` adds it through Optuna's own
`BaseHeartbeat` interface, storing the beat as a trial system attribute (the machines' clocks
must agree to within the grace period).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from yingshe.errors import YingsheError
from yingshe.tune.space import SearchSpace

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "asha", "hyperband")
HEARTBEAT_ATTR = "yingshe_heartbeat"
MAX_RETRY = 3  # a trial whose worker died is queued again at most this many times


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage plus Optuna's heartbeat interface: a running trial whose last beat is older
    than `grace` seconds belongs to a dead worker."""

    def __init__(self, backend: JournalFileBackend, interval: int, grace: int) -> None:
        super().__init__(backend)
        self.interval, self.grace = interval, grace
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()
            if beat is not None and now - beat > self.grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.interval

    def get_heartbeat_stale_trial_callback(self):
        return self.retry


def make_storage(url: str | None, study_dir: Path, heartbeat: int) -> tuple[optuna.storages.BaseStorage, str]:
    """The storage for `url` (None: SQLite in the study folder) and a description for the report."""
    grace = 2 * heartbeat
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    if url is None:
        url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        if not path.name:
            raise YingsheError(f"journal storage {url!r} names no file", "write journal:/shared/study.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(path))
        return HeartbeatJournalStorage(backend, heartbeat, grace), f"journal file {path}"
    if "://" not in url:
        raise YingsheError(
            f"unknown storage {url!r}",
            "use postgresql://user@host/db, sqlite:///path.db or journal:FILE (default: study.db in --out)",
        )
    for plain in ("postgresql://", "postgres://"):  # SQLAlchemy 2.1 picks psycopg 3; we ship psycopg2
        if url.startswith(plain):
            url = "postgresql+psycopg2://" + url.removeprefix(plain)
    for attempt in range(3):
        try:
            storage = RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=grace,
                heartbeat_stale_trial_callback=retry,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
            break
        except Exception as err:  # connection refused, missing driver, bad URL
            # two workers starting on an empty database race to create its tables: the loser
            # sees a duplicate and finds them there on a second try
            if attempt < 2 and "already exists" in str(err):
                time.sleep(1.0 + attempt)
                continue
            raise YingsheError(
                f"cannot open the study storage {redact(url)}: {type(err).__name__}: {err}"[:600],
                "check the URL, that the database server is running and that its driver "
                "(psycopg2 for postgresql://) is installed",
            ) from err
    return storage, redact(url)


def redact(url: str) -> str:
    """A storage URL without its password, for reports and messages."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, at, host = rest.rpartition("@")
        return f"{scheme}://{creds.split(':', 1)[0]}{at}{host}"
    return url


def sampler_seed(seed: int, shared: bool) -> int:
    """The sampler's seed: the run seed for a study of its own (reproducible); for a shared storage,
    mixed with the process id so that workers do not all propose the same points."""
    return seed if not shared else (seed * 1_000_003 + os.getpid()) % 2**31


def make_sampler(
    name: str, space: SearchSpace, seed: int, startup: int | None = None
) -> optuna.samplers.BaseSampler:
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        # constant_liar: running trials count as bad guesses, so parallel workers spread out
        kwargs = {"n_startup_trials": startup} if startup is not None else {}
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True, **kwargs)
    raise YingsheError(f"unknown sampler {name!r}", "use " + ", ".join(SAMPLERS))


def make_pruner(
    name: str, epochs: float, startup: int | None = None, options: dict[str, Any] | None = None
) -> optuna.pruners.BasePruner:
    """Pruners count epochs as their steps: a trial reports its validation figure after each.
    `options` are keyword arguments of the Optuna class that replace the defaults here, e.g.
    {"min_resource": 2, "reduction_factor": 2} for ASHA's rungs at epochs 2, 4, 8 …"""
    options = dict(options or {})
    if name == "none":
        kind, defaults = optuna.pruners.NopPruner, {}
    elif name == "median":
        kind, defaults = optuna.pruners.MedianPruner, {"n_startup_trials": 2 if startup is None else startup}
    elif name == "asha":
        kind, defaults = optuna.pruners.SuccessiveHalvingPruner, {"min_resource": 1, "reduction_factor": 3}
    elif name == "hyperband":
        kind = optuna.pruners.HyperbandPruner
        defaults = {"min_resource": 1, "max_resource": max(math.ceil(epochs), 1), "reduction_factor": 3}
    else:
        raise YingsheError(f"unknown pruner {name!r}", "use " + ", ".join(PRUNERS))
    try:
        return kind(**{**defaults, **options})
    except (TypeError, ValueError) as err:  # an unknown keyword or a value Optuna refuses
        raise YingsheError(
            f"bad options {options} for the {name} pruner: {err}",
            f"use keyword arguments of optuna.pruners.{kind.__name__}",
        ) from err

"""Claiming the folders and files yingshe writes: refuse what would be overwritten, prove the
place is writable before any work, and hold an OS lock on a run folder for the life of the run.

Order of a command that writes a folder (train, evaluate, cv, report):
1. `check_*` before the expensive work: creates nothing, changes nothing. It refuses a folder
   that holds someone else's files, one another process has locked, and a place that cannot be
   written (read-only, full, a path under a file), naming the path and why.
2. `claim_*` once the work is ready to write (model and data built): creates the folder, takes
   the lock (`RunLock`, an `fcntl.flock` on `.yingshe.lock` inside it) and checks again, since
   another process may have started meanwhile.
3. The lock is released when the function decorated with `@releases_claims` returns or raises;
   if the process dies (even by SIGKILL) the kernel releases it, so a lock is never stale. A
   claimed folder that the failed function created and left without results (a run's
   config.yaml at most, no checkpoint) is removed, so a run that could not start leaves nothing.

An `OSError` while writing (`write_error`) becomes a `YingsheError` naming the file and the likely
fix; it stays an `OSError` too, so code that already handles those still does.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from yingshe.errors import YingsheError

log = logging.getLogger(__name__)

LOCK_NAME = ".yingshe.lock"
RUN_MARKERS = ("last.pt", "best.pt")  # a folder holding either is a training run
_held: list[RunLock] = []  # every lock this process holds, closed in forked children
_scopes = threading.local()
F = TypeVar("F", bound=Callable[..., Any])


class WriteError(YingsheError, OSError):
    """An `OSError` while writing an output, told as a problem and a fix (still an `OSError`)."""


_FIXES = {
    errno.ENOSPC: "the disk is full: free space there, or write somewhere else (--out / --output)",
    errno.EDQUOT: "the disk quota is used up: free space there, or write somewhere else",
    errno.EFBIG: "the file size limit (ulimit -f) or the filesystem's largest file was reached: "
    "raise the limit or write somewhere else",
    errno.EROFS: "that filesystem is mounted read-only: write somewhere else (--out / --output)",
    errno.EACCES: "you may not write there: choose a folder you own, or fix its permissions",
    errno.EPERM: "you may not write there: choose a folder you own, or fix its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EISDIR: "that path is a folder: give a file name",
    errno.ENOENT: "that place does not exist or cannot hold files: choose another path",
}


def write_error(path: str | Path, err: OSError, doing: str = "write") -> WriteError:
    """`err` (raised writing `path`) as a `WriteError` naming the path, the reason and a fix."""
    reason = err.strerror or str(err)
    code = errno.errorcode.get(err.errno or 0, "")
    problem = f"cannot {doing} {path}: {reason}" + (f" ({code})" if code else "")
    fix = _FIXES.get(err.errno or 0, "check the disk and the path, or write somewhere else")
    wrapped = WriteError(problem, fix)
    wrapped.errno, wrapped.strerror, wrapped.filename = err.errno, err.strerror, str(path)
    return wrapped


# ---------------------------------------------------------------------------------------- probes


def nearest_existing(path: Path) -> Path:
    """`path` itself if it exists, else its closest existing ancestor (what a mkdir would write)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def probe_folder(folder: str | Path) -> None:
    """Prove that files can be created in `folder`, or that it could be created, leaving nothing.

    A temporary file is created, written, fsynced and deleted in the folder (or in its nearest
    existing ancestor when the folder does not exist yet). Mode bits alone would miss a read-only
    mount, a full disk or a path under a file; the real write does not, and works for root too.
    """
    folder = Path(folder)
    base = nearest_existing(folder)
    if not base.is_dir():
        raise WriteError(
            f"cannot create {folder}: {base} is a file, not a folder",
            "choose an --out path whose parents are folders",
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".yingshe-probe-", suffix=".tmp", dir=base)
    except OSError as err:
        raise write_error(folder, err, "create files in" if base == folder else "create") from err
    try:
        os.write(fd, b"yingshe write probe\n")
        os.fsync(fd)
    except OSError as err:
        raise write_error(folder, err, "write files in") from err
    finally:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)


def check_output_file(path: str | Path) -> None:
    """Before a command computes anything: `path` (a file it will replace atomically) must be a
    regular file or absent, in a folder that can be written. Renaming over a device such as
    /dev/full, a FIFO or a folder would replace it, so those are refused."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, FIFO or socket)"
        raise WriteError(f"cannot write {path}: it is {kind}", "give the name of a new or ordinary file")
    probe_folder(path.parent)


# ----------------------------------------------------------------------------------------- locks


class RunLock:
    """An exclusive `flock` on `<folder>/.yingshe.lock`; the file names the holder (PID, host).

    The lock belongs to an open file, so the kernel drops it when the process exits however it
    dies. Release deletes the file while still holding the lock; `acquire` checks after locking
    that the file it locked is still the one at the path, so a lock on a file just deleted by a
    releasing holder is never taken for a valid one.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.created = False  # the claim made the folder: a failed run may take it away again
        self.disposable: tuple[str, ...] = ()  # files the claimer writes first, removed with it

    def acquire(self, purpose: str = "a run") -> RunLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as err:
                raise write_error(self.path, err, "create the lock file") from err
            try:
                _flock_briefly(fd)
            except BlockingIOError:
                os.close(fd)
                raise YingsheError(
                    f"{self.folder} is in use by another yingshe process ({describe_holder(self.path)})",
                    "wait until it has finished, stop it, or choose another --out",
                ) from None
            except OSError as err:  # a filesystem without flock (some network mounts)
                log.warning("cannot lock %s (%s): %s is written without a lock", self.path, err, purpose)
                os.close(fd)
                self.path.unlink(missing_ok=True)
                return self
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file a releasing holder had just deleted: try again
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "for": purpose}).encode())
        self.fd = fd
        _held.append(self)
        return self

    def release(self, failed: bool = False) -> None:
        """Unlock. After a failure, a folder this claim created that holds nothing but the
        `disposable` files (a run's config.yaml before its first checkpoint) is removed."""
        if self.fd is None:
            return
        abandon = failed and self.created and set(foreign_entries(self.folder)) <= set(self.disposable)
        if abandon:
            for name in self.disposable:
                with contextlib.suppress(OSError):
                    (self.folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)  # still locked here, see acquire
        os.close(self.fd)  # closing drops the flock
        self.fd = None
        if self in _held:
            _held.remove(self)
        if abandon:
            _remove_if_empty(self.folder)

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _flock_briefly(fd: int, tries: int = 6) -> None:
    """LOCK_EX, retried for about 0.3 s: `check_not_locked` in another process holds a shared
    lock for an instant, which must not read as a running holder. A real holder keeps it."""
    fcntl = _fcntl()
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.05)


def _fcntl() -> Any:
    """The fcntl module; where there is none (Windows) an OSError, so the run goes on unlocked."""
    try:
        import fcntl
    except ImportError as err:
        raise OSError(errno.EOPNOTSUPP, "no fcntl.flock on this platform") from err
    return fcntl


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk, opened = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def describe_holder(lock_path: Path) -> str:
    """`PID 123 on host h, for train` from a lock file; what is known when it cannot be read."""
    try:
        holder = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not isinstance(holder, dict) or "pid" not in holder:
        return "PID not yet recorded"
    text = f"PID {holder['pid']}"
    if holder.get("host") and holder["host"] != socket.gethostname():
        text += f" on host {holder['host']}"
    return text + (f", {holder['for']}" if holder.get("for") else "")


def check_not_locked(folder: Path) -> None:
    """Fail at once if another process holds `folder`'s lock; reads only, creates nothing."""
    path = folder / LOCK_NAME
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # gone meanwhile, or unreadable: the claim will tell
    try:
        fcntl = _fcntl()
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise YingsheError(
            f"{folder} is in use by another yingshe process ({describe_holder(path)})",
            "wait until it has finished, stop it, or choose another --out",
        ) from None
    except OSError:
        pass
    finally:
        os.close(fd)  # also drops the shared lock just taken


def _close_in_child() -> None:
    """A forked worker (DataLoader, decoding pool) must not keep a run's lock alive after the run's
    process dies: close its copies. Closing a copy never unlocks the parent's descriptor."""
    for lock in _held:
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
            lock.fd = None
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


# ------------------------------------------------------------------------------ claims and scopes


def releases_claims(func: F) -> F:
    """Release every folder `func` claims when it returns or raises, and turn an `OSError` raised
    on a file inside a claimed folder into a `WriteError` naming it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stack = _scope_stack()
        stack.append([])
        failed = True
        try:
            result = func(*args, **kwargs)
            failed = False
            return result
        except OSError as err:
            if isinstance(err, YingsheError) or not err.filename:
                raise
            name = Path(os.fsdecode(err.filename))
            if any(lock.folder in (name, *name.parents) for lock in stack[-1]):
                raise write_error(name, err) from err
            raise
        finally:
            for lock in reversed(stack.pop()):
                lock.release(failed)

    return wrapper  # type: ignore[return-value]


def _scope_stack() -> list[list[RunLock]]:
    if not hasattr(_scopes, "stack"):
        _scopes.stack = []
    return _scopes.stack


def _hold(lock: RunLock) -> None:
    stack = _scope_stack()
    if stack:
        stack[-1].append(lock)
    else:  # called outside @releases_claims: held until the process exits
        log.debug("lock on %s held until exit (no claiming scope)", lock.folder)


def foreign_entries(folder: Path) -> list[str]:
    """What `folder` holds besides yingshe's own lock file, sorted."""
    try:
        return sorted(name for name in os.listdir(folder) if name != LOCK_NAME)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise write_error(folder, err, "read") from err


def check_run_folder(
    folder: str | Path, resuming: bool = False, exist_ok: bool = False, *, locked: bool = False
) -> None:
    """Before a run builds anything: may it write into `folder`? Creates and changes nothing.

    Refused: a path that is a file; a folder another process holds; a folder holding files
    unless this is a resume (it holds last.pt) or `exist_ok` (train.exist_ok=true) says the
    files may be replaced; a place that cannot be written. `locked`: this process holds the lock."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise YingsheError(f"--out {folder} is a file, not a folder", "choose a new or empty folder")
    if folder.is_dir():
        if not locked:
            check_not_locked(folder)
        entries = foreign_entries(folder)
        if entries and not resuming and not exist_ok:
            if any(marker in entries for marker in RUN_MARKERS):
                raise YingsheError(
                    f"{folder} already holds a run (last.pt)",
                    f"continue it with --resume {folder}, choose another --out, or set train.exist_ok=true",
                )
            raise YingsheError(
                f"{folder} is not empty and is not a yingshe run: it holds {_listing(entries)}",
                "choose a new or empty --out, or set train.exist_ok=true to write into it "
                "(its files of the same names would be replaced)",
            )
    probe_folder(folder)


def claim_run_folder(
    folder: str | Path, resuming: bool = False, exist_ok: bool = False, purpose: str = "train"
) -> Path:
    """Create `folder`, lock it and check it again (another run may have started meanwhile).
    Inside `@releases_claims` the lock lasts until that function ends. If the claim fails, a
    folder this call created is removed again."""
    return _claim(
        folder, purpose, lambda f: check_run_folder(f, resuming, exist_ok, locked=True), ("config.yaml",)
    )


def _claim(
    folder: str | Path, purpose: str, check: Callable[[Path], None], disposable: tuple[str, ...] = ()
) -> Path:
    """Create `folder`, lock it for `purpose`, then `check` it under the lock; on failure release
    the lock and remove the folder if this call created it. `disposable`: files the lock's release
    may remove with a folder it created."""
    folder = Path(folder)
    created = not os.path.lexists(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(folder, err, "create") from err
    lock = RunLock(folder)
    try:
        lock.acquire(purpose)
        check(folder)
    except BaseException:
        lock.release()
        if created:
            _remove_if_empty(folder)
        raise
    lock.created, lock.disposable = created, disposable
    _hold(lock)
    return folder


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def check_report_folder(
    folder: str | Path,
    writes: Iterable[str],
    same_kind: Callable[[dict[str, Any]], bool],
    what: str,
    *,
    locked: bool = False,
) -> None:
    """Before a report is computed: `folder` must not be a run, and every file the report
    `writes` that is already there must belong to an earlier report of the same kind (judged
    from its report.json by `same_kind`), which is then replaced. Creates nothing."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise YingsheError(f"--out {folder} is a file, not a folder", f"give a folder for the {what}")
    if folder.is_dir():
        if not locked:
            check_not_locked(folder)
        if any((folder / marker).exists() for marker in RUN_MARKERS):
            raise YingsheError(
                f"{folder} is a run folder: its report.json, report.md and plots would be overwritten",
                f"give --out a new or empty folder for the {what}",
            )
        clashes = [name for name in writes if os.path.lexists(folder / name)]
        if clashes and not _earlier_report(folder, same_kind):
            raise YingsheError(
                f"{folder} holds {_listing(clashes)}, which the {what} would overwrite, and they are "
                f"not from an earlier {what}",
                f"give --out a new or empty folder for the {what}",
            )
    probe_folder(folder)


def claim_report_folder(
    folder: str | Path,
    writes: Iterable[str],
    same_kind: Callable[[dict[str, Any]], bool],
    what: str,
) -> Path:
    """`check_report_folder`, then create and lock the folder as `claim_run_folder` does."""
    return _claim(folder, what, lambda f: check_report_folder(f, writes, same_kind, what, locked=True))


def _earlier_report(folder: Path, same_kind: Callable[[dict[str, Any]], bool]) -> bool:
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and same_kind(report)


def _listing(names: list[str], shown: int = 8) -> str:
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")

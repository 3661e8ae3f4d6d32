"""The run folder: its layout, atomic writes and checkpoint files.

Every file is written to a temporary name in the same folder, flushed to disk and renamed over
the target, so a crash or Ctrl-C leaves either the old file or the new one, never half of one.
Checkpoints hold tensors and plain data only and load with `torch.load(weights_only=True)`;
their fields are declared once, in `schema.Checkpoint`. Each carries a SHA-256 of its contents
(`integrity.payload_digest`) that the reader checks; `last.pt` keeps its previous version as
`last.prev.pt`, so `--resume` falls back to it when `last.pt` is damaged.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from yingshe.errors import YingsheError
from yingshe.integrity import ALGORITHM, payload_digest
from yingshe.outputs import write_error
from yingshe.schema import Checkpoint

log = logging.getLogger(__name__)
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a write failed, never a read

CHECKSUM_KEY = "checksum"  # {"sha256": hex} over the rest of the payload
KILL_IN_WRITE_ENV = "YINGSHE_TEST_KILL_IN_WRITE"  # test hook, see `write_checkpoint_bytes`
_checkpoint_writes = 0  # checkpoint files this process has written (for the test hook)


class DamagedCheckpoint(YingsheError):
    """A checkpoint file that does not load or does not match its checksum."""


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle whose content appears at `path` only when the block completes: written to
    a temporary name beside it, fsynced, renamed; deleted instead if the block raises. Used for
    run files, prepared shards and WebDataset tars alike. A failed write (full disk, read-only
    folder, size limit) is raised as `outputs.WriteError`, an OSError that names the path and a fix."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    in_block = False  # an OSError of the caller's block is its own unless a write failed
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; runs and shards are shared
        with os.fdopen(fd, "wb") as handle:
            in_block = True
            yield handle
            in_block = False
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        ours = isinstance(err, OSError) and not isinstance(err, YingsheError)
        if ours and (not in_block or err.errno in WRITE_ERRNOS):
            raise write_error(path, err) from err
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def save_checkpoint(path: str | Path, checkpoint: Checkpoint, keep_previous: bool = False) -> None:
    """Write a checkpoint atomically, in the flat plain-data form `Checkpoint.to_dict` gives, with
    the checksum of its contents. With `keep_previous`, the file it replaces is first kept as
    `previous_path(path)` (last.pt → last.prev.pt), so a checkpoint is always there to fall back to."""
    payload = checkpoint.to_dict()
    payload[CHECKSUM_KEY] = {ALGORITHM: payload_digest(payload)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = Path(path)
    if keep_previous and path.is_file():
        keep_copy(path, previous_path(path))
    write_checkpoint_bytes(path, buffer.getvalue())


def previous_path(path: Path) -> Path:
    """Where the version of `path` before the latest is kept: last.pt → last.prev.pt."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def keep_copy(path: Path, copy: Path) -> None:
    """Make `copy` hold `path`'s content, atomically: a hard link renamed over `copy` (no bytes
    copied; the next atomic write of `path` gives `path` a new inode and leaves `copy` alone),
    or a byte copy where the file system has no hard links."""
    if copy.is_file() and not copy.is_symlink() and os.path.samefile(path, copy):
        # already one file (a run killed between keeping the copy and writing the new `path`):
        # renaming a link over its own file is a no-op that would leave the link behind
        return
    fd, name = tempfile.mkstemp(prefix=f".{copy.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()
    try:
        os.link(path, tmp)
        os.replace(tmp, copy)
    except OSError:
        tmp.unlink(missing_ok=True)
        with atomic_file(copy) as handle, path.open("rb") as source:
            shutil.copyfileobj(source, handle)


def write_checkpoint_bytes(path: Path, data: bytes) -> None:
    """`atomic_write_bytes`, plus a fault-injection hook for the crash tests: with the environment
    variable YINGSHE_TEST_KILL_IN_WRITE=N, this process SIGKILLs itself in its Nth checkpoint
    write, after half of the bytes reached the temporary file (the target is never touched)."""
    global _checkpoint_writes
    _checkpoint_writes += 1
    kill_at = os.environ.get(KILL_IN_WRITE_ENV)
    with atomic_file(path) as handle:
        if kill_at and int(kill_at) == _checkpoint_writes:
            handle.write(data[: len(data) // 2])
            handle.flush()
            os.fsync(handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        handle.write(data)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The one reader of checkpoints: a run folder (its best.pt, else last.pt) or a .pt file,
    loaded without unpickling code, checked against its checksum (files written before
    checksums have none) and for format and version by `Checkpoint.from_dict`."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_in(path)
    if not path.is_file():
        raise YingsheError(f"checkpoint {path} does not exist", "pass a run folder or a .pt file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zip, foreign objects
        raise DamagedCheckpoint(
            f"{path} is not a loadable yingshe checkpoint ({type(err).__name__}: {err})"[:600],
            "pass best.pt or last.pt from a yingshe run folder; other files are not loaded, "
            "since unpickling arbitrary objects would run their code",
        ) from err
    if isinstance(payload, dict) and CHECKSUM_KEY in payload:
        check_digest(payload, path)
    return Checkpoint.from_dict(payload, str(path))


def check_digest(payload: dict[str, Any], path: Path) -> None:
    stored = payload.pop(CHECKSUM_KEY)
    expected = stored.get(ALGORITHM) if isinstance(stored, dict) else None
    try:
        actual = payload_digest(payload)
    except TypeError:
        actual = None
    if expected is None or actual != expected:
        raise DamagedCheckpoint(
            f"{path} fails its {ALGORITHM} checksum: the file is damaged",
            "resume from its last.prev.pt, or retrain; do not use this file",
        )


def load_resume_checkpoint(run: RunDir) -> tuple[Checkpoint | None, list[str]]:
    """The checkpoint `--resume` continues from, and notes for the report: `last.pt`, else
    `last.prev.pt` when `last.pt` is missing or damaged. A damaged `last.pt` is logged by name and
    moved aside to `last.damaged.pt`, so the next rotation cannot replace the good copy with it.
    None when the run was stopped before its first checkpoint; an error when every checkpoint
    there is damaged."""
    remove_stale_temporaries(run.root)
    notes: list[str] = []
    for path in (run.last, previous_path(run.last)):
        if not path.is_file():
            continue
        try:
            return load_checkpoint(path), notes
        except DamagedCheckpoint as err:
            note = f"{path.name} was damaged and not used: {err.problem}"
            log.warning("%s", note)
            notes.append(note)
            if path == run.last:
                os.replace(path, run.root / "last.damaged.pt")
    if notes:
        raise YingsheError(
            f"no usable checkpoint in {run.root}: " + "; ".join(notes),
            "start the run again with --out and train.exist_ok=true",
        )
    return None, notes


def remove_stale_temporaries(root: Path) -> None:
    """Delete the temporary files of checkpoint writes a kill interrupted (.last.pt.*.tmp)."""
    for tmp in root.glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)


def checkpoint_in(run_dir: Path) -> Path:
    """The checkpoint a run folder stands for: best.pt, else last.pt."""
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise YingsheError(
        f"{run_dir} holds no best.pt or last.pt",
        "pass the folder of a run that finished at least one epoch",
    )


@dataclass(frozen=True)
class RunDir:
    """Paths of the files in one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def events(self) -> Path:
        return self.root / "events"


def default_run_dir(data_spec: str, model_name: str, base: str | Path = "runs") -> Path:
    stem = Path(data_spec.rstrip("/")).name.split(".")[0] or "data"
    model = model_name.replace(":", "-").replace("/", "-")
    return Path(base) / f"{stem}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole per-epoch table atomically (it is small; appends could tear)."""
    if not rows:
        return
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """The SHA-256 of a file, read in blocks: the one checksum every module uses (downloads,
    prepared shards, exported and served models, pretrained weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()

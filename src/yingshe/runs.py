"""The run folder: its layout, atomic writes and checkpoint files.

Every file is written to a temporary name in the same folder, flushed to disk and renamed over
the target, so a crash or Ctrl-C leaves either the old file or the new one, never half of one.
Checkpoints hold tensors and plain data only and load with `torch.load(weights_only=True)`;
their fields are declared once, in `schema.Checkpoint`.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from yingshe.errors import YingsheError
from yingshe.outputs import write_error
from yingshe.schema import Checkpoint

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a write failed, never a read


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


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint atomically, in the flat plain-data form `Checkpoint.to_dict` gives."""
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The one reader of checkpoints: a run folder (its best.pt, else last.pt) or a .pt file,
    loaded without unpickling code and checked for format and version by `Checkpoint.from_dict`."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_in(path)
    if not path.is_file():
        raise YingsheError(f"checkpoint {path} does not exist", "pass a run folder or a .pt file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zip, foreign objects
        raise YingsheError(
            f"{path} is not a loadable yingshe checkpoint ({type(err).__name__}: {err})"[:600],
            "pass best.pt or last.pt from a yingshe run folder; other files are not loaded, "
            "since unpickling arbitrary objects would run their code",
        ) from err
    return Checkpoint.from_dict(payload, str(path))


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

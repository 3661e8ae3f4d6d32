"""Decode a dataset once, at the training size, into uint8 shards (`yingshe data prepare`).

Decoding runs in a pool of worker processes, a chunk of images per task; the parent assembles
each shard from its chunks, in order, and writes it. Memory stays bounded: one shard buffer plus
a few chunks in flight, whatever the dataset size.

Crash safety, so an interrupted prepare resumes or restarts cleanly:
- every file is written under a temporary name, flushed to disk and renamed into place;
- a shard is recorded in `progress.jsonl` (an append-only journal) only after its files are in
  place, and a resumed prepare keeps only recorded shards whose files have the recorded sizes;
  everything else in the shard folders (a shard cut off mid-write, temp files) is deleted;
- `index.json`, the manifest, is written last; readers refuse a folder without it. So no later
  run ever reads a half-written shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yingshe._version import __version__
from yingshe.data.decode import decode_many
from yingshe.data.shards import (
    FORMAT,
    MANIFEST,
    PROGRESS,
    VERSION,
    fsync_dir,
    is_unfinished,
    load_manifest,
    read_prepared,
    slice_journal,
    slice_journals,
)
from yingshe.data.splits import SourceData, Split, stat_line
from yingshe.errors import YingsheError
from yingshe.runs import atomic_file, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_SHARD_MB = 128  # big enough for sequential reads, small enough to map a few at a time
CHUNK = 256  # images per decoding task: large enough to amortise the IPC, small enough to balance
PREPARED_MODES = ("auto", "always", "off")

ProgressFn = Callable[[int, int], None]  # (images done, images in all)


@dataclass(frozen=True)
class ShardPlan:
    """Source positions [start, stop) of one split that go into one shard."""

    split: str
    number: int
    start: int
    stop: int

    @property
    def stem(self) -> str:
        return f"{self.split}/shard-{self.number:05d}"


def plan_shards(source: SourceData, image_bytes: int, shard_bytes: int) -> list[ShardPlan]:
    """Equal-sized shards of at most `shard_bytes` per split, in the source's order."""
    plans = []
    for name, split in source.splits.items():
        n = len(split)
        if n == 0:
            continue
        count = max(1, math.ceil(n * image_bytes / shard_bytes))
        per = math.ceil(n / count)
        plans += [ShardPlan(name, k, a, min(n, a + per)) for k, a in enumerate(range(0, n, per))]
    return plans


# --- the source's identity: the cache key -----------------------------------------------------


def source_identity(source: SourceData) -> str:
    """A fingerprint of a source as it is on disk, cheap enough to compute on every run.

    It covers the origin, the classes, the labels, and the absolute path, size and modification
    time of every encoded file (of the archive, for images inside one), so it does not depend on
    how the path was spelled. A changed, added or removed file changes it. The content itself is
    hashed while preparing (`content_sha256` in the manifest).
    """
    digest = hashlib.sha256()
    head = {"origin": source.origin, "classes": source.classes}
    digest.update(json.dumps(head, sort_keys=True).encode())
    if source.origin and Path(source.origin).is_file():
        digest.update(stat_line(source.origin).encode())
    for name, split in source.splits.items():
        digest.update(f"\nsplit {name} {len(split)}\n".encode())
        digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
        for line in split.fingerprint():
            digest.update(line.encode())
    return digest.hexdigest()


def has_encoded_files(source: SourceData) -> bool:
    return any(split.files is not None for split in source.splits.values())


# --- writing ----------------------------------------------------------------------------------


def write_npy(path: Path, root: Path, dtype: np.dtype, shape: tuple[int, ...], blocks: Iterable) -> dict:
    """Write an .npy file atomically from contiguous blocks; returns its manifest entry."""
    header = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    digest, size = hashlib.sha256(), 0
    with atomic_file(path) as handle:
        for block in [header.getvalue(), *blocks]:
            view = (
                memoryview(np.ascontiguousarray(block)).cast("B") if isinstance(block, np.ndarray) else block
            )
            handle.write(view)
            digest.update(view)
            size += len(view)
    return {"path": path.relative_to(root).as_posix(), "bytes": size, "sha256": digest.hexdigest()}


def decode_chunk(args: tuple) -> tuple[np.ndarray, np.ndarray, dict[int, str], bytes]:
    """Worker task: read and decode encoded images. Returns (images, ok, {i: reason}, the SHA-256
    of each image's encoded bytes, concatenated); a file that cannot be read or decoded is
    reported, never raised."""
    files, size, channels, decoder = args
    blobs, names, unreadable = [], [], {}
    for i in range(len(files)):
        names.append(files.name(i))
        try:
            blob = files.read(i)
        except OSError as err:  # UnreadableImage (not a regular file, over a limit) names the file
            reason = str(err) if names[i] in str(err) else f"{names[i]}: {type(err).__name__}: {err}"
            blob, unreadable[i] = None, reason
        blobs.append(blob)
    images, ok, errors = decode_many(blobs, size, channels, names, decoder)
    errors.update(unreadable)
    return images, ok, errors, b"".join(hashlib.sha256(b or b"").digest() for b in blobs)


class _Ready:
    """A result computed in this process, shaped like an AsyncResult."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    torch.set_num_threads(1)


@contextmanager
def decoding_pool(workers: int):
    if workers <= 1:
        yield None
        return
    pool = multiprocessing.get_context().Pool(workers, initializer=_worker_init)
    try:
        yield pool
        pool.close()
        pool.join()
    finally:
        pool.terminate()


class _ShardBuffer:
    """One shard being assembled from its chunks."""

    def __init__(self, plan: ShardPlan, shape: tuple[int, int, int]) -> None:
        n = plan.stop - plan.start
        self.plan = plan
        self.images = np.empty((n, *shape), dtype=np.uint8)
        self.ok = np.zeros(n, dtype=bool)
        self.errors: dict[int, str] = {}  # source position → reason
        self.digests: list[bytes] = []

    def add(self, a: int, result: tuple) -> None:
        images, ok, errors, digest = result
        lo = a - self.plan.start
        self.images[lo : lo + len(ok)] = images
        self.ok[lo : lo + len(ok)] = ok
        self.errors.update({a + i: reason for i, reason in errors.items()})
        self.digests.append(digest)


def _write_shard(out: Path, buffer: _ShardBuffer, split: Split) -> dict:
    plan, keep = buffer.plan, buffer.ok
    labels = np.asarray(split.labels[plan.start : plan.stop], dtype=np.int64)[keep]
    record: dict[str, Any] = {
        "stem": plan.stem,
        "count": int(keep.sum()),
        "source": [plan.start, plan.stop],
        "content_sha256": hashlib.sha256(b"".join(buffer.digests)).hexdigest(),
        "skipped": [
            {
                "position": int(plan.start + i),
                "name": split.name(plan.start + i),
                "reason": buffer.errors.get(plan.start + i, f"{split.name(plan.start + i)}: not decoded"),
            }
            for i in np.flatnonzero(~keep)
        ],
    }
    if record["count"]:
        images = buffer.images if keep.all() else buffer.images[keep]
        record["images"] = write_npy(out / f"{plan.stem}.images.npy", out, np.uint8, images.shape, [images])
        record["labels"] = write_npy(out / f"{plan.stem}.labels.npy", out, np.int64, labels.shape, [labels])
    return record


# --- resuming ---------------------------------------------------------------------------------


def _read_journal(out: Path, plan_id: str, journal: str = PROGRESS) -> dict[str, dict]:
    """Shards a previous prepare of the same plan finished, by stem, whose files are intact."""
    path = out / journal
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    try:
        if json.loads(lines[0]).get("plan") != plan_id:
            return {}
    except (ValueError, IndexError, AttributeError):
        return {}
    done = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by the interruption
            continue
        files = [record[k] for k in ("images", "labels") if k in record]
        if all(_intact(out, f) for f in files):
            done[record["stem"]] = record
    return done


def _intact(out: Path, entry: dict) -> bool:
    try:
        return (out / entry["path"]).stat().st_size == entry["bytes"]
    except OSError:
        return False


def _clear_strays(
    out: Path, splits: Iterable[str], done: dict[str, dict], stems: set[str] | None = None
) -> None:
    """Delete everything in the shard folders that no finished shard owns; with `stems` (a
    slice's shards), only those shards' files: other slices may be writing theirs meanwhile."""
    keep = {
        (out / rec[k]["path"]).resolve() for rec in done.values() for k in ("images", "labels") if k in rec
    }
    for split in splits:
        folder = out / split
        if not folder.is_dir():
            continue
        mine = None
        if stems is not None:
            mine = tuple(f"{s.partition('/')[2]}." for s in stems if s.startswith(f"{split}/"))
        for path in folder.iterdir():
            if mine is None:
                ours = path.name.startswith((".shard-", "shard-", ".labels.", "labels.npy"))
            else:  # a shard's files and its temporary files: shard-00003.… and .shard-00003.…
                ours = path.name.lstrip(".").startswith(mine)
            if ours and path.resolve() not in keep:
                path.unlink()


def _append_journal(out: Path, record: dict, journal: str = PROGRESS) -> None:
    """Append one record as a line. A line torn by a kill is ended first, so that the record
    after it is not glued to it (and lost with it)."""
    with open(out / journal, "ab+") as handle:
        handle.seek(0, os.SEEK_END)
        torn = False
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            torn = handle.read(1) != b"\n"
        handle.write((("\n" if torn else "") + json.dumps(record) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())


# --- the prepare itself -----------------------------------------------------------------------


def prepare(
    source: SourceData,
    out: str | Path,
    image_size: int,
    channels: int,
    *,
    workers: int | None = None,
    shard_mb: float = DEFAULT_SHARD_MB,
    chunk: int = CHUNK,
    force: bool = False,
    progress: ProgressFn | None = None,
    decoder: str = "auto",
    part: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Decode every image of `source` once into uint8 shards in `out`; returns the manifest.

    In-memory splits must already be at (image_size, image_size, channels) (`fit_split`). An
    unreadable image is left out and listed, with its reason, under the split's `skipped`. A
    folder already prepared from the same source and settings is returned as it is; an
    interrupted prepare of them is resumed.

    With `part=(i, n)` only slice i of n is made: every n-th shard of the plan from the i-th on,
    journalled in its own `progress.slice-…jsonl`, so n machines can prepare into one shared
    folder at once. No manifest is written; `merge_slices` writes it once every slice is done.
    Returns the slice's summary then (or the manifest, when the folder is merged already).
    """
    started = time.perf_counter()
    out = Path(out)
    shape = (image_size, image_size, channels)
    identity, plans, plan_id = _plan(source, shape, shard_mb, decoder)
    journal, mine = PROGRESS, plans
    if part is not None:
        journal, mine = slice_journal(*part), plans[part[0] :: part[1]]

    _claim_folder(out, plan_id, force)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        return load_manifest(out)  # already prepared from this source with these settings
    done = _read_journal(out, plan_id, journal)
    _clear_strays(out, source.splits, done, None if part is None else {p.stem for p in mine})
    if not done:
        atomic_write_text(out / journal, json.dumps({"plan": plan_id, "slice": part}) + "\n")
    else:
        log.info("resuming the prepare in %s: %d of %d shards are done", out, len(done), len(mine))
    resumed = len(done)

    total = sum(p.stop - p.start for p in mine)
    finished = sum(p.stop - p.start for p in mine if p.stem in done)
    if progress:
        progress(finished, total)
    pending = [p for p in mine if p.stem not in done]
    counts = (finished, total)
    _make_shards(source, out, shape, pending, done, journal, workers, chunk, decoder, progress, counts)
    seconds = time.perf_counter() - started
    if part is not None:
        log.info("prepared slice %d of %d into %s in %.1f s", part[0], part[1], out, seconds)
        return _slice_summary(part, mine, done)
    manifest = _finish(out, source, plans, done, shape, identity, plan_id)
    log.info("prepared %d images into %s in %.1f s (%d shards resumed)", total, out, seconds, resumed)
    return manifest


def _plan(source: SourceData, shape: tuple[int, int, int], shard_mb: float, decoder: str):
    """(source identity, shard plans, plan id): the same on every machine for the same source."""
    for name, split in source.splits.items():
        fitted = split.images.shape[1:] if split.images is not None else None
        fitted = split.packed.image_shape if split.packed is not None else fitted
        if fitted is not None and tuple(fitted) != shape:
            raise YingsheError(
                f"the {name} split is decoded at {tuple(fitted)}, not {shape}",
                "fit decoded splits to the target size first (data.dataset.fit_split)",
            )
    identity = source_identity(source)
    plans = plan_shards(source, int(np.prod(shape)), int(shard_mb * (1 << 20)))
    plan_id = hashlib.sha256(
        json.dumps(
            [
                FORMAT,
                VERSION,
                identity,
                shape,
                source.classes,
                decoder,
                [list(vars(p).values()) for p in plans],
            ]
        ).encode()
    ).hexdigest()
    return identity, plans, plan_id


def _make_shards(
    source: SourceData,
    out: Path,
    shape: tuple[int, int, int],
    pending: list[ShardPlan],
    done: dict[str, dict],
    journal: str,
    workers: int | None,
    chunk: int,
    decoder: str,
    progress: ProgressFn | None,
    counts: tuple[int, int],
) -> None:
    """Decode and write the pending shards, journalling each one when its files are in place."""
    image_size, channels = shape[0], shape[2]
    finished, total = counts
    needs_pool = any(source.splits[p.split].files is not None for p in pending)
    workers = (os.cpu_count() or 1) if workers is None else workers
    with decoding_pool(workers if needs_pool else 1) as pool:

        def submit(plan: ShardPlan, a: int, b: int):
            split = source.splits[plan.split]
            if split.files is None:  # decoded already
                images = split.images[a:b] if split.images is not None else split.packed.take(np.arange(a, b))
                digests = b"".join(hashlib.sha256(np.ascontiguousarray(x).data).digest() for x in images)
                return _Ready((images, np.ones(b - a, dtype=bool), {}, digests))
            task = (split.files.subset(np.arange(a, b)), image_size, channels, decoder)
            return _Ready(decode_chunk(task)) if pool is None else pool.apply_async(decode_chunk, (task,))

        tasks = ((p, a, min(a + chunk, p.stop)) for p in pending for a in range(p.start, p.stop, chunk))
        in_flight: deque = deque()
        buffer: _ShardBuffer | None = None
        max_in_flight = 4 * max(1, workers)
        for item in _bounded(tasks, submit, in_flight, max_in_flight):
            (plan, a, b), result = item
            if buffer is None or buffer.plan != plan:
                buffer = _ShardBuffer(plan, shape)
            buffer.add(a, result.get())
            finished += b - a
            if b == plan.stop:
                record = _write_shard(out, buffer, source.splits[plan.split])
                _append_journal(out, record, journal)
                done[plan.stem] = record
                buffer = None
            if progress:
                progress(finished, total)


def _slice_summary(part: tuple[int, int], mine: list[ShardPlan], done: dict[str, dict]) -> dict[str, Any]:
    records = [done[p.stem] for p in mine]
    return {
        "slice": list(part),
        "shards": len(mine),
        "images": sum(r["count"] for r in records),
        "skipped": [s["reason"] for r in records for s in r["skipped"]],
    }


def merge_slices(
    source: SourceData,
    out: str | Path,
    image_size: int,
    channels: int,
    *,
    shard_mb: float = DEFAULT_SHARD_MB,
    decoder: str = "auto",
) -> dict[str, Any]:
    """Turn a folder that slices (`prepare(part=...)`) filled into one prepared dataset: check
    that every planned shard is journalled with intact files, then write the labels and the
    manifest exactly as a single prepare would. Refuses, naming the slices to run, while any
    shard is missing; decodes nothing itself."""
    out = Path(out)
    shape = (image_size, image_size, channels)
    identity, plans, plan_id = _plan(source, shape, shard_mb, decoder)
    journals = slice_journals(out)
    if (out / MANIFEST).is_file():
        _claim_folder(out, plan_id, force=False)  # refuses a folder of another source or size
        _remove(journals, out)
        return load_manifest(out)
    if not journals:
        raise YingsheError(
            f"{out} holds no prepared slices to merge",
            "prepare the slices first: `yingshe data prepare SPEC --out DIR --num-shards N --shard-index I`",
        )
    done: dict[str, dict] = {}
    for path in journals:
        header = _journal_header(path)
        if header.get("plan") != plan_id:
            raise YingsheError(
                f"{path} was prepared from another source, image size, channel count or --shard-mb",
                "prepare every slice and the merge with the same SPEC and options (or delete that slice)",
            )
        done.update(_read_journal(out, plan_id, path.name))
    missing = [p for p in plans if p.stem not in done]
    if missing:
        counts = sorted({tuple(_journal_header(j).get("slice") or ()) for j in journals} - {()})
        n = counts[0][1] if counts else 1
        which = sorted({plans.index(p) % n for p in missing})
        raise YingsheError(
            f"{out}: {len(missing)} of {len(plans)} shards are not prepared yet "
            f"(slice(s) {', '.join(map(str, which))} of {n} unfinished or not run)",
            f"run `yingshe data prepare SPEC --out {out} --num-shards {n} --shard-index I` for those slices, "
            "then merge again",
        )
    manifest = _finish(out, source, plans, done, shape, identity, plan_id)
    _remove(journals, out)
    return manifest


def _journal_header(path: Path) -> dict:
    try:
        with open(path) as handle:
            header = json.loads(handle.readline())
        return header if isinstance(header, dict) else {}
    except (OSError, ValueError):
        return {}


def _remove(paths: list[Path], out: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    fsync_dir(out)


def _bounded(tasks: Iterator, submit: Callable, in_flight: deque, limit: int) -> Iterator:
    """Submit tasks keeping at most `limit` in flight; yield (task, result) in submission order."""
    for task in tasks:
        in_flight.append((task, submit(*task)))
        if len(in_flight) >= limit:
            yield in_flight.popleft()
    while in_flight:
        yield in_flight.popleft()


def _claim_folder(out: Path, plan_id: str, force: bool) -> None:
    """Make `out` ours: new, ours already (same plan: keep; other plan: only with force), or an
    unfinished prepare (whose journal decides what survives). Refuse a folder of other files."""
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            existing = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            existing = {}
        if existing.get("plan") == plan_id and not force:
            return
        if not force:
            raise YingsheError(
                f"{out} already holds data prepared from another source, size or yingshe version",
                "choose another --out, or pass --force to replace it",
            )
        manifest_path.unlink()  # invalid from here on, until the new manifest is written
        (out / PROGRESS).unlink(missing_ok=True)
        fsync_dir(out)
        return
    if out.is_dir() and any(out.iterdir()) and not is_unfinished(out) and not force:
        raise YingsheError(
            f"{out} is not empty and holds no prepared data",
            "prepare into a new or empty folder (or pass --force to write into this one)",
        )
    out.mkdir(parents=True, exist_ok=True)


def _finish(
    out: Path,
    source: SourceData,
    plans: list[ShardPlan],
    done: dict[str, dict],
    shape: tuple[int, int, int],
    identity: str,
    plan_id: str,
) -> dict[str, Any]:
    """Write each split's labels and then the manifest, which makes the folder valid."""
    splits, content = {}, hashlib.sha256(json.dumps(source.classes).encode())
    for name in source.splits:
        records = [done[p.stem] for p in plans if p.split == name]
        if not records:
            continue
        shards = [r for r in records if r["count"]]
        count = sum(r["count"] for r in shards)
        blocks = (np.load(out / r["labels"]["path"]) for r in shards)
        labels = write_npy(out / name / "labels.npy", out, np.int64, (count,), blocks)
        for r in records:
            content.update(f"{name}:{r['content_sha256']}".encode())
        splits[name] = {
            "count": count,
            "source_count": len(source.splits[name]),
            "labels": labels,
            "shards": [
                {k: r[k] for k in ("count", "images", "labels", "source", "content_sha256")} for r in shards
            ],
            "skipped": [s for r in records for s in r["skipped"]],
        }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "plan": plan_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "yingshe": __version__,
        "source": {
            "description": source.description,
            "origin": source.origin,
            "identity": identity,
            "content_sha256": content.hexdigest(),
        },
        "image_size": shape[0],
        "channels": shape[2],
        "dtype": "uint8",
        "layout": "NHWC",
        "classes": list(source.classes),
        "flip_invariant": source.flip_invariant,
        "splits": splits,
    }
    atomic_write_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    fsync_dir(out)
    return manifest


# --- the cache: training finds prepared data by source and size --------------------------------


def cache_root(setting: str | None = None) -> Path:
    """data.cache_dir, else $YINGSHE_CACHE, else ~/.cache/yingshe/prepared."""
    if setting:
        return Path(setting).expanduser()
    env = os.environ.get("YINGSHE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "yingshe" / "prepared"


def cache_name(source: SourceData, image_size: int, channels: int, identity: str) -> str:
    stem = Path(source.origin or source.description).name.split(".")[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem)[:40].strip("-") or "data"
    key = hashlib.sha256(f"{identity}\0{image_size}\0{channels}\0{VERSION}".encode()).hexdigest()[:16]
    return f"{stem}-{image_size}px-{channels}c-{key}"


def _matches(folder: Path, identity: str, image_size: int, channels: int) -> bool:
    try:
        manifest = load_manifest(folder)
    except YingsheError:
        return False
    return (
        manifest["source"]["identity"] == identity
        and manifest["image_size"] == image_size
        and manifest["channels"] == channels
    )


def find_prepared(
    source: SourceData,
    image_size: int,
    channels: int,
    cache_dir: str | None = None,
    identity: str | None = None,
) -> Path | None:
    """The prepared folder for this source, size and channel count, if the cache knows one:
    `<cache>/<name>/`, or the folder a `<cache>/<name>.link` file points to (`data prepare --out`)."""
    root = cache_root(cache_dir)
    if not root.is_dir():
        return None
    identity = identity or source_identity(source)
    name = cache_name(source, image_size, channels, identity)
    candidates = [root / name]
    link = root / f"{name}.link"
    if link.is_file():
        candidates.append(Path(link.read_text().strip()))
    return next((c for c in candidates if _matches(c, identity, image_size, channels)), None)


def register_prepared(folder: Path, source: SourceData, manifest: dict, cache_dir: str | None = None) -> Path:
    """Point the cache at a folder prepared elsewhere, so training on the source finds it."""
    root = cache_root(cache_dir)
    name = cache_name(source, manifest["image_size"], manifest["channels"], manifest["source"]["identity"])
    link = root / f"{name}.link"
    if Path(folder).resolve() != (root / name).resolve():
        atomic_write_text(link, str(Path(folder).resolve()) + "\n")
    return link


def resolve_prepared(
    source: SourceData,
    image_size: int,
    channels: int,
    mode: str = "auto",
    cache_dir: str | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> SourceData:
    """The prepared copy of a source of encoded files, or the source itself.

    mode `auto` uses a prepared copy when the cache has one; `always` prepares one into the
    cache on first use; `off` never uses one. Decoded sources (IDX, CIFAR pickles) are returned
    as they are: they are in memory already.
    """
    if mode not in PREPARED_MODES:
        raise YingsheError(
            f"data.prepared must be one of {PREPARED_MODES}, not {mode!r}", "use auto, always or off"
        )
    if mode == "off" or not has_encoded_files(source):
        return source
    identity = source_identity(source) if mode == "always" or cache_root(cache_dir).is_dir() else None
    found = find_prepared(source, image_size, channels, cache_dir, identity) if identity else None
    if found is None and mode == "always":
        found = cache_root(cache_dir) / cache_name(source, image_size, channels, identity)
        log.info("preparing %s at %d px into %s (first use)", source.description, image_size, found)
        prepare(source, found, image_size, channels, workers=workers, progress=progress, force=True)
    if found is None:
        return source
    prepared = read_prepared(found)
    prepared.flip_invariant = source.flip_invariant
    prepared.notes = [*source.notes, f"images read from prepared shards in {found}", *prepared.notes]
    return prepared

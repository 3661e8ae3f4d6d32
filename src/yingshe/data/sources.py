"""One reader per on-disk format, each returning a `SourceData`; `read_source` picks the reader.

Formats: an image folder tree, a .tar/.tar.gz of one, MNIST-family IDX files, CIFAR-10/100's
python pickles (folder or the original .tar.gz), a CSV manifest `path,label[,split]` (or the
multi-label `path,labels[,split]` and its JSON form, data/multilabel.py), and the
built-in `digits` that ships inside scikit-learn. Two more live in their own modules and are
registered here: prepared folders (data/shards.py) and WebDataset tar shards (data/webdataset.py).

`FORMATS` is the registry `read_source` walks, in registration order; a new format is a reader
and one `register_format(name, matches)` line (see the end of this module).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import pickle
import posixpath
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from yingshe.data import multilabel
from yingshe.data.images import LIMITS, is_image_name, printable_path
from yingshe.data.shards import MANIFEST, is_unfinished, read_prepared
from yingshe.data.splits import BlobImages, FileImages, SourceData, Split, stat_line
from yingshe.data.webdataset import is_webdataset_dir, is_webdataset_tar, read_webdataset
from yingshe.errors import YingsheError

log = logging.getLogger(__name__)

MANIFEST_DUPLICATES = ("error", "collapse")


@dataclass(frozen=True)
class ReadOptions:
    """The DataConfig settings a reader needs (readers do not see the whole config)."""

    strict: bool = False  # a truncated archive is an error instead of its readable part being used
    manifest_duplicates: str = "error"  # a CSV path listed twice: error, or collapse to one row
    classes: list[str] | None = field(default=None, hash=False)  # IDX class names known by the caller


SPLIT_ALIASES = {
    "train": "train",
    "test": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


# --- folder trees (on disk or inside a tar) ---------------------------------------------------


def layout_tree(paths: list[str]) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
    """Assign each relative image path to a split and class by the folder layout.

    Returns {split: [(class, position in `paths`)]} and notes about files that were ignored.
    `root/<class>/…` gives one "train" split; `root/train|test|val/<class>/…` gives several.
    A single top folder wrapping everything (as in most archives) is looked through.
    """
    parts = [p.strip("/").split("/") for p in paths]
    while parts and all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1:
        if p_is_split(parts[0][0]):
            break
        parts = [p[1:] for p in parts]
    tops = {p[0].lower() for p in parts if len(p) >= 2}
    by_split = bool(tops) and all(t in SPLIT_ALIASES for t in tops)
    layout: dict[str, list[tuple[str, int]]] = {}
    ignored = 0
    for position, p in enumerate(parts):
        if by_split:
            if len(p) < 3:
                ignored += 1
                continue
            split, cls = SPLIT_ALIASES[p[0].lower()], printable_path(p[1])
        else:
            if len(p) < 2:
                ignored += 1
                continue
            split, cls = "train", printable_path(p[0])
        layout.setdefault(split, []).append((cls, position))
    notes = [f"{ignored} image files outside any class folder were ignored"] if ignored else []
    return layout, notes


def p_is_split(name: str) -> bool:
    return name.lower() in SPLIT_ALIASES


def splits_from_layout(
    layout: dict[str, list[tuple[str, int]]], files_for: callable
) -> tuple[list[str], dict[str, Split]]:
    classes = sorted({cls for entries in layout.values() for cls, _ in entries})
    index = {cls: i for i, cls in enumerate(classes)}
    splits = {}
    for split, entries in layout.items():
        positions = [pos for _, pos in entries]
        labels = np.array([index[cls] for cls, _ in entries], dtype=np.int64)
        splits[split] = Split(labels, files=files_for(positions))
    return classes, splits


def read_folder(root: Path, options: ReadOptions | None = None) -> SourceData:
    paths = sorted(str(p) for p in root.rglob("*") if is_image_name(p.name) and not p.name.startswith("."))
    if not paths:
        raise YingsheError(
            f"{root} holds no image files",
            "arrange images as <root>/<class>/<image>.jpg (or train/ and test/ above the classes)",
        )
    relative = [str(Path(p).relative_to(root).as_posix()) for p in paths]
    layout, notes = layout_tree(relative)
    classes, splits = splits_from_layout(layout, lambda pos: FileImages([paths[i] for i in pos]))
    check_classes(classes, root)
    return SourceData(f"folder {printable_path(root)}", classes, splits, notes=notes)


@dataclass
class TarMemberImages:
    """Members of an uncompressed tar, read by seeking to their offsets (no extraction)."""

    archive: str
    names: list[str]
    offsets: list[int]
    sizes: list[int]

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> bytes:
        """One positional read on a descriptor opened once per process (loader workers reopen:
        the pid tells), instead of an open/seek/close per image."""
        if getattr(self, "_pid", None) != os.getpid():
            self._fd, self._pid = os.open(self.archive, os.O_RDONLY), os.getpid()
        return os.pread(self._fd, self.sizes[index], self.offsets[index])

    def name(self, index: int) -> str:
        return printable_path(f"{self.archive}:{self.names[index]}")

    def fingerprint(self) -> Iterator[str]:
        yield stat_line(self.archive)

    def subset(self, indices: np.ndarray) -> TarMemberImages:
        pick = [int(i) for i in indices]
        return TarMemberImages(
            self.archive,
            [self.names[i] for i in pick],
            [self.offsets[i] for i in pick],
            [self.sizes[i] for i in pick],
        )


def member_refusal(member: tarfile.TarInfo) -> str | None:
    """Why a tar member must not be read as an image (None: it may). Links and devices could
    point anywhere, and a name that is absolute or climbs out of the archive root would become a
    class such as `..` or `root`; all are refused, never followed."""
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname!r}), not a file"
    if member.ischr() or member.isblk() or member.isfifo():
        return "a device or FIFO, not a file"
    if not member.isfile():
        return f"not a regular file (tar type {member.type!r})"
    name = member.name
    if name.startswith("/") or Path(name).is_absolute():
        return "an absolute path"
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../"):
        return "a path that escapes the archive root"
    if member.size > LIMITS.max_file_bytes:
        return f"{member.size / 2**20:.3g} MB, over data.max_file_mb={LIMITS.max_file_bytes / 2**20:.3g} MB"
    return None


def read_tar(path: Path, options: ReadOptions | None = None) -> SourceData:
    """A tar of an image tree. Compressed archives are read in one sequential pass into memory
    (gzip cannot seek); plain tars are indexed and read by offset.

    Refused members (`member_refusal`) are skipped and counted with their reason. A truncated or
    corrupt archive is an error naming how far it could be read, unless data.strict=false: then
    the members read before the damage are used and the damage is counted.
    """
    options = options or ReadOptions()
    compressed = not _is_plain_tar(path)
    size = path.stat().st_size
    names, blobs, offsets, sizes = [], [], [], []
    skipped: dict[str, str] = {}
    damage, whole = None, 0  # whole: tar-stream bytes up to the end of the last member read whole
    with tarfile.open(path, "r:*") as archive:
        try:
            for member in archive:
                if member.isdir() or Path(member.name).name.startswith("."):
                    continue
                reason = member_refusal(member)
                if reason is not None:
                    if is_image_name(member.name) or not member.isfile():
                        skipped[printable_path(f"{path}:{member.name}")] = reason
                    continue
                if not is_image_name(member.name):
                    continue
                name = posixpath.normpath(member.name)
                if compressed:
                    blob = archive.extractfile(member).read()
                elif member.offset_data + member.size > size:
                    raise tarfile.ReadError(f"member {member.name!r} is cut off")
                names.append(name)
                whole = member.offset_data + member.size
                if compressed:
                    blobs.append(blob)
                else:
                    offsets.append(member.offset_data)
                    sizes.append(member.size)
            damage = _end_damage(archive)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            damage = f"{type(err).__name__}: {err}"
        if damage is not None:
            damage = (
                f"{printable_path(path)} is truncated or corrupt ({damage}): read {len(names)} images, "
                f"the first {whole:,} bytes of its tar stream (the file is {size:,} bytes)"
            )
    if damage is not None:
        if options.strict or not names:
            raise YingsheError(
                damage,
                "copy or download the archive again; with data.strict=false the readable images "
                "are used and the rest counted as unreadable",
            )
        log.warning("%s; using those images (data.strict=false)", damage)
        skipped[printable_path(f"{path}:<rest of archive>")] = damage
    if not names:
        raise YingsheError(
            f"{printable_path(path)} holds no image files"
            + (f" ({len(skipped)} members refused, e.g. {next(iter(skipped.items()))})" if skipped else ""),
            "archive a <root>/<class>/<image> tree",
        )
    layout, notes = layout_tree(names)
    if skipped:
        notes.append(
            f"{len(skipped)} archive members skipped as unreadable: "
            + "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5])
        )

    def files_for(positions: list[int]):
        if compressed:
            return BlobImages(
                [printable_path(f"{path}:{names[i]}") for i in positions], [blobs[i] for i in positions]
            )
        return TarMemberImages(
            str(path),
            [names[i] for i in positions],
            [offsets[i] for i in positions],
            [sizes[i] for i in positions],
        )

    classes, splits = splits_from_layout(layout, files_for)
    check_classes(classes, path)
    return SourceData(f"archive {printable_path(path)}", classes, splits, notes=notes, skipped=skipped)


def _end_damage(archive: tarfile.TarFile) -> str | None:
    """tarfile ends iteration quietly at a header cut off or garbled after the first one; a
    complete archive ends with two zero blocks there, so their absence is damage."""
    archive.fileobj.seek(archive.offset)
    tail = archive.fileobj.read(2 * tarfile.BLOCKSIZE)
    if len(tail) < 2 * tarfile.BLOCKSIZE:
        return "it ends without the end-of-archive blocks"
    if tail.strip(b"\0"):
        return "a garbled member header"
    return None


def _is_plain_tar(path: Path) -> bool:
    with open(path, "rb") as handle:
        magic = handle.read(6)
    return not (magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00")


def check_classes(classes: list[str], where: Path) -> None:
    if len(classes) < 2:
        raise YingsheError(
            f"{where} has {len(classes)} class folder(s): {classes}",
            "a classifier needs at least two classes, one folder each",
        )


# --- MNIST-family IDX files ----------------------------------------------------------------------


def read_idx_file(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) of unsigned bytes into an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"magic bytes {data[:4].hex()} are not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return body.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as err:
        raise YingsheError(
            f"{path} is not a readable IDX file: {err}",
            "download it again; the MNIST-family files are named like train-images-idx3-ubyte.gz",
        ) from err


def find_idx(root: Path, prefix: str, kind: str) -> Path | None:
    for pattern in (
        f"{prefix}-{kind}-idx?-ubyte.gz",
        f"{prefix}-{kind}-idx?-ubyte",
        f"{prefix}-{kind}.idx?-ubyte*",
        f"*{prefix}*{kind}*idx*",
    ):
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    return None


def has_idx(root: Path) -> bool:
    return find_idx(root, "train", "images") is not None


def read_idx(root: Path, classes: list[str] | None = None) -> SourceData:
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path, labels_path = (
            find_idx(root, prefix, "images"),
            find_idx(root, prefix, "labels"),
        )
        if images_path is None or labels_path is None:
            if split == "train":
                raise YingsheError(
                    f"{root} lacks train-images/train-labels IDX files",
                    "put the four *-idx?-ubyte(.gz) files of an MNIST-family set in one folder",
                )
            continue
        images, labels = read_idx_file(images_path), read_idx_file(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise YingsheError(
                f"{images_path} and {labels_path} do not match ({images.shape} vs {labels.shape})",
                "use the images and labels files of the same split",
            )
        splits[split] = Split(labels.astype(np.int64), images=images[:, :, :, None])
    if classes is None:
        classes = idx_class_names(root, int(splits["train"].labels.max()) + 1)
    return SourceData(f"IDX files in {root}", classes, splits, channels=1)


def idx_class_names(root: Path, count: int) -> list[str]:
    listed = root / "classes.txt"
    if listed.is_file():
        names = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        if len(names) < count:
            raise YingsheError(
                f"{listed} names {len(names)} classes but the labels go up to {count - 1}",
                f"list {count} class names, one per line, in label order",
            )
        return names
    if "fashion" in str(root).lower() and count == 10:
        return list(FASHION_CLASSES)
    return [str(i) for i in range(count)]


# --- CIFAR python pickles -------------------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's pickles need numpy arrays and nothing else; refusing every other global keeps a
    hostile file from running code when it is loaded."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


def load_pickle(data: bytes, name: str) -> dict:
    try:
        loaded = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:
        raise YingsheError(
            f"{name} is not a CIFAR python batch ({err})", "use the python version of CIFAR"
        ) from err
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in loaded.items()}


CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def cifar_from_files(read: dict[str, bytes], where: str) -> SourceData:
    """Build CIFAR-10 or -100 from member name → bytes (base names, any folder)."""

    def batch(names: list[str], label_key: str) -> Split:
        parts = [load_pickle(read[n], f"{where}:{n}") for n in names]
        data = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts])
        labels = np.concatenate([np.asarray(p[label_key]) for p in parts])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
        return Split(labels.astype(np.int64), images=images)

    cifar10 = "data_batch_1" in read
    needed = [*CIFAR10_TRAIN, "test_batch", "batches.meta"] if cifar10 else ["train", "test", "meta"]
    missing = [n for n in needed if n not in read]
    if missing:
        raise YingsheError(
            f"{where} looks like CIFAR-{10 if cifar10 else 100} but lacks {', '.join(missing)}",
            "restore the missing batch files from the original archive (or download it again)",
        )
    if cifar10:
        meta = load_pickle(read["batches.meta"], f"{where}:batches.meta")
        classes = [c.decode() if isinstance(c, bytes) else c for c in meta["label_names"]]
        splits = {"train": batch(CIFAR10_TRAIN, "labels"), "test": batch(["test_batch"], "labels")}
    else:
        meta = load_pickle(read["meta"], f"{where}:meta")
        classes = [c.decode() if isinstance(c, bytes) else c for c in meta["fine_label_names"]]
        splits = {"train": batch(["train"], "fine_labels"), "test": batch(["test"], "fine_labels")}
    return SourceData(f"CIFAR-{len(classes)} from {where}", classes, splits, channels=3)


CIFAR_MEMBERS = set(CIFAR10_TRAIN) | {"test_batch", "batches.meta", "train", "test", "meta"}


def is_cifar_dir(root: Path) -> Path | None:
    for candidate in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (candidate / "data_batch_1").is_file() or (
            (candidate / "meta").is_file() and (candidate / "train").is_file()
        ):
            return candidate
    return None


def read_cifar_dir(root: Path) -> SourceData:
    files = {p.name: p.read_bytes() for p in root.iterdir() if p.name in CIFAR_MEMBERS}
    return cifar_from_files(files, str(root))


def is_cifar_tar(path: Path) -> bool:
    """The original CIFAR python archives start with a `cifar-10*` folder."""
    try:
        with tarfile.open(path, "r:*") as archive:
            first = archive.next()
    except (tarfile.TarError, EOFError, zlib.error, OSError):
        return False
    return first is not None and "cifar-10" in first.name


def tar_cifar_members(path: Path) -> dict[str, bytes]:
    """The CIFAR batch files inside an archive (regular members only)."""
    members = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                base = Path(member.name).name
                if member.isfile() and base in CIFAR_MEMBERS:
                    members[base] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise YingsheError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}) after {len(members)} batch files",
            "download the CIFAR archive again",
        ) from err
    return members


# --- CSV manifests and the built-in set -----------------------------------------------------------


def read_csv(path: Path, options: ReadOptions | None = None) -> SourceData:
    """`path,label[,split]` rows; relative paths are relative to the CSV file's folder.

    A first row whose path is not an image file name is a header (any names). Excel's byte-order
    mark is tolerated. Each of these is an error naming the rows, because each would silently
    train on images meant for testing or invent a class: an unknown split value; one file (by
    resolved path) in two splits or under two labels; an empty label; a file listed twice, unless
    data.manifest_duplicates=collapse, which keeps its first row.
    """
    options = options or ReadOptions()
    if options.manifest_duplicates not in MANIFEST_DUPLICATES:
        raise YingsheError(
            f"data.manifest_duplicates={options.manifest_duplicates!r} is not a choice",
            f"use one of {', '.join(MANIFEST_DUPLICATES)}",
        )
    header = _csv_header(path)
    rows = _csv_rows(path)
    if multilabel.is_multilabel_header(header):  # `path,labels[,split]`: a multi-label manifest
        return multilabel.build_source(path, multilabel.csv_rows(path, rows, _csv_split), options)
    first: dict[str, tuple[int, str, str, str]] = {}  # resolved path → (line, split, label, file)
    repeats: list[str] = []
    entries: dict[str, list[tuple[str, str]]] = {}
    for n, row in rows:
        split, label = _csv_split(path, n, row), row[1].strip()
        if not label:
            raise YingsheError(
                f"{path} line {n}: {row[0]!r} has an empty label",
                "give every row a class name (an empty one would become a class named '')",
            )
        file = Path(row[0].strip())
        file = str(file if file.is_absolute() else path.parent / file)
        key = os.path.realpath(file)
        if key in first:
            line, split0, label0, _ = first[key]
            if label0 != label:
                raise YingsheError(
                    f"{path} lines {line} and {n}: {printable_path(row[0])} is labelled both {label0!r} "
                    f"and {label!r}",
                    "give each image one label (a multi-label set needs its own format)",
                )
            if split0 != split:
                raise YingsheError(
                    f"{path} line {n}: {printable_path(row[0])} is listed in both {split0} and {split}",
                    "list each image in one split only, or test images leak into training",
                )
            repeats.append(f"lines {line} and {n} ({printable_path(row[0])})")
            continue
        first[key] = (n, split, label, file)
        entries.setdefault(split, []).append((file, label))
    notes = []
    if repeats:
        if options.manifest_duplicates != "collapse":
            raise YingsheError(
                f"{path} lists {len(repeats)} file(s) more than once: {'; '.join(repeats[:5])}"
                + (" …" if len(repeats) > 5 else ""),
                "remove the repeated rows, or set data.manifest_duplicates=collapse to keep each file's "
                "first row (a repeated file would land in train and test at once)",
            )
        notes.append(f"{len(repeats)} repeated manifest rows collapsed (first row kept)")
    classes = sorted({label for items in entries.values() for _, label in items})
    check_classes(classes, path)
    index = {c: i for i, c in enumerate(classes)}
    splits = {
        split: Split(
            np.array([index[label] for _, label in items]),
            files=FileImages([file for file, _ in items]),
        )
        for split, items in entries.items()
    }
    return SourceData(f"CSV manifest {printable_path(path)}", classes, splits, notes=notes)


def _csv_header(path: Path) -> list[str] | None:
    """The CSV's first row when it is a header (its path cell is not an image file name)."""
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        for row in csv.reader(handle):
            if row and not row[0].startswith("#"):
                return None if is_image_name(row[0].strip()) else row
    return None


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Numbered non-comment rows, header dropped; bytes that are not UTF-8 are kept as escapes."""
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        rows = [(n, row) for n, row in enumerate(csv.reader(handle), 1) if row and not row[0].startswith("#")]
    if rows and not is_image_name(rows[0][1][0].strip()):
        rows = rows[1:]
    short = [n for n, row in rows if len(row) < 2]
    if not rows or short:
        raise YingsheError(
            f"{path}: expected rows of path,label[,split]"
            + (f"; line(s) {short[:5]} are short" if short else ""),
            "write one image per line as path,label",
        )
    return rows


def _csv_split(path: Path, n: int, row: list[str]) -> str:
    raw = row[2].strip().lower() if len(row) > 2 else ""
    if raw and raw not in SPLIT_ALIASES:
        raise YingsheError(
            f"{path} line {n}: unknown split {row[2]!r}",
            f"use one of {', '.join(sorted(SPLIT_ALIASES))} (or leave it empty for train)",
        )
    return SPLIT_ALIASES.get(raw, "train")


def read_digits() -> SourceData:
    """scikit-learn's 8×8 handwritten digits (1,797 images, values 0–16), scaled to 0–255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, :, :, None]
    classes = [str(i) for i in range(10)]
    return SourceData(
        "scikit-learn digits (built in)",
        classes,
        {"train": Split(digits.target, images=images)},
        channels=1,
        flip_invariant=False,
    )


# --- the format registry and picking the reader ----------------------------------------------


@dataclass(frozen=True)
class SourceFormat:
    """One on-disk format: `matches` looks (cheaply) at a path, `read` reads it."""

    name: str
    matches: Callable[[Path], bool]
    read: Callable[[Path, ReadOptions], SourceData]


FORMATS: list[SourceFormat] = []  # tried in registration order; the first that matches reads


def register_format(name: str, matches: Callable[[Path], bool]):
    """Decorator: register `read(path, options)` for paths `matches` accepts."""

    def add(read: Callable[[Path, ReadOptions], SourceData]):
        if any(f.name == name for f in FORMATS):
            raise ValueError(f"source format {name!r} is registered twice")
        FORMATS.append(SourceFormat(name, matches, read))
        return read

    return add


def read_source(
    path: Path, classes: list[str] | None = None, options: ReadOptions | None = None
) -> SourceData:
    """Read a dataset at `path`, choosing the reader by what is there; notes where it came from."""
    options = options or ReadOptions()
    if classes is not None:
        options = ReadOptions(options.strict, options.manifest_duplicates, classes)
    data = source_format(path).read(path, options)
    if data.origin is None:
        data.origin = str(path.resolve())
    return data


def source_format(path: Path) -> SourceFormat:
    if not path.exists():
        raise YingsheError(
            f"dataset path {path} does not exist",
            "pass a folder, .tar(.gz), .csv, IDX folder, or a name such as digits or cifar10",
        )
    mode = path.stat().st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):  # a FIFO would block the first read
        raise YingsheError(
            f"dataset path {printable_path(path)} is neither a folder nor a regular file",
            "pass a folder, .tar(.gz), .csv or IDX folder",
        )
    for fmt in FORMATS:
        if fmt.matches(path):
            return fmt
    raise YingsheError(
        f"cannot tell the format of {path}",
        "use a folder of class folders, a .tar/.tar.gz of one, a .csv manifest or an IDX folder",
    )


def _is_tar(path: Path) -> bool:
    return path.is_file() and tarfile.is_tarfile(path)


# Folders: a prepared folder (also an unfinished one, which read_prepared refuses with the fix),
# IDX files, CIFAR batches, WebDataset shards, and last any tree of class folders.
register_format("prepared", lambda p: p.is_dir() and ((p / MANIFEST).is_file() or is_unfinished(p)))(
    lambda p, o: read_prepared(p)
)
register_format("idx", lambda p: p.is_dir() and has_idx(p))(lambda p, o: read_idx(p, o.classes))
register_format("cifar-folder", lambda p: p.is_dir() and is_cifar_dir(p) is not None)(
    lambda p, o: read_cifar_dir(is_cifar_dir(p))
)
register_format("webdataset-folder", lambda p: p.is_dir() and is_webdataset_dir(p))(
    lambda p, o: read_webdataset(p)
)
register_format("folder", Path.is_dir)(read_folder)
# Files: a CSV manifest, a WebDataset shard, the CIFAR python archive, any tar of a class tree.
register_format("csv", lambda p: p.is_file() and p.suffix.lower() == ".csv")(read_csv)
register_format("json-manifest", lambda p: p.is_file() and p.suffix.lower() == ".json")(
    multilabel.read_json_manifest
)
register_format("webdataset-tar", lambda p: _is_tar(p) and is_webdataset_tar(p))(
    lambda p, o: read_webdataset(p)
)
register_format("cifar-tar", lambda p: _is_tar(p) and is_cifar_tar(p))(
    lambda p, o: cifar_from_files(tar_cifar_members(p), str(p))
)
register_format("tar", _is_tar)(read_tar)

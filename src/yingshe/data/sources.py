"""One reader per on-disk format, each returning a `SourceData`; `read_source` picks the reader.

Formats: an image folder tree, a .tar/.tar.gz of one, MNIST-family IDX files, CIFAR-10/100's
python pickles (folder or the original .tar.gz), a CSV manifest `path,label[,split]`, and the
built-in `digits` that ships inside scikit-learn. Two more live in their own modules and are
recognised here: prepared folders (data/shards.py) and WebDataset tar shards (data/webdataset.py).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from yingshe.data.images import is_image_name
from yingshe.data.shards import MANIFEST, PROGRESS, read_prepared
from yingshe.data.splits import BlobImages, FileImages, SourceData, Split
from yingshe.data.webdataset import is_webdataset_dir, is_webdataset_tar, read_webdataset
from yingshe.errors import YingsheError

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
            split, cls = SPLIT_ALIASES[p[0].lower()], p[1]
        else:
            if len(p) < 2:
                ignored += 1
                continue
            split, cls = "train", p[0]
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


def read_folder(root: Path) -> SourceData:
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
    return SourceData(f"folder {root}", classes, splits, notes=notes)


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
        return f"{self.archive}:{self.names[index]}"

    def subset(self, indices: np.ndarray) -> TarMemberImages:
        pick = [int(i) for i in indices]
        return TarMemberImages(
            self.archive,
            [self.names[i] for i in pick],
            [self.offsets[i] for i in pick],
            [self.sizes[i] for i in pick],
        )


def read_tar(path: Path) -> SourceData:
    """A tar of an image tree. Compressed archives are read in one sequential pass into memory
    (gzip cannot seek); plain tars are indexed and read by offset."""
    compressed = not _is_plain_tar(path)
    names, blobs, offsets, sizes = [], [], [], []
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            if not member.isfile() or not is_image_name(member.name):
                continue
            if Path(member.name).name.startswith("."):
                continue
            names.append(member.name)
            if compressed:
                blobs.append(archive.extractfile(member).read())
            else:
                offsets.append(member.offset_data)
                sizes.append(member.size)
    if not names:
        raise YingsheError(f"{path} holds no image files", "archive a <root>/<class>/<image> tree")
    layout, notes = layout_tree(names)

    def files_for(positions: list[int]):
        if compressed:
            return BlobImages([f"{path}:{names[i]}" for i in positions], [blobs[i] for i in positions])
        return TarMemberImages(
            str(path),
            [names[i] for i in positions],
            [offsets[i] for i in positions],
            [sizes[i] for i in positions],
        )

    classes, splits = splits_from_layout(layout, files_for)
    check_classes(classes, path)
    return SourceData(f"archive {path}", classes, splits, notes=notes)


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


def tar_cifar_members(path: Path) -> dict[str, bytes] | None:
    """The CIFAR batch files inside an archive, or None when it is not a CIFAR archive."""
    with tarfile.open(path, "r:*") as archive:
        first = archive.next()
        if first is None or "cifar-10" not in first.name:
            return None
        members = {}
        for member in [first, *archive]:
            base = Path(member.name).name
            if member.isfile() and base in CIFAR_MEMBERS:
                members[base] = archive.extractfile(member).read()
        return members


# --- CSV manifests and the built-in set -----------------------------------------------------------


def read_csv(path: Path) -> SourceData:
    """`path,label[,split]` rows; relative paths are relative to the CSV file's folder.

    A first row whose path is not an image file name is a header (any names). Excel's byte-order
    mark is tolerated. An unknown split value, or one file listed in two splits, is an error: either
    would silently train on images meant for testing.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
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
    entries: dict[str, list[tuple[str, str]]] = {}
    split_of: dict[str, str] = {}
    for n, row in rows:
        raw_split = row[2].strip().lower() if len(row) > 2 else ""
        if raw_split and raw_split not in SPLIT_ALIASES:
            raise YingsheError(
                f"{path} line {n}: unknown split {row[2]!r}",
                f"use one of {', '.join(sorted(SPLIT_ALIASES))} (or leave it empty for train)",
            )
        split = SPLIT_ALIASES.get(raw_split, "train")
        file = Path(row[0].strip())
        file = str(file if file.is_absolute() else path.parent / file)
        if split_of.setdefault(file, split) != split:
            raise YingsheError(
                f"{path} line {n}: {row[0]} is listed in both {split_of[file]} and {split}",
                "list each image in one split only, or test images leak into training",
            )
        entries.setdefault(split, []).append((file, row[1].strip()))
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
    return SourceData(f"CSV manifest {path}", classes, splits)


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


# --- picking the reader ---------------------------------------------------------------------------


def read_source(path: Path, classes: list[str] | None = None) -> SourceData:
    """Read a dataset at `path`, choosing the reader by what is there; notes where it came from."""
    data = _read_source(path, classes)
    if data.origin is None:
        data.origin = str(path.resolve())
    return data


def _read_source(path: Path, classes: list[str] | None) -> SourceData:
    if not path.exists():
        raise YingsheError(
            f"dataset path {path} does not exist",
            "pass a folder, .tar(.gz), .csv, IDX folder, or a name such as digits or cifar10",
        )
    if path.is_dir():
        if (path / MANIFEST).is_file() or (path / PROGRESS).is_file():
            return read_prepared(path)  # an unfinished prepare is refused, with the fix
        if has_idx(path):
            return read_idx(path, classes)
        cifar = is_cifar_dir(path)
        if cifar is not None:
            return read_cifar_dir(cifar)
        if is_webdataset_dir(path):
            return read_webdataset(path)
        return read_folder(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path)
    if tarfile.is_tarfile(path):
        if is_webdataset_tar(path):
            return read_webdataset(path)
        members = tar_cifar_members(path)
        if members:
            return cifar_from_files(members, str(path))
        return read_tar(path)
    raise YingsheError(
        f"cannot tell the format of {path}",
        "use a folder of class folders, a .tar/.tar.gz of one, a .csv manifest or an IDX folder",
    )
